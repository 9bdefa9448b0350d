"""The dashboard websocket: one per open page.

Authenticated users only (anonymous: accepted, then closed with 4401 so the browser sees
why); origins are checked by AllowedHostsOriginValidator in asgi.py. The consumer joins one
group per enabled gateway and the alerts group, plus one per chat panel the page opens, and
forwards every live event declared with :mod:`agentflow.lib.broadcast` as it is (no ORM work
on the hot path).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth import get_user_model
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from agentflow.lib import broadcast
from agentflow.lib.redis import get_redis, key
from fleet import chats
from fleet.live import chat_group, gateway_group
from fleet.models import Gateway
from scheduler import audit, roles
from scheduler.live import ALERTS_GROUP

log = logging.getLogger("agentflow.consumers")

# What a page may send, and the capability (scheduler.roles) each needs. panel.open is read
# access: it subscribes this socket to a chat its user may already open as a page. A control
# added here needs "operate" or more and runs inside scheduler.audit.control, as the views do.
MESSAGES: dict[str, tuple[str, str]] = {"panel.open": ("read", "_open_panel")}

CLOSE_UNAUTHENTICATED = 4401
CLOSE_TOO_BIG = 1009
MAX_FRAME = 16 * 1024  # the page only ever sends tiny control messages


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
    async def connect(self) -> None:
        self.joined: set[str] = set()
        self.last_seq: dict[str, int] = {}
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.gateway_ids = set(await self._gateway_ids())
        for group in [gateway_group(pk) for pk in self.gateway_ids] + [ALERTS_GROUP]:
            await self._join(group)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "joined", ()):
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception:  # Redis busy or away: the membership expires on its own
                log.warning("could not leave %s on disconnect", group, exc_info=True)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raw = text_data if text_data is not None else bytes_data or b""
        if len(raw) > MAX_FRAME:
            log.warning("closing a websocket that sent a %d-byte frame", len(raw))
            await self.close(code=CLOSE_TOO_BIG)
            return
        try:
            message = json.loads(raw)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if not isinstance(kind, str) or kind not in MESSAGES:
            log.debug("ignored websocket message type %r", kind)
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

    async def _open_panel(self, message: dict[str, Any]) -> None:
        gateway_id, session_key = message.get("gateway_id"), message.get("session_key")
        if not isinstance(gateway_id, int) or gateway_id not in self.gateway_ids:
            return
        if not isinstance(session_key, str) or not 0 < len(session_key) <= 500:
            return
        await self._join(chat_group(gateway_id, session_key))
        await database_sync_to_async(chats.open_panel, thread_sensitive=False)(gateway_id, session_key)

    async def _join(self, group: str) -> None:
        if group not in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
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
