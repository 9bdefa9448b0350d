"""asyncio client for the OpenClaw gateway, wire protocol v4.

One :class:`GatewayClient` owns one WebSocket. Two ways to use it:

* ``await client.connect()`` once, make calls, ``await client.close()`` (tasks, commands);
* ``await client.run()`` keeps the connection alive: it reconnects with full-jitter backoff,
  re-runs the ``on_connect`` hooks (e.g. ``sessions.subscribe``) after every reconnect and
  only returns when closed or on an error that retrying cannot fix (bad token, protocol
  mismatch). The gateway listener uses this.

Requests are correlated by id, so many can be in flight on one socket; events go to the
handlers registered with :meth:`GatewayClient.on`, in arrival order.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import itertools
import json
import logging
import platform
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from .device import DeviceIdentity
from .errors import (
    AuthError,
    ConnectionLostError,
    GatewayError,
    GatewayTimeout,
    MalformedFrameError,
    NotConnectedError,
    PairingRequiredError,
    ProtocolMismatchError,
    error_from_payload,
)
from .frames import PROTOCOL_VERSION, Event, HelloInfo, Response, parse_frame, request_frame

log = logging.getLogger("agentflow.gateway")

CLIENT_VERSION = "0.1.0"
READ, WRITE = "operator.read", "operator.write"
EventHandler = Callable[[Event], Any]
ConnectHook = Callable[["GatewayClient", HelloInfo], Awaitable[Any]]

# States, as shown to operators.
IDLE, CONNECTING, CONNECTED, RECONNECTING, AUTH_FAILED, INCOMPATIBLE, CLOSED = (
    "idle",
    "connecting",
    "connected",
    "reconnecting",
    "auth_failed",
    "incompatible",
    "closed",
)


@dataclass(frozen=True)
class Backoff:
    """Full-jitter exponential backoff: ``uniform(0, min(cap, base * 2**attempt))``.

    ``floor`` keeps a run of unlucky draws from turning into a hot loop.
    """

    base: float = 0.5
    cap: float = 30.0
    floor: float = 0.1

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(attempt, 30)))
        return max(self.floor, random.uniform(0, ceiling))


def is_loopback_url(url: str) -> bool:
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:  # e.g. "ws://[bad": not a URL, so not loopback
        return False
    if host == "localhost":
        return True
    try:  # an IP literal, not a name that merely starts with "127." (127.example.com)
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GatewayClient:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        device: DeviceIdentity | None = None,
        client_id: str = "gateway-client",
        client_mode: str = "backend",
        scopes: tuple[str, ...] = (READ, WRITE),
        request_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        max_attempts: int = 3,
        max_retry_wait: float = 30.0,
        backoff: Backoff | None = None,
        display_name: str = "AgentFlow",
        name: str | None = None,
        watchdog_factor: float = 2.0,
    ) -> None:
        self.url = url
        self._token = token
        self.device = device
        self.client_id = client_id
        self.client_mode = client_mode
        self.scopes = tuple(scopes)
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.max_attempts = max_attempts
        self.max_retry_wait = max_retry_wait
        self.backoff = backoff or Backoff()
        self.display_name = display_name
        self.name = name or url
        self.watchdog_factor = watchdog_factor

        self.state = IDLE
        self.hello: HelloInfo | None = None
        self.last_error: GatewayError | None = None
        self.stats = {"connects": 0, "reconnects": 0, "malformed_frames": 0, "events": 0}
        self.state_listeners: list[Callable[[GatewayClient], Any]] = []

        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._handlers: dict[str, list[EventHandler]] = {}
        self._connect_hooks: list[ConnectHook] = []
        self._connected = asyncio.Event()
        self._closing = False
        self._managed = False  # True while run() keeps the connection alive
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_rx = 0.0
        self._events: asyncio.Queue[Event | None] | None = None
        self._wake = asyncio.Event()

    # --- public surface -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def on(self, event: str, handler: EventHandler) -> Callable[[], None]:
        """Call ``handler(Event)`` for each ``event`` (``"*"``: every event). Returns an unsubscriber."""
        self._handlers.setdefault(event, []).append(handler)
        return lambda: self._handlers.get(event, []).remove(handler)

    def on_connect(self, hook: ConnectHook) -> None:
        """Run ``await hook(client, hello)`` after every successful (re)connect."""
        self._connect_hooks.append(hook)

    async def connect(self) -> HelloInfo:
        """Open the socket and complete the handshake once. Raises a typed :class:`GatewayError`."""
        self._closing = False
        self._set_state(CONNECTING if self.stats["connects"] == 0 else RECONNECTING)
        try:
            hello = await self._open()
        except GatewayError as exc:
            self._fail(exc)
            raise
        await self._run_connect_hooks(hello)
        return hello

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Stay connected until :meth:`close` (or ``stop`` is set).

        1. connect and handshake; on success reset the backoff and run the connect hooks;
        2. wait until the connection drops (reader ends, or the tick watchdog closes it);
        3. sleep a full-jitter backoff (or the gateway's ``retryAfterMs``) and go to 1.

        Auth and protocol errors end the loop by raising: retrying cannot fix them and a bad
        token retried in a loop only earns the gateway's failed-auth backoff.
        """
        self._managed = True
        self._closing = False
        attempt = 0
        stopper = asyncio.ensure_future(stop.wait()) if stop else None
        try:
            while not self._closing and not (stop and stop.is_set()):
                delay: float | None = None
                try:
                    self._set_state(CONNECTING if self.stats["connects"] == 0 else RECONNECTING)
                    hello = await self._open()
                    attempt = 0
                    await self._run_connect_hooks(hello)
                    await self._wait_disconnect(stopper)
                    if self._closing or (stop and stop.is_set()):
                        break
                    self.stats["reconnects"] += 1
                    self._fail(
                        self.last_error or ConnectionLostError("the connection to the gateway was lost")
                    )
                except (AuthError, ProtocolMismatchError) as exc:
                    if isinstance(exc, PairingRequiredError):
                        self._fail(exc)
                        delay = self.backoff.cap
                    else:
                        self._fail(exc)
                        raise
                except GatewayError as exc:
                    self._fail(exc)
                    if exc.retry_after_ms:
                        delay = min(exc.retry_after_ms / 1000, self.max_retry_wait)
                if self._closing or (stop and stop.is_set()):
                    break
                delay = delay if delay is not None else self.backoff.delay(attempt)
                attempt += 1
                self._set_state(RECONNECTING)
                await self._sleep(delay, stopper)
        finally:
            self._managed = False
            if stopper:
                stopper.cancel()
            await self.close()

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        ws = self._ws
        if ws is not None:
            await ws.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._fail_pending(ConnectionLostError("client closed"))
        self._connected.clear()
        self._ws = None
        if self.state not in (AUTH_FAILED, INCOMPATIBLE):
            self._set_state(CLOSED)

    async def wait_connected(self, timeout: float | None = None) -> HelloInfo:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            raise NotConnectedError(
                f"not connected after {timeout:.1f} s" + (f" ({self.last_error})" if self.last_error else "")
            ) from None
        assert self.hello is not None
        return self.hello

    async def call(
        self,
        method: str,
        params: Any = None,
        *,
        timeout: float | None = None,
        attempts: int | None = None,
        traceparent: str | None = None,
    ) -> Any:
        """Send one request and return its payload; retry retryable errors (3 attempts by default).
        ``traceparent``: the W3C trace context of the caller's span, sent on the frame."""
        attempts = attempts or self.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                return await self._call_once(method, params, timeout, traceparent)
            except GatewayError as exc:
                if not exc.retryable or attempt >= attempts:
                    raise
                wait = exc.retry_after_ms / 1000 if exc.retry_after_ms else self.backoff.delay(attempt - 1)
                if wait > self.max_retry_wait:
                    raise
                log.info(
                    "gateway %s: %s failed (%s); retry %d in %.2fs",
                    self.name,
                    method,
                    exc.log_code,
                    attempt,
                    wait,
                )
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    # --- wrapped methods ------------------------------------------------------------------

    async def health(self, **kw: Any) -> dict[str, Any]:
        return await self.call("health", {}, **kw)

    async def status(self, **kw: Any) -> dict[str, Any]:
        return await self.call("status", {}, **kw)

    async def agents_list(self, **kw: Any) -> dict[str, Any]:
        return await self.call("agents.list", {}, **kw)

    async def sessions_list(
        self, *, page_size: int = 200, max_pages: int = 1000, **filters: Any
    ) -> list[dict]:
        """Every session row, following ``nextOffset`` across pages."""
        rows: list[dict] = []
        offset: int | None = None
        for _ in range(max_pages):
            params = {**filters, "limit": page_size}
            if offset:
                params["offset"] = offset
            page = await self.call("sessions.list", params)
            if not isinstance(page, dict):
                raise MalformedFrameError(
                    "sessions.list returned a non-object payload", method="sessions.list"
                )
            batch = page.get("sessions") or []
            rows.extend(row for row in batch if isinstance(row, dict))
            next_offset = page.get("nextOffset")
            if not page.get("hasMore") or not isinstance(next_offset, int) or not batch:
                return rows
            offset = next_offset
        return rows

    async def sessions_subscribe(self, **params: Any) -> dict[str, Any]:
        return await self.call("sessions.subscribe", params)

    async def config_get(self, **kw: Any) -> dict[str, Any]:
        return await self.call("config.get", {}, **kw)

    async def config_patch(
        self, patch: dict[str, Any] | str, base_hash: str, *, note: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        """Merge-patch the config; ``base_hash`` is ``config.get``'s ``hash`` (optimistic concurrency)."""
        raw = patch if isinstance(patch, str) else json.dumps(patch)
        params: dict[str, Any] = {"raw": raw, "baseHash": base_hash}
        if note:
            params["note"] = note
        return await self.call("config.patch", params, **kw)

    async def chat_history(
        self, session_key: str, *, limit: int | None = None, **params: Any
    ) -> dict[str, Any]:
        body = {"sessionKey": session_key, **params}
        if limit is not None:
            body["limit"] = limit
        return await self.call("chat.history", body)

    async def chat_send(
        self,
        session_key: str,
        message: str,
        *,
        idempotency_key: str | None = None,
        traceparent: str | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """Start a run. The idempotency key makes a retried send return the same run, not a second one."""
        body = {
            "sessionKey": session_key,
            "message": message,
            "idempotencyKey": idempotency_key or str(uuid.uuid4()),
            **params,
        }
        return await self.call("chat.send", body, traceparent=traceparent)

    async def chat_abort(self, session_key: str, *, run_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"sessionKey": session_key}
        if run_id:
            body["runId"] = run_id
        return await self.call("chat.abort", body)

    # --- internals ------------------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        for listener in list(self.state_listeners):
            try:
                listener(self)
            except Exception:
                log.exception("gateway %s: state listener failed", self.name)

    def _fail(self, exc: GatewayError) -> None:
        self.last_error = exc
        log.warning("gateway %s: %s [code=%s]", self.name, exc.message, exc.log_code)
        if isinstance(exc, AuthError) and not isinstance(exc, PairingRequiredError):
            self._set_state(AUTH_FAILED)
        elif isinstance(exc, ProtocolMismatchError):
            self._set_state(INCOMPATIBLE)
        else:
            self._set_state(RECONNECTING if self._managed else CLOSED)

    def _connect_params(self, nonce: str, ts: int) -> dict[str, Any]:
        client = {
            "id": self.client_id,
            "version": CLIENT_VERSION,
            "platform": platform.system().lower() or "linux",
            "mode": self.client_mode,
            "displayName": self.display_name,
        }
        params: dict[str, Any] = {
            "minProtocol": PROTOCOL_VERSION,
            "maxProtocol": PROTOCOL_VERSION,
            "client": client,
            "role": "operator",
            "scopes": list(self.scopes),
            "caps": [],
            "userAgent": f"agentflow/{CLIENT_VERSION}",
        }
        auth: dict[str, str] = {}
        if self._token:
            auth["token"] = self._token
        elif self.device and self.device.device_token:
            auth["deviceToken"] = self.device.device_token
        if auth:
            params["auth"] = auth
        if self.device is not None:
            params["device"] = self.device.proof(
                nonce=nonce,
                signed_at=ts,
                client_id=self.client_id,
                client_mode=self.client_mode,
                role="operator",
                scopes=self.scopes,
                token=auth.get("token") or auth.get("deviceToken") or "",
                platform=client["platform"],
            )
        return params

    async def _open(self) -> HelloInfo:
        """Open the socket, answer the challenge, check hello-ok, start the reader and watchdog."""
        try:
            ws = await asyncio.wait_for(
                websockets.connect(
                    self.url,
                    open_timeout=self.connect_timeout,
                    max_size=26214400,
                    compression=None,
                    ping_interval=20,
                    ping_timeout=25,
                    close_timeout=2,
                    user_agent_header=f"agentflow/{CLIENT_VERSION}",
                ),
                self.connect_timeout + 1,
            )
        except (InvalidURI, ValueError) as exc:  # ValueError: bad port or IPv6 literal, from urllib
            raise ConnectionLostError(f"invalid gateway URL {self.url!r}: {exc}") from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise ConnectionLostError(_describe_connect_error(self.url, exc)) from None
        try:
            hello = await asyncio.wait_for(self._handshake(ws), self.connect_timeout)
        except TimeoutError:
            await ws.close()
            raise GatewayTimeout(f"handshake did not finish in {self.connect_timeout:.0f} s") from None
        except ConnectionClosed as exc:
            raise ConnectionLostError(
                f"the gateway closed the connection during the handshake ({exc})"
            ) from None
        except BaseException:
            await ws.close()
            raise

        self._ws = ws
        self.hello = hello
        self.last_error = None
        self.stats["connects"] += 1
        self._last_rx = time.monotonic()
        self._events = asyncio.Queue()
        self._spawn(self._reader(ws))
        self._spawn(self._dispatcher(self._events))
        self._spawn(self._watchdog(ws, hello.policy.tick_interval_ms / 1000))
        self._connected.set()
        self._set_state(CONNECTED)
        log.info(
            "gateway %s: connected (server %s, protocol %s, scopes %s)",
            self.name,
            hello.server_version,
            hello.protocol,
            ",".join(hello.scopes),
        )
        return hello

    async def _handshake(self, ws: ClientConnection) -> HelloInfo:
        nonce, ts = await self._await_challenge(ws)
        connect_id = f"connect-{uuid.uuid4().hex[:8]}"
        await ws.send(request_frame(connect_id, "connect", self._connect_params(nonce, ts)))
        while True:
            frame = self._parse(await ws.recv())
            if isinstance(frame, Response) and frame.id == connect_id:
                break
        if not frame.ok:
            await ws.close()
            raise error_from_payload(frame.error, method="connect")
        hello = HelloInfo.from_payload(frame.payload)
        if hello.protocol != PROTOCOL_VERSION:
            await ws.close()
            raise ProtocolMismatchError(
                f"gateway negotiated protocol {hello.protocol}", details={"expectedProtocol": hello.protocol}
            )
        if self.device is not None:
            self.device.remember_device_token(hello.device_token)
        return hello

    async def _await_challenge(self, ws: ClientConnection) -> tuple[str, int]:
        while True:
            frame = self._parse(await ws.recv())
            if isinstance(frame, Event) and frame.event == "connect.challenge":
                payload = frame.payload if isinstance(frame.payload, dict) else {}
                nonce = payload.get("nonce")
                ts = payload.get("ts")
                if not isinstance(nonce, str):
                    raise MalformedFrameError("connect.challenge without a nonce")
                return nonce, ts if isinstance(ts, int) else int(time.time() * 1000)
            if isinstance(frame, Response) and not frame.ok:
                raise error_from_payload(frame.error, method="connect")

    def _parse(self, raw: str | bytes) -> Response | Event | None:
        try:
            return parse_frame(raw)
        except MalformedFrameError as exc:
            self.stats["malformed_frames"] += 1
            log.warning(
                "gateway %s: ignored a frame: %s [code=%s] %.120r", self.name, exc.message, exc.log_code, raw
            )
            return None

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reader(self, ws: ClientConnection) -> None:
        reason = "connection closed"
        try:
            async for raw in ws:
                self._last_rx = time.monotonic()
                frame = self._parse(raw)
                if isinstance(frame, Response):
                    future = self._pending.get(frame.id)
                    if future is not None and not future.done():
                        future.set_result(frame)
                elif isinstance(frame, Event):
                    self.stats["events"] += 1
                    if self._events is not None:
                        self._events.put_nowait(frame)
        except ConnectionClosed as exc:
            reason = f"connection closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
        except Exception as exc:  # never let a bad frame kill the process
            log.exception("gateway %s: reader failed", self.name)
            reason = f"reader failed: {exc}"
        finally:
            if self._ws is ws:
                self._connected.clear()
                self._ws = None
                if self.last_error is None and not self._closing:
                    self.last_error = ConnectionLostError(f"the connection to the gateway was lost: {reason}")
                if not self._managed and not self._closing:
                    self._set_state(CLOSED)  # nothing reconnects a connect()-once client
                self._fail_pending(ConnectionLostError(reason))
                if self._events is not None:
                    self._events.put_nowait(None)
                self._wake.set()
            await ws.close()

    async def _dispatcher(self, queue: asyncio.Queue[Event | None]) -> None:
        while (event := await queue.get()) is not None:
            for handler in [*self._handlers.get(event.event, ()), *self._handlers.get("*", ())]:
                try:
                    result = handler(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("gateway %s: handler for %s failed", self.name, event.event)

    async def _watchdog(self, ws: ClientConnection, tick_interval: float) -> None:
        """Close the socket when nothing (not even a tick) arrived for 2 x tickIntervalMs."""
        limit = tick_interval * self.watchdog_factor
        while True:
            await asyncio.sleep(max(0.05, tick_interval / 4))
            silent = time.monotonic() - self._last_rx
            if silent > limit:
                log.warning("gateway %s: no frame for %.1fs (tick watchdog); reconnecting", self.name, silent)
                self.last_error = ConnectionLostError(f"no frame from the gateway for {silent:.0f} s")
                await ws.close(code=4000, reason="tick timeout")
                return

    async def _run_connect_hooks(self, hello: HelloInfo) -> None:
        for hook in self._connect_hooks:
            try:
                await hook(self, hello)
            except GatewayError as exc:
                log.warning("gateway %s: connect hook failed: %s", self.name, exc)

    async def _wait_disconnect(self, stopper: asyncio.Future[Any] | None) -> None:
        while self._connected.is_set() and not self._closing:
            self._wake.clear()
            waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._wake.wait())]
            if stopper:
                waiters.append(stopper)
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            waiters[0].cancel()
            if stopper and stopper.done():
                return

    async def _sleep(self, delay: float, stopper: asyncio.Future[Any] | None) -> None:
        self._wake.clear()
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._wake.wait())]
        if stopper:
            waiters.append(stopper)
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        waiters[0].cancel()

    def _fail_pending(self, exc: GatewayError) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                # One instance per call: _call_once labels it with the call's method.
                future.set_exception(type(exc)(exc.message, code=exc.code, details=exc.details))

    async def _call_once(
        self, method: str, params: Any, timeout: float | None, traceparent: str | None = None
    ) -> Any:
        timeout = timeout or self.request_timeout
        deadline = time.monotonic() + timeout
        if not self._connected.is_set():
            if not self._managed or self._closing:
                raise NotConnectedError("not connected to the gateway", method=method)
            await self.wait_connected(timeout)
        ws = self._ws
        if ws is None:
            raise NotConnectedError("not connected to the gateway", method=method)
        frame_id = str(next(self._ids))
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[frame_id] = future
        try:
            try:
                await ws.send(request_frame(frame_id, method, params, traceparent))
            except ConnectionClosed:
                raise ConnectionLostError("connection closed while sending", method=method) from None
            try:
                response = await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise GatewayTimeout(f"{method} took longer than {timeout:.1f} s", method=method) from None
        except ConnectionLostError as exc:
            exc.method = method
            raise
        finally:
            self._pending.pop(frame_id, None)
        if not response.ok:
            raise error_from_payload(response.error, method=method)
        return response.payload


def _describe_connect_error(url: str, exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused at {url} (is the gateway running?)"
    if isinstance(exc, TimeoutError):
        return f"no answer from {url} (timed out)"
    if isinstance(exc, InvalidHandshake):
        return f"{url} did not accept a WebSocket connection ({exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot connect to {url}: {exc.strerror}"
    return f"cannot connect to {url}: {exc}"
