"""GatewayClient against a small fake gateway that replays frames captured from a real one.

The fake is a real WebSocket server on loopback (``websockets.asyncio.server``): the client's
own logic (handshake, correlation, retries, watchdog, reconnects) runs unmodified.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from openclaw import (
    AuthError,
    Backoff,
    ConnectionLostError,
    DeviceIdentity,
    GatewayClient,
    GatewayTimeout,
    InvalidRequestError,
    MalformedFrameError,
    NotConnectedError,
    PairingRequiredError,
    ProtocolMismatchError,
    SyncGatewayClient,
    UnavailableError,
    assess,
    is_loopback_url,
)
from openclaw.client import READ, WRITE
from openclaw.device import proof_payload, verify
from tests.support.frames import load_frame
from tests.support.ports import closed_port

TOKEN = "s3cret-fake-gateway-token"
CHALLENGE = load_frame("01-connect.challenge.event.json")
FAST = Backoff(base=0.01, cap=0.02, floor=0.01)

Responder = Callable[["FakeGateway", ServerConnection, dict], Awaitable[None]]


# --- the fake gateway -----------------------------------------------------------------------------


def hello_payload(*, tick_ms: int | None = None, scopes=None, drop_methods=(), protocol=None) -> dict:
    """The captured hello-ok payload, optionally patched."""
    payload = copy.deepcopy(load_frame("03-connect.hello-ok.response.json")["payload"])
    if tick_ms is not None:
        payload["policy"]["tickIntervalMs"] = tick_ms
    if scopes is not None:
        payload["auth"]["scopes"] = list(scopes)
    if drop_methods:
        payload["features"]["methods"] = [m for m in payload["features"]["methods"] if m not in drop_methods]
    if protocol is not None:
        payload["protocol"] = protocol
    return payload


def captured_error(name: str) -> dict:
    return load_frame(name)["response"]["error"]


def ok(frame_id: str, payload: Any) -> str:
    return json.dumps({"type": "res", "id": frame_id, "ok": True, "payload": payload})


def fail(frame_id: str, error: dict) -> str:
    return json.dumps({"type": "res", "id": frame_id, "ok": False, "error": error})


async def echo(gw: FakeGateway, ws: ServerConnection, req: dict) -> None:
    """Default responder: ``gw.results[method]`` if set, else the params back."""
    result = gw.results.get(req["method"], req.get("params"))
    await ws.send(ok(req["id"], result(req.get("params")) if callable(result) else result))


class FakeGateway:
    """Challenge, connect, hello-ok (or a captured error), then answers requests with ``respond``."""

    def __init__(
        self,
        *,
        hello: dict | None = None,
        connect_error: dict | None = None,
        respond: Responder = echo,
        drop_after_challenge: bool = False,
        answer_connect: bool = True,
        before_challenge: Callable[[int], dict | None] | None = None,
    ) -> None:
        self.hello = hello if hello is not None else hello_payload()
        self.connect_error = connect_error
        self.respond = respond
        self.drop_after_challenge = drop_after_challenge
        self.answer_connect = answer_connect
        self.before_challenge = before_challenge  # connection number -> error to send instead
        self.results: dict[str, Any] = {}
        self.connections = 0
        self.connected_at: list[float] = []
        self.connect_frames: list[dict] = []
        self.requests: list[dict] = []
        self.per_connection: list[list[dict]] = []
        self.close_codes: list[int | None] = []
        self.state: dict[str, Any] = {}  # scratch space for responders

    @property
    def connect_params(self) -> dict:
        return self.connect_frames[-1]["params"]

    def methods(self) -> list[str]:
        return [req["method"] for req in self.requests]

    async def __aenter__(self) -> FakeGateway:
        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None, ping_interval=None)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        self.connected_at.append(time.monotonic())
        mine: list[dict] = []
        self.per_connection.append(mine)
        try:
            early = self.before_challenge(self.connections) if self.before_challenge else None
            if early is not None:
                await ws.send(fail("startup", early))
                await ws.close(1013)
                return
            await ws.send(json.dumps(CHALLENGE))
            if self.drop_after_challenge:
                return
            connect = json.loads(await ws.recv())
            self.connect_frames.append(connect)
            if not self.answer_connect:
                await ws.wait_closed()
                return
            if self.connect_error is not None:
                await ws.send(fail(connect["id"], self.connect_error))
                return
            await ws.send(ok(connect["id"], self.hello))
            async for raw in ws:
                req = json.loads(raw)
                self.requests.append(req)
                mine.append(req)
                await self.respond(self, ws, req)
        except ConnectionClosed:
            pass
        finally:
            self.close_codes.append(ws.close_code)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def stop_run(client: GatewayClient, task: asyncio.Task, stop: asyncio.Event | None = None) -> None:
    if stop is not None:
        stop.set()
    else:
        await client.close()
    await asyncio.wait_for(task, 5)


@pytest.fixture
async def client_factory():
    """GatewayClients closed at the end of the test, whatever happens."""
    made: list[GatewayClient] = []

    def make(url: str, token: str | None = TOKEN, **options: Any) -> GatewayClient:
        options.setdefault("backoff", FAST)
        options.setdefault("request_timeout", 3.0)
        options.setdefault("connect_timeout", 3.0)
        client = GatewayClient(url, token, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


# --- handshake ------------------------------------------------------------------------------------


async def test_it_completes_the_handshake_with_the_captured_frames(client_factory):
    states: list[str] = []
    async with FakeGateway() as gw:
        client = client_factory(gw.url)
        client.state_listeners.append(lambda c: states.append(c.state))
        hello = await client.connect()
        try:
            assert hello.protocol == 4
            assert hello.server_version == "2026.9.6"
            assert client.connected
            assert client.state == "connected"
            assert client.hello is hello
            assert client.stats["connects"] == 1
        finally:
            await client.close()
        assert not client.connected
        assert client.state == "closed"
        assert states == ["connecting", "connected", "closed"]

    frame = gw.connect_frames[0]
    assert frame["type"] == "req"
    assert frame["method"] == "connect"
    assert frame["id"].startswith("connect-")
    params = frame["params"]
    assert params["minProtocol"] == params["maxProtocol"] == 4
    assert params["client"]["id"] == "gateway-client"
    assert params["client"]["mode"] == "backend"
    assert params["client"]["platform"] == params["client"]["platform"].lower()
    assert params["role"] == "operator"
    assert params["scopes"] == [READ, WRITE] == ["operator.read", "operator.write"]
    assert params["auth"] == {"token": TOKEN}
    assert params["caps"] == []
    assert "device" not in params  # loopback, and no device given


async def test_it_sends_no_auth_at_all_without_a_token(client_factory):
    async with FakeGateway() as gw:
        client = client_factory(gw.url, None)
        await client.connect()
        await client.close()
    assert "auth" not in gw.connect_params


async def test_it_proves_a_given_device_over_the_challenge(client_factory):
    device = DeviceIdentity.generate()
    async with FakeGateway() as gw:
        client = client_factory(gw.url, device=device)
        await client.connect()
        await client.close()
    params = gw.connect_params
    proof = params["device"]
    assert proof["id"] == device.device_id
    assert proof["nonce"] == CHALLENGE["payload"]["nonce"]
    assert proof["signedAt"] == CHALLENGE["payload"]["ts"]
    payload = proof_payload(
        device_id=device.device_id,
        client_id="gateway-client",
        client_mode="backend",
        role="operator",
        scopes=params["scopes"],
        signed_at=CHALLENGE["payload"]["ts"],
        token=TOKEN,
        nonce=CHALLENGE["payload"]["nonce"],
        platform=params["client"]["platform"],
    )
    assert verify(proof["publicKey"], payload, proof["signature"])


async def test_it_signs_with_the_device_token_when_it_has_no_shared_token(client_factory):
    device = DeviceIdentity.generate()
    device.device_token = "paired-device-token"
    async with FakeGateway() as gw:
        client = client_factory(gw.url, None, device=device)
        await client.connect()
        await client.close()
    params = gw.connect_params
    assert params["auth"] == {"deviceToken": "paired-device-token"}
    payload = proof_payload(
        device_id=device.device_id,
        client_id="gateway-client",
        client_mode="backend",
        role="operator",
        scopes=params["scopes"],
        signed_at=CHALLENGE["payload"]["ts"],
        token="paired-device-token",
        nonce=CHALLENGE["payload"]["nonce"],
        platform=params["client"]["platform"],
    )
    assert verify(params["device"]["publicKey"], payload, params["device"]["signature"])


async def test_it_remembers_the_device_token_the_gateway_issues(client_factory, tmp_path):
    device = DeviceIdentity.load_or_create(tmp_path / "gw.json")
    async with FakeGateway() as gw:
        client = client_factory(gw.url, device=device)
        await client.connect()
        await client.close()
    assert device.device_token == "<device-token>"
    assert DeviceIdentity.load_or_create(tmp_path / "gw.json").device_token == "<device-token>"


async def test_it_judges_a_read_only_grant_read_only(client_factory):
    granted = load_frame("71-connect.readonly-scopes.json")["auth"]["scopes"]
    async with FakeGateway(hello=hello_payload(scopes=granted)) as gw:
        client = client_factory(gw.url)
        hello = await client.connect()
        await client.close()
    assert hello.scopes == ("operator.read",)
    compat = assess(hello)
    assert compat.mode == "read_only"
    assert not compat.can_write
    assert not compat.can_edit_config
    assert "operator.write" in compat.summary


async def test_it_judges_a_gateway_without_a_read_method_degraded(client_factory):
    async with FakeGateway(hello=hello_payload(drop_methods=("sessions.list",))) as gw:
        client = client_factory(gw.url)
        hello = await client.connect()
        await client.close()
    compat = assess(hello)
    assert compat.mode == "degraded"
    assert "sessions.list" in compat.summary


async def test_it_judges_the_no_device_loopback_grant_fully_usable(client_factory):
    granted = load_frame("70-connect.no-device-cli-loopback.json")["auth"]["scopes"]
    async with FakeGateway(hello=hello_payload(scopes=granted)) as gw:
        client = client_factory(gw.url)
        compat = assess(await client.connect())
        await client.close()
    assert compat.mode == "ok"
    assert compat.can_edit_config


async def test_it_rejects_a_hello_that_is_not_hello_ok(client_factory):
    async with FakeGateway(hello={"type": "hello-maybe"}) as gw:
        client = client_factory(gw.url)
        with pytest.raises(MalformedFrameError):
            await client.connect()
    assert not client.connected


async def test_it_times_out_a_handshake_the_gateway_never_answers(client_factory):
    async with FakeGateway(answer_connect=False) as gw:
        client = client_factory(gw.url, connect_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(GatewayTimeout) as info:
            await client.connect()
        assert time.monotonic() - started < 2
        await wait_until(lambda: len(gw.close_codes) == 1)  # the client hung up
    assert "handshake" in info.value.message
    assert client.state == "closed"
    assert not client.connected


# --- connect errors -------------------------------------------------------------------------------


async def test_it_fails_a_bad_token_with_an_auth_error_and_never_leaks_the_token(client_factory, caplog):
    async with FakeGateway(connect_error=captured_error("62-error.connect-bad-token.json")) as gw:
        client = client_factory(gw.url)
        with pytest.raises(AuthError) as info:
            await client.connect()
    err = info.value
    assert err.detail_code == "AUTH_TOKEN_MISMATCH"
    assert err.method == "connect"
    assert client.state == "auth_failed"
    assert client.last_error is err
    assert not client.connected
    assert TOKEN not in err.operator_message
    assert TOKEN not in str(err)
    assert TOKEN not in caplog.text
    assert "AUTH_TOKEN_MISMATCH" in caplog.text


async def test_it_stops_running_on_a_bad_token_without_reconnecting(client_factory):
    async with FakeGateway(connect_error=captured_error("62-error.connect-bad-token.json")) as gw:
        client = client_factory(gw.url)
        with pytest.raises(AuthError):
            await asyncio.wait_for(client.run(), 5)
        await asyncio.sleep(0.1)  # a reconnect, if any, would land here
        assert gw.connections == 1
    assert client.state == "auth_failed"


async def test_it_fails_a_missing_token_with_an_auth_error(client_factory):
    async with FakeGateway(connect_error=captured_error("63-error.connect-no-auth.json")) as gw:
        client = client_factory(gw.url, None)
        with pytest.raises(AuthError) as info:
            await client.connect()
    assert info.value.detail_code == "AUTH_TOKEN_MISSING"
    assert "auth" not in gw.connect_params
    assert client.state == "auth_failed"


async def test_it_marks_a_protocol_mismatch_incompatible(client_factory):
    async with FakeGateway(connect_error=captured_error("64-error.connect-protocol-mismatch.json")) as gw:
        client = client_factory(gw.url)
        with pytest.raises(ProtocolMismatchError) as info:
            await client.connect()
        assert client.state == "incompatible"
        assert info.value.details["expectedProtocol"] == 4

        runner = client_factory(gw.url)
        with pytest.raises(ProtocolMismatchError):
            await asyncio.wait_for(runner.run(), 5)
        await asyncio.sleep(0.1)
        assert gw.connections == 2  # one each: run() gave up at once
    assert runner.state == "incompatible"


async def test_it_refuses_a_hello_that_negotiated_another_protocol(client_factory):
    async with FakeGateway(hello=hello_payload(protocol=5)) as gw:
        client = client_factory(gw.url)
        with pytest.raises(ProtocolMismatchError) as info:
            await client.connect()
    assert info.value.details["expectedProtocol"] == 5
    assert client.state == "incompatible"
    assert not client.connected


async def test_it_keeps_retrying_slowly_while_pairing_is_pending(client_factory):
    pairing = {
        "code": "INVALID_REQUEST",
        "message": "pairing required",
        "details": {"code": "PAIRING_REQUIRED"},
    }
    async with FakeGateway(connect_error=pairing) as gw:
        client = client_factory(gw.url, backoff=Backoff(base=0.01, cap=0.2, floor=0.01))
        states: list[str] = []
        client.state_listeners.append(lambda c: states.append(c.state))
        task = asyncio.create_task(client.run())
        await asyncio.sleep(0.5)
        assert not task.done()  # pairing is waited for, not fatal
        assert 2 <= gw.connections <= 4  # waits backoff.cap between attempts
        assert isinstance(client.last_error, PairingRequiredError)
        assert "auth_failed" not in states
        assert set(states) == {"connecting", "reconnecting"}
        await stop_run(client, task)
    assert client.state == "closed"


async def test_it_reports_a_refused_connection(client_factory):
    client = client_factory(f"ws://127.0.0.1:{closed_port()}/")
    with pytest.raises(ConnectionLostError) as info:
        await client.connect()
    assert "refused" in info.value.message
    assert "refused" in info.value.operator_message
    assert info.value.retryable
    assert client.state == "closed"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1/",
        "not a url",
        "",
        "ws://",
        "ws://[bad",
        "ws://127.0.0.1:99999/",
        "ws://127.0.0.1:port/",
    ],
)
async def test_it_reports_an_invalid_url_as_a_connection_error(client_factory, url):
    client = client_factory(url)
    with pytest.raises(ConnectionLostError) as info:
        await client.connect()
    assert "invalid gateway URL" in info.value.message
    assert client.state == "closed"


# --- requests -------------------------------------------------------------------------------------


async def test_it_correlates_responses_that_arrive_out_of_order(client_factory):
    async def reverse_in_threes(gw, ws, req):
        held = gw.state.setdefault("held", [])
        held.append(req)
        if len(held) == 3:
            for item in reversed(held):
                await ws.send(ok(item["id"], {"echo": item["params"]["n"]}))
            held.clear()

    async with FakeGateway(respond=reverse_in_threes) as gw:
        client = client_factory(gw.url)
        await client.connect()
        try:
            results = await asyncio.gather(*(client.call("echo", {"n": n}) for n in range(3)))
        finally:
            await client.close()
    assert results == [{"echo": 0}, {"echo": 1}, {"echo": 2}]
    assert len({req["id"] for req in gw.requests}) == 3


async def test_it_keeps_200_requests_in_flight_on_one_socket(client_factory):
    async def shuffle_all(gw, ws, req):
        held = gw.state.setdefault("held", [])
        held.append(req)
        if len(held) == 200:
            random.Random(4).shuffle(held)
            for item in held:
                await ws.send(ok(item["id"], {"n": item["params"]["n"]}))

    async with FakeGateway(respond=shuffle_all) as gw:
        client = client_factory(gw.url)
        await client.connect()
        try:
            results = await asyncio.gather(*(client.call("echo", {"n": n}) for n in range(200)))
            assert client._pending == {}
        finally:
            await client.close()
    assert [r["n"] for r in results] == list(range(200))
    assert gw.connections == 1
    assert len({req["id"] for req in gw.requests}) == 200


async def test_it_times_out_one_call_and_empties_the_pending_map(client_factory):
    async def late(gw, ws, req):
        if req["method"] == "slow":
            gw.state["slow_id"] = req["id"]
            return  # answered late, below
        if "slow_id" in gw.state:
            await ws.send(ok(gw.state.pop("slow_id"), {"late": True}))  # stale: must be ignored
        await ws.send(ok(req["id"], {"fine": True}))

    async with FakeGateway(respond=late) as gw:
        client = client_factory(gw.url)
        await client.connect()
        try:
            started = time.monotonic()
            with pytest.raises(GatewayTimeout) as info:
                await client.call("slow", {}, timeout=0.2)
            assert 0.15 < time.monotonic() - started < 1.5
            assert info.value.method == "slow"
            assert info.value.retryable is False
            assert client._pending == {}
            assert await client.call("health", {}) == {"fine": True}
            assert client._pending == {}
            assert client.connected
        finally:
            await client.close()
    assert gw.methods() == ["slow", "health"]  # a timeout is not retried


async def test_it_retries_unavailable_after_retry_after_ms_then_gives_up(client_factory):
    busy = {"code": "UNAVAILABLE", "message": "busy", "retryable": True, "retryAfterMs": 30}

    async def always_busy(gw, ws, req):
        await ws.send(fail(req["id"], busy))

    async with FakeGateway(respond=always_busy) as gw:
        client = client_factory(gw.url, backoff=Backoff(base=5, cap=5, floor=5))  # retryAfterMs wins
        await client.connect()
        try:
            started = time.monotonic()
            with pytest.raises(UnavailableError) as info:
                await client.call("health", {})
            elapsed = time.monotonic() - started
        finally:
            await client.close()
    assert gw.methods() == ["health"] * 3
    assert len({req["id"] for req in gw.requests}) == 3  # each attempt is a new request
    assert 0.06 <= elapsed < 2
    assert info.value.retry_after_ms == 30


async def test_it_returns_the_result_when_a_retry_succeeds(client_factory):
    starting = {
        "code": "UNAVAILABLE",
        "message": "gateway is starting",
        "retryable": True,
        "retryAfterMs": 10,
        "details": {"reason": "startup-sidecars"},
    }

    async def busy_twice(gw, ws, req):
        gw.state["n"] = gw.state.get("n", 0) + 1
        if gw.state["n"] <= 2:
            await ws.send(fail(req["id"], starting))
        else:
            await ws.send(ok(req["id"], {"ok": True}))

    async with FakeGateway(respond=busy_twice) as gw:
        client = client_factory(gw.url)
        await client.connect()
        try:
            assert await client.health() == {"ok": True}
        finally:
            await client.close()
    assert len(gw.requests) == 3


async def test_it_does_not_retry_longer_than_max_retry_wait(client_factory):
    rate_limited = {"code": "UNAVAILABLE", "message": "rate limit exceeded", "retryAfterMs": 35000}

    async def limited(gw, ws, req):
        await ws.send(fail(req["id"], rate_limited))

    async with FakeGateway(respond=limited) as gw:
        client = client_factory(gw.url, max_retry_wait=1.0)
        await client.connect()
        try:
            with pytest.raises(UnavailableError):
                await asyncio.wait_for(client.call("config.patch", {}), 2)
        finally:
            await client.close()
    assert len(gw.requests) == 1


async def test_it_does_not_retry_an_invalid_request(client_factory):
    async def unknown_method(gw, ws, req):
        await ws.send(fail(req["id"], captured_error("60-error.unknown-method.json")))

    async with FakeGateway(respond=unknown_method) as gw:
        client = client_factory(gw.url)
        await client.connect()
        try:
            with pytest.raises(InvalidRequestError) as info:
                await client.call("no.such.method")
        finally:
            await client.close()
    assert len(gw.requests) == 1
    assert info.value.method == "no.such.method"
    assert info.value.message == "unknown method: no.such.method"


async def test_it_ignores_malformed_and_unknown_frames_and_keeps_working(client_factory, caplog):
    junk: list[str | bytes] = [
        "this is not json",
        "[1, 2, 3]",
        '{"type":"mystery","id":"1"}',
        '{"type":"res","ok":true}',
        '{"type":"event","payload":{}}',
        b"\x80\x81 binary garbage",
    ]

    async def noisy(gw, ws, req):
        for frame in junk:
            await ws.send(frame)
        await ws.send(ok("no-such-request", {"stray": True}))  # well-formed but unknown id
        await ws.send(ok(req["id"], {"n": req["params"]["n"]}))

    async with FakeGateway(respond=noisy) as gw:
        client = client_factory(gw.url)
        await client.connect()
        try:
            assert await client.call("echo", {"n": 1}) == {"n": 1}
            assert await client.call("echo", {"n": 2}) == {"n": 2}
            assert client.connected
        finally:
            await client.close()
    assert client.stats["malformed_frames"] == 2 * len(junk)
    assert "ignored a frame" in caplog.text
    assert gw.connections == 1


async def test_it_fails_every_in_flight_call_when_the_socket_drops_each_with_its_method(client_factory):
    async def drop_on_third(gw, ws, req):
        if len(gw.requests) == 3:
            await ws.close()

    async with FakeGateway(respond=drop_on_third) as gw:
        client = client_factory(gw.url, max_attempts=1)
        await client.connect()
        try:
            results = await asyncio.gather(
                client.call("a", {}), client.call("b", {}), client.call("c", {}), return_exceptions=True
            )
        finally:
            await client.close()
    assert all(isinstance(r, ConnectionLostError) for r in results)
    assert [r.method for r in results] == ["a", "b", "c"]
    assert client._pending == {}


async def test_it_reports_a_dropped_connection_in_its_state(client_factory):
    async def drop(gw, ws, req):
        await ws.close()

    async with FakeGateway(respond=drop) as gw:
        client = client_factory(gw.url, max_attempts=1)
        await client.connect()
        with pytest.raises(ConnectionLostError):
            await client.call("health", {})
        await wait_until(lambda: not client.connected)
        assert client.state == "closed"  # not "connected": nothing reconnects a connect()-once client
        assert isinstance(client.last_error, ConnectionLostError)
        with pytest.raises(NotConnectedError):
            await client.call("health", {})
        await client.close()


async def test_it_refuses_calls_before_connect_and_after_close(client_factory):
    async with FakeGateway() as gw:
        client = client_factory(gw.url)
        with pytest.raises(NotConnectedError):
            await client.call("health", {})
        await client.connect()
        await client.close()
        await client.close()  # idempotent
        with pytest.raises(NotConnectedError):
            await client.call("health", {})
        with pytest.raises(NotConnectedError):
            await client.wait_connected(0.05)
    assert gw.requests == []


# --- events ---------------------------------------------------------------------------------------


async def test_it_dispatches_events_in_order_to_named_and_wildcard_handlers(client_factory, caplog):
    stream = [
        *load_frame("42-chat.send.event-stream.json"),
        load_frame("46-tick.event.json"),
        *load_frame("53-config.changed.event-after-patch.json"),
    ]

    async def replay(gw, ws, req):
        for event in stream:
            await ws.send(json.dumps(event))
        await ws.send(ok(req["id"], {"replayed": len(stream)}))

    log: list[tuple[str, str, int | None]] = []

    def everything(event):
        log.append(("*", event.event, event.seq))

    async def on_chat(event):
        await asyncio.sleep(0)  # an async handler that actually yields
        log.append(("chat", event.event, event.seq))

    def on_agent(event):
        log.append(("agent", event.event, event.seq))
        raise RuntimeError("a broken handler")

    def on_tick(event):  # pragma: no cover - unsubscribed before the replay
        log.append(("tick", event.event, event.seq))

    async with FakeGateway(respond=replay) as gw:
        client = client_factory(gw.url)
        client.on("*", everything)
        client.on("chat", on_chat)
        client.on("agent", on_agent)
        unsubscribe = client.on("tick", on_tick)
        unsubscribe()
        await client.connect()
        try:
            assert await client.call("replay", {}) == {"replayed": len(stream)}
            await wait_until(lambda: sum(1 for who, *_ in log if who == "*") == len(stream))
        finally:
            await client.close()

    wildcard = [(name, seq) for who, name, seq in log if who == "*"]
    assert wildcard == [(e["event"], e["seq"]) for e in stream]
    chats = [seq for who, _name, seq in log if who == "chat"]
    assert chats == [e["seq"] for e in stream if e["event"] == "chat"]
    agents = [seq for who, _name, seq in log if who == "agent"]
    assert agents == [e["seq"] for e in stream if e["event"] == "agent"]  # raising never unsubscribes
    # A named handler runs before the wildcard one for the same event.
    for index, (who, name, seq) in enumerate(log):
        if who in ("chat", "agent"):
            assert log[index + 1] == ("*", name, seq)
    assert not any(who == "tick" for who, *_ in log)
    assert client.stats["events"] == len(stream)
    assert "handler for agent failed" in caplog.text


# --- tick watchdog and reconnects -----------------------------------------------------------------


async def test_it_closes_a_silent_connection_with_4000_and_reconnects_under_run(client_factory):
    hooks: list[str] = []
    errors: list[str] = []

    async def resubscribe(client, hello):
        hooks.append(hello.server_version)
        await client.sessions_subscribe()

    async with FakeGateway(hello=hello_payload(tick_ms=100)) as gw:  # and it never ticks
        gw.results["sessions.subscribe"] = {"subscribed": True}
        client = client_factory(gw.url)
        client.on_connect(resubscribe)
        client.state_listeners.append(lambda c: errors.append(str(c.last_error)))
        stop = asyncio.Event()
        task = asyncio.create_task(client.run(stop))
        await wait_until(lambda: len(gw.per_connection) >= 2 and len(gw.per_connection[1]) >= 1)
        await stop_run(client, task, stop)
        await wait_until(lambda: len(gw.close_codes) == gw.connections)

    assert gw.connections >= 2
    assert gw.close_codes[0] == 4000
    assert len(hooks) >= 2
    assert [req["method"] for req in gw.per_connection[0]] == ["sessions.subscribe"]
    assert [req["method"] for req in gw.per_connection[1]] == ["sessions.subscribe"]
    assert client.stats["reconnects"] >= 1
    assert any("no frame from the gateway" in text for text in errors)
    assert client.state == "closed"


async def test_it_keeps_a_ticking_connection_open(client_factory):
    async def tick_while_open(ws: ServerConnection) -> None:
        tick = load_frame("46-tick.event.json")
        while True:
            await asyncio.sleep(0.03)
            await ws.send(json.dumps(tick))

    # Watchdog limit 2 x 150 ms; ticks every 30 ms leave room for a loaded machine.
    async with FakeGateway(hello=hello_payload(tick_ms=150)) as gw:
        ticks: list[int] = []
        client = client_factory(gw.url)
        client.on("tick", lambda e: ticks.append(e.seq))
        await client.connect()
        ticker = asyncio.create_task(tick_while_open(gw_socket := next(iter(gw._server.connections))))
        try:
            await asyncio.sleep(0.75)  # 2.5 times the watchdog limit
            assert client.connected
            assert gw.connections == 1
            assert len(ticks) >= 5
        finally:
            ticker.cancel()
            await client.close()
        assert gw_socket.close_code != 4000


async def test_it_waits_retry_after_ms_when_the_gateway_is_still_starting(client_factory):
    starting = {
        "code": "UNAVAILABLE",
        "message": "gateway is starting",
        "retryable": True,
        "retryAfterMs": 150,
        "details": {"reason": "startup-sidecars"},
    }
    async with FakeGateway(before_challenge=lambda n: starting if n == 1 else None) as gw:
        client = client_factory(gw.url)
        stop = asyncio.Event()
        task = asyncio.create_task(client.run(stop))
        await client.wait_connected(3)
        await stop_run(client, task, stop)
    assert gw.connections == 2
    assert gw.connected_at[1] - gw.connected_at[0] >= 0.14  # retryAfterMs, not the 0.01 s backoff


async def test_it_retries_a_call_caught_by_a_reconnect_under_run(client_factory):
    async def drop_first_flaky(gw, ws, req):
        if req["method"] == "flaky" and not gw.state.get("dropped"):
            gw.state["dropped"] = True
            await ws.close()
            return
        await echo(gw, ws, req)

    async with FakeGateway(respond=drop_first_flaky) as gw:
        client = client_factory(gw.url)
        stop = asyncio.Event()
        task = asyncio.create_task(client.run(stop))
        await client.wait_connected(3)
        try:
            assert await client.call("flaky", {"x": 1}) == {"x": 1}
        finally:
            await stop_run(client, task, stop)
    assert gw.connections == 2
    assert [req["method"] for req in gw.requests] == ["flaky", "flaky"]


async def test_it_does_not_hot_loop_when_every_connection_drops_after_the_challenge(client_factory):
    backoff = Backoff(base=0.1, cap=0.5)
    async with FakeGateway(drop_after_challenge=True) as gw:
        client = client_factory(gw.url, backoff=backoff)
        stop = asyncio.Event()
        task = asyncio.create_task(client.run(stop))
        await asyncio.sleep(1.5)
        attempts = gw.connections
        assert client.state in ("connecting", "reconnecting")  # between attempts, or in one
        assert isinstance(client.last_error, ConnectionLostError)
        await stop_run(client, task, stop)
    gaps = [b - a for a, b in zip(gw.connected_at, gw.connected_at[1:], strict=False)]
    assert 3 <= attempts <= 1 + 1.5 / backoff.floor  # the floor bounds it: a hot loop makes hundreds
    assert min(gaps) >= backoff.floor * 0.9
    assert client.stats["connects"] == 0


def test_it_draws_backoff_delays_between_the_floor_and_the_exponential_ceiling():
    backoff = Backoff(base=0.1, cap=0.5, floor=0.1)
    rng_state = random.getstate()
    try:
        random.seed(1234)
        for attempt in range(12):
            ceiling = min(backoff.cap, backoff.base * 2**attempt)
            delays = [backoff.delay(attempt) for _ in range(300)]
            assert all(backoff.floor <= d <= max(backoff.floor, ceiling) for d in delays), attempt
            if ceiling > 2 * backoff.floor:
                assert max(delays) > ceiling * 0.8  # full jitter reaches up to the ceiling
    finally:
        random.setstate(rng_state)
    assert backoff.floor <= Backoff(base=0.5, cap=30).delay(10_000) <= 30  # no overflow
    assert Backoff().delay(0) >= Backoff().floor


def test_it_reaches_the_cap_only_after_doubling(monkeypatch):
    monkeypatch.setattr(random, "uniform", lambda low, high: high)  # the unluckiest draw
    backoff = Backoff(base=0.5, cap=30.0, floor=0.1)
    assert [backoff.delay(n) for n in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    monkeypatch.setattr(random, "uniform", lambda low, high: low)  # the luckiest draw
    assert backoff.delay(5) == 0.1


# --- wrapped methods ------------------------------------------------------------------------------


async def test_it_follows_next_offset_across_pages(client_factory):
    rows = [*load_frame("22-sessions.list.multi-agent.payload.json")["payload"]["sessions"]]
    rows += load_frame("21-sessions.list.one-row.json")["response"]["payload"]["sessions"]
    assert len(rows) == 5
    template = load_frame("20-sessions.list.empty.json")["response"]["payload"]

    def page(params):
        offset = params.get("offset", 0)
        batch = rows[offset : offset + params["limit"]]
        more = offset + len(batch) < len(rows)
        return {
            **template,
            "sessions": batch,
            "hasMore": more,
            "nextOffset": offset + len(batch) if more else None,
        }

    async with FakeGateway() as gw:
        gw.results["sessions.list"] = page
        client = client_factory(gw.url)
        await client.connect()
        try:
            listed = await client.sessions_list(page_size=2, agentId="researcher")
        finally:
            await client.close()
    assert [row["key"] for row in listed] == [row["key"] for row in rows]
    assert [req["params"] for req in gw.requests] == [
        {"agentId": "researcher", "limit": 2},
        {"agentId": "researcher", "limit": 2, "offset": 2},
        {"agentId": "researcher", "limit": 2, "offset": 4},
    ]


async def test_it_stops_paging_on_an_empty_page_or_no_more(client_factory):
    pages = iter(
        [
            {"sessions": [{"key": "a"}], "hasMore": True, "nextOffset": 1},
            {"sessions": [], "hasMore": True, "nextOffset": 1},  # would loop forever if trusted
        ]
    )
    async with FakeGateway() as gw:
        gw.results["sessions.list"] = lambda _params: next(pages)
        client = client_factory(gw.url)
        await client.connect()
        try:
            assert await client.sessions_list() == [{"key": "a"}]
            gw.results["sessions.list"] = load_frame("20-sessions.list.empty.json")["response"]["payload"]
            assert await client.sessions_list() == []
            gw.results["sessions.list"] = ["not", "an", "object"]
            with pytest.raises(MalformedFrameError):
                await client.sessions_list()
        finally:
            await client.close()
    assert len(gw.requests) == 4


async def test_it_always_sends_an_idempotency_key_with_chat_send(client_factory):
    ack = load_frame("41-chat.send.ack.json")["response"]["payload"]
    async with FakeGateway() as gw:
        gw.results["chat.send"] = ack
        client = client_factory(gw.url)
        await client.connect()
        try:
            assert await client.chat_send("agent:researcher:main", "hello") == ack
            await client.chat_send("agent:researcher:main", "hello")
            await client.chat_send("main", "hi", idempotency_key="fixed-key", agentId="main")
        finally:
            await client.close()
    first, second, third = (req["params"] for req in gw.requests)
    assert first["sessionKey"] == "agent:researcher:main"
    assert first["message"] == "hello"
    assert str(uuid.UUID(first["idempotencyKey"])) == first["idempotencyKey"]
    assert first["idempotencyKey"] != second["idempotencyKey"]
    assert third == {"sessionKey": "main", "message": "hi", "idempotencyKey": "fixed-key", "agentId": "main"}


async def test_it_keeps_the_idempotency_key_across_retries_of_chat_send(client_factory):
    busy = {"code": "UNAVAILABLE", "message": "queue full", "retryable": True, "retryAfterMs": 5}

    async def busy_once(gw, ws, req):
        if len(gw.requests) == 1:
            await ws.send(fail(req["id"], busy))
        else:
            await ws.send(ok(req["id"], {"runId": req["params"]["idempotencyKey"], "status": "started"}))

    async with FakeGateway(respond=busy_once) as gw:
        client = client_factory(gw.url)
        await client.connect()
        try:
            ack = await client.chat_send("agent:main:main", "x")
        finally:
            await client.close()
    keys = [req["params"]["idempotencyKey"] for req in gw.requests]
    assert len(keys) == 2 and keys[0] == keys[1] == ack["runId"]


async def test_it_sends_config_patch_as_a_raw_json_string_with_the_base_hash(client_factory):
    captured = load_frame("52-config.patch.ok.json")
    patch = {"agents": {"entries": {"writer": {"identity": {"emoji": "📝"}}}}}
    async with FakeGateway() as gw:
        gw.results["config.patch"] = captured["response"]["payload"]
        client = client_factory(gw.url)
        await client.connect()
        try:
            result = await client.config_patch(patch, "hmac-sha256:v1:abc", note="dashboard test")
            await client.config_patch(captured["request"]["params"]["raw"], "hmac-sha256:v1:def")
        finally:
            await client.close()
    assert result["hash"] == captured["response"]["payload"]["hash"]
    first, second = (req["params"] for req in gw.requests)
    assert isinstance(first["raw"], str)
    assert json.loads(first["raw"]) == patch
    assert first["baseHash"] == "hmac-sha256:v1:abc"
    assert first["note"] == "dashboard test"
    assert second == {"raw": captured["request"]["params"]["raw"], "baseHash": "hmac-sha256:v1:def"}


async def test_it_wraps_the_read_methods(client_factory):
    async with FakeGateway() as gw:
        for name, method in [
            ("10-health.json", "health"),
            ("11-status.json", "status"),
            ("31-agents.list.json", "agents.list"),
            ("30-config.get.json", "config.get"),
            ("40-chat.history.empty.json", "chat.history"),
        ]:
            gw.results[method] = load_frame(name)["response"]["payload"]
        client = client_factory(gw.url)
        await client.connect()
        try:
            assert (await client.health())["ok"] is True
            assert "runtimeVersion" in await client.status()
            assert (await client.agents_list())["defaultId"] == "main"
            assert (await client.config_get())["hash"].startswith("hmac-sha256:")
            assert (await client.chat_history("agent:main:main", limit=5))["messages"] == []
            await client.chat_abort("agent:main:main", run_id="run-1")
        finally:
            await client.close()
    sent = {req["method"]: req["params"] for req in gw.requests}
    assert sent["health"] == sent["status"] == sent["agents.list"] == sent["config.get"] == {}
    assert sent["chat.history"] == {"sessionKey": "agent:main:main", "limit": 5}
    assert sent["chat.abort"] == {"sessionKey": "agent:main:main", "runId": "run-1"}


# --- the synchronous facade -----------------------------------------------------------------------


async def test_it_works_through_the_sync_facade_and_closes_idempotently():
    async def respond(gw, ws, req):
        if req["method"] == "no.such.method":
            await ws.send(fail(req["id"], captured_error("60-error.unknown-method.json")))
        else:
            await echo(gw, ws, req)

    async with FakeGateway(respond=respond) as gw:
        gw.results["health"] = load_frame("10-health.json")["response"]["payload"]
        sync = SyncGatewayClient(gw.url, TOKEN, backoff=FAST, request_timeout=3)
        try:
            # The facade blocks its caller, so it runs in a thread while this loop serves.
            hello = await asyncio.to_thread(sync.connect)
            assert hello.server_version == "2026.9.6"
            assert sync.hello is hello
            assert sync.state == "connected"  # plain attributes pass through
            assert (await asyncio.to_thread(sync.health))["ok"] is True
            assert await asyncio.to_thread(sync.call, "echo", {"n": 7}) == {"n": 7}
            with pytest.raises(InvalidRequestError):
                await asyncio.to_thread(sync.call, "no.such.method")
        finally:
            await asyncio.to_thread(sync.close)
        sync.close()  # a second close is a no-op
        assert sync.client.state == "closed"

        def as_context_manager():
            with SyncGatewayClient(gw.url, TOKEN, backoff=FAST) as client:
                return client.call("echo", {"n": 8})

        assert await asyncio.to_thread(as_context_manager) == {"n": 8}
    assert gw.connections == 2


async def test_it_raises_typed_errors_through_the_sync_facade():
    async with FakeGateway(connect_error=captured_error("62-error.connect-bad-token.json")) as gw:
        sync = SyncGatewayClient(gw.url, TOKEN, backoff=FAST)
        try:
            with pytest.raises(AuthError):
                await asyncio.to_thread(sync.connect)
        finally:
            await asyncio.to_thread(sync.close)


# --- loopback detection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("ws://127.0.0.1:18789/", True),
        ("ws://127.1.2.3/", True),
        ("ws://localhost:18789", True),
        ("ws://LOCALHOST/", True),
        ("ws://[::1]:18789/", True),
        ("wss://gateway.example.com/", False),
        ("ws://10.0.0.5:18789/", False),
        ("ws://127.example.com/", False),
        ("ws://127.0.0.1.nip.io/", False),
        ("ws://localhost.example.com/", False),
        ("ws://[bad", False),
        ("", False),
    ],
)
def test_it_tells_loopback_urls_apart(url, loopback):
    assert is_loopback_url(url) is loopback
