"""The dashboard websocket: one per open page.

Authenticated users only (anonymous: accepted, then closed with 4401 so the browser sees
why); origins are checked by agentflow.lib.origin.SameOriginValidator in asgi.py. The consumer
joins one group per enabled gateway and the alerts group, plus one per chat panel the page opens
(known sessions only, at most AGENTFLOW_WS_MAX_PANELS per socket, ``panel.open`` rate-limited),
and forwards every live event declared with :mod:`agentflow.lib.broadcast` as it is (no ORM
work on the hot path). Every AGENTFLOW_WS_HEARTBEAT seconds it checks Redis and sends
``{"type":"heartbeat"}``, so a page can tell a live socket from a silent one.

Close codes (the browser shows them; README "Websocket close codes"): 4400 malformed frame,
4401 not signed in, 4413 frame too big, 4429 too many ``panel.open``, 4503 live updates
unavailable (Redis does not answer). Each close logs one line, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import redis
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from agentflow.lib import broadcast
from agentflow.lib.ratelimit import TokenBucket
from agentflow.lib.redis import get_redis, key, redacted_url, redis_problem
from fleet import chats
from fleet.live import chat_group, gateway_group
from fleet.models import Gateway
from scheduler import audit, roles
from scheduler.live import ALERTS_GROUP

log = logging.getLogger("agentflow.consumers")

# Application close codes (4000-4999): Daphne refuses the protocol's own 1009 from an app
# (it became 1011 and a traceback).
CLOSE_MALFORMED = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_TOO_BIG = 4413
CLOSE_RATE_LIMITED = 4429
CLOSE_LIVE_UNAVAILABLE = 4503
MAX_FRAME = 16 * 1024  # the page only ever sends tiny control messages
# What a page may send, and the capability (scheduler.roles) each needs. panel.open is read
# access: it subscribes this socket to a chat its user may already open as a page. A control
# added here needs "operate" or more and runs inside scheduler.audit.control, as the views do.
# Any other type closes the socket with 4400.
MESSAGES: dict[str, tuple[str, str]] = {"panel.open": ("read", "_open_panel"), "ping": ("read", "_pong")}
# A layer or Redis failure: the page is told (4503) instead of a 500 or a silent socket.
LIVE_ERRORS = (redis.RedisError, OSError, asyncio.TimeoutError)


class Malformed(Exception):
    """A frame the consumer closes the socket for, with its code and a one-line reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def parse_frame(raw: str | bytes) -> dict[str, Any]:
    """The page's message as a dict with a known ``type``, or :class:`Malformed`."""
    if len(raw) > MAX_FRAME:
        raise Malformed(CLOSE_TOO_BIG, f"a {len(raw)}-byte frame (limit {MAX_FRAME})")
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: "[" * 5000
        raise Malformed(CLOSE_MALFORMED, f"a frame that is not JSON ({type(exc).__name__})") from None
    if not isinstance(message, dict):
        raise Malformed(CLOSE_MALFORMED, f"a JSON {type(message).__name__}, not an object")
    if not isinstance(message.get("type"), str) or message["type"] not in MESSAGES:
        raise Malformed(CLOSE_MALFORMED, f"an unknown message type {str(message.get('type'))[:40]!r}")
    return message


def record_dropped(count: int) -> None:
    try:
        get_redis().incrby(key("metrics", "ws_dropped"), count)
    except Exception:
        log.warning("could not count %d dropped websocket messages", count)


class DroppedCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        dropped = CounterMetricFamily(
            "agentflow_ws_dropped", "Dashboard websocket messages lost between the channel layer and a page"
        )
        # Redis down: /healthz reports it; still report everything else on /metrics.
        with contextlib.suppress(Exception):
            dropped.add_metric([], float(get_redis().get(key("metrics", "ws_dropped")) or 0))
        yield dropped


class DashboardConsumer(AsyncWebsocketConsumer):
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # Without Redis the channel layer fails before connect() (new_channel) or while the
        # socket is open (core layer's receive): accept if needed and close with 4503, one line.
        self._accepted = False
        self.closing = False

        async def tracking_send(message: Any) -> None:
            if message.get("type") == "websocket.accept":
                self._accepted = True
            await send(message)

        try:
            await super().__call__(scope, receive, tracking_send)
        except LIVE_ERRORS as exc:
            if self.closing:  # closed already (4503 from connect or the heartbeat): said once
                return
            log.warning(
                "closing a websocket with %d: live updates unavailable, Redis at %s: %s: %s",
                CLOSE_LIVE_UNAVAILABLE,
                redacted_url(),
                type(exc).__name__,
                exc,
            )
            with contextlib.suppress(Exception):
                if not self._accepted:
                    await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": CLOSE_LIVE_UNAVAILABLE})

    async def connect(self) -> None:
        self.closing = False
        self.joined: set[str] = set()
        self.panels: set[str] = set()
        self.last_seq: dict[str, int] = {}
        self.heartbeat: asyncio.Task[None] | None = None
        self.panel_opens = TokenBucket(
            settings.AGENTFLOW_WS_PANEL_OPEN_RATE, settings.AGENTFLOW_WS_PANEL_OPEN_BURST
        )
        self.refused_over_cap = False
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        problem = await sync_to_async(redis_problem, thread_sensitive=False)()
        if problem:
            await self._close_unavailable(problem)
            return
        self.gateway_ids = set(await self._gateway_ids())
        for group in [gateway_group(pk) for pk in self.gateway_ids] + [ALERTS_GROUP]:
            await self._join(group)
        await self.accept()
        if settings.AGENTFLOW_WS_HEARTBEAT > 0:
            self.heartbeat = asyncio.create_task(self._beat(settings.AGENTFLOW_WS_HEARTBEAT))

    async def _close_for(self, code: int, reason: str) -> None:
        """Close once, with one log line (no traceback); later frames are ignored."""
        if self.closing:
            return
        self.closing = True
        log.warning("closing a websocket with %d: %s", code, reason)
        if not self._accepted:
            await self.accept()
        await self.close(code=code)

    async def _close_unavailable(self, problem: str) -> None:
        await self._close_for(
            CLOSE_LIVE_UNAVAILABLE, f"live updates unavailable, Redis at {redacted_url()}: {problem}"
        )

    async def _beat(self, interval: float) -> None:
        """Check Redis and tell the page the socket is alive; close with 4503 once Redis is away
        (the pub/sub layer would otherwise keep a socket open that receives nothing)."""
        while True:
            await asyncio.sleep(interval)
            problem = await sync_to_async(redis_problem, thread_sensitive=False)()
            if problem:
                self.heartbeat = None  # closing: nothing to cancel
                await self._close_unavailable(problem)
                return
            await self.send(text_data='{"type":"heartbeat"}')

    async def disconnect(self, code: int) -> None:
        heartbeat = getattr(self, "heartbeat", None)
        if heartbeat is not None:
            heartbeat.cancel()
        groups = list(getattr(self, "joined", ()))
        # All at once, 2 s at most: with Redis away each would fail (or hang) on its own.
        results = await asyncio.gather(
            *(asyncio.wait_for(self.channel_layer.group_discard(g, self.channel_name), 2) for g in groups),
            return_exceptions=True,
        )
        failed = sum(isinstance(r, BaseException) for r in results)  # the membership expires on its own
        if failed:
            log.warning("could not leave %d groups on disconnect (Redis at %s)", failed, redacted_url())

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:  # frames the page sent before it saw our close
            return
        raw = text_data if text_data is not None else bytes_data or b""
        try:
            message = parse_frame(raw)
        except Malformed as exc:
            await self._close_for(exc.code, f"it sent {exc}")
            return
        kind = message["type"]
        if kind == "panel.open" and not self.panel_opens.take():
            await self._close_for(CLOSE_RATE_LIMITED, "panel.open faster than allowed")
            return
        capability, handler = MESSAGES[kind]
        if capability != "read":
            refusal = await database_sync_to_async(self._refusal, thread_sensitive=False)(kind, capability)
            if refusal:
                await self.send(text_data=json.dumps({"type": "refused", "action": kind, "error": refusal}))
                return
        await getattr(self, handler)(message)

    def _refusal(self, kind: str, capability: str) -> str:
        """Checked per control message, from the database: a role taken away applies at once.
        A refusal is audited like a refused page or API call."""
        user_id = getattr(self.scope.get("user"), "pk", None)
        user = get_user_model().objects.filter(pk=user_id).first() if user_id is not None else None
        actor = audit.Actor.of_user(
            user, source="websocket", ip_address=(self.scope.get("client") or [None])[0]
        )
        if actor.can(capability):
            return ""
        message = roles.refusal(actor.effective_role, capability)
        audit.record(kind, actor, result=audit.Result.REFUSED, message=message)
        return message

    async def _pong(self, message: dict[str, Any]) -> None:
        await self.send(text_data='{"type":"pong"}')

    async def _open_panel(self, message: dict[str, Any]) -> None:
        gateway_id, session_key = message.get("gateway_id"), message.get("session_key")
        if not isinstance(gateway_id, int) or gateway_id not in self.gateway_ids:
            return
        if not isinstance(session_key, str) or not 0 < len(session_key) <= 500:
            return
        group = chat_group(gateway_id, session_key)
        if group not in self.panels and len(self.panels) >= settings.AGENTFLOW_WS_MAX_PANELS:
            if not self.refused_over_cap:  # once per socket: the rate limit bounds the rest
                log.warning("websocket over its %d chat panels: refused", settings.AGENTFLOW_WS_MAX_PANELS)
                self.refused_over_cap = True
            return
        # Made-up keys would cost BATCH-003 a gateway call each: only sessions on record.
        if not await database_sync_to_async(chats.is_known_session, thread_sensitive=False)(
            gateway_id, session_key
        ):
            log.debug("panel.open for an unknown session of gateway %s: refused", gateway_id)
            return
        await self._join(group)
        self.panels.add(group)
        await database_sync_to_async(chats.register_panel, thread_sensitive=False)(gateway_id, session_key)

    async def _join(self, group: str) -> None:
        if group not in self.joined:
            await asyncio.wait_for(self.channel_layer.group_add(group, self.channel_name), 5)
            self.joined.add(group)

    async def forward(self, event: dict[str, Any]) -> None:
        group, seq = event.get("group"), event.get("seq")
        if isinstance(seq, int) and group:
            last = self.last_seq.get(group)
            if last is not None and seq > last + 1:
                await database_sync_to_async(record_dropped, thread_sensitive=False)(seq - last - 1)
                # The page missed something: it re-fetches what it shows rather than stay stale.
                await self.send(text_data='{"type":"resync"}')
            self.last_seq[group] = max(seq, last or 0)
        payload = {k: v for k, v in event.items() if k not in ("type", "kind", "group")}
        payload["type"] = event["kind"]
        await self.send(text_data=json.dumps(payload, separators=(",", ":")))

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels runs aclose_old_connections() before every handler: a hop through asgiref's
        # single shared thread. Forwarded events never touch the database, and at 100 pages x
        # 10 events/s those hops queue up behind each other (bench/README.md, fan-out).
        # Every declared live event is forwarded as it is; nothing else reaches a page.
        if message.get("kind") in broadcast.EVENTS:
            await self.forward(message)
        else:
            await super().dispatch(message)

    @database_sync_to_async
    def _gateway_ids(self) -> list[int]:
        return list(Gateway.objects.enabled().values_list("pk", flat=True))
