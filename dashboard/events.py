"""Turns gateway events into dashboard updates (called by the gateway listener).

* ``sessions.changed`` carries the full session row: upsert it at once and push the pulse;
* ``agent`` lifecycle events start / end runs: push a run indicator;
* ``chat`` events stream assistant text: push deltas to open chat panels;
* ``config.changed`` queues BATCH-002 for that gateway at once (the 30 s poll is the safety net).

Pushes are small JSON through :mod:`dashboard.broadcast`; the polling batches reconcile
whatever an event misses. Unknown events are ignored and logged at debug level.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import sync_to_async
from celery import current_app

from . import broadcast, sessions
from .gateway import Event
from .models import Gateway

log = logging.getLogger("agentflow.events")
IGNORED = frozenset({"tick", "health", "presence", "heartbeat", "connect.challenge"})


async def on_connected(gateway_id: int) -> None:
    """After every (re)connect: reconcile what we missed while disconnected."""
    await sync_to_async(queue_batch)("BATCH-001", gateway_id)
    await sync_to_async(queue_batch)("BATCH-002", gateway_id)


def queue_batch(batch: str, gateway_id: int) -> None:
    try:
        current_app.send_task("scheduler.tasks.run_batch_for_gateway", args=[batch, gateway_id])
    except Exception:
        log.warning("could not queue %s for gateway %s (broker down?)", batch, gateway_id, exc_info=True)


def _session_update(gateway_id: int, row: dict[str, Any]) -> list[dict[str, Any]]:
    gateway = Gateway.objects.get(pk=gateway_id)
    return sessions.sync_sessions(gateway, [row], partial=True).changes


async def handle(gateway_id: int, event: Event) -> None:
    payload: dict[str, Any] = event.payload if isinstance(event.payload, dict) else {}
    name = event.event
    if name in IGNORED:
        return
    group = broadcast.gateway_group(gateway_id)
    if name == "sessions.changed":
        row = payload.get("session")
        if isinstance(row, dict) and isinstance(row.get("key"), str):
            changes = await sync_to_async(_session_update)(gateway_id, row)
            if changes:
                await broadcast.asend(group, "sessions.changed", gateway_id=gateway_id, changes=changes)
        return
    if name == "agent":
        data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
        if payload.get("stream") == "lifecycle" and data.get("phase") in ("start", "end", "error"):
            await broadcast.asend(
                group,
                "agent.run",
                gateway_id=gateway_id,
                agent_id=str(payload.get("agentId", ""))[:200],
                session_key=str(payload.get("sessionKey", ""))[:500],
                run_id=str(payload.get("runId", ""))[:200],
                phase=str(data.get("phase")),
            )
        return
    if name == "chat":
        session_key = payload.get("sessionKey")
        if isinstance(session_key, str) and payload.get("state") in ("delta", "final", "aborted", "error"):
            await broadcast.asend(
                broadcast.chat_group(gateway_id, session_key),
                "chat.stream",
                gateway_id=gateway_id,
                session_key=session_key,
                run_id=str(payload.get("runId", "")),
                state=payload["state"],
                delta=str(payload.get("deltaText") or "")[:65536],
                error=str(payload.get("errorMessage") or "")[:1000],
            )
        return
    if name == "config.changed":
        await sync_to_async(queue_batch)("BATCH-002", gateway_id)
        return
    log.debug("gateway %s: event %s not handled", gateway_id, name)
