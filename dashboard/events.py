"""Turns gateway events into dashboard updates (called by the gateway listener).

Pushes are small JSON through :mod:`dashboard.broadcast`; the polling batches reconcile
whatever a push misses. Unknown events are ignored (and counted at debug level).
"""

from __future__ import annotations

import logging
from typing import Any

from . import broadcast
from .gateway import Event

log = logging.getLogger("agentflow.events")


async def on_connected(gateway_id: int) -> None:
    """Hook run after every (re)connect, once ``sessions.subscribe`` is re-issued."""


async def handle(gateway_id: int, event: Event) -> None:
    payload: dict[str, Any] = event.payload if isinstance(event.payload, dict) else {}
    if event.event in ("tick", "health", "presence", "heartbeat"):
        return
    if event.event == "sessions.changed":
        await broadcast.asend(
            broadcast.gateway_group(gateway_id),
            "session.pulse",
            gateway_id=gateway_id,
            session_key=str(payload.get("sessionKey", "")),
            agent_id=str(payload.get("agentId", "")),
            reason=str(payload.get("reason", "")),
        )
        return
    if event.event == "agent" and payload.get("stream") == "lifecycle":
        data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
        await broadcast.asend(
            broadcast.gateway_group(gateway_id),
            "agent.run",
            gateway_id=gateway_id,
            agent_id=str(payload.get("agentId", "")),
            session_key=str(payload.get("sessionKey", "")),
            phase=str(data.get("phase", "")),
        )
        return
    log.debug("gateway %s: event %s not handled", gateway_id, event.event)
