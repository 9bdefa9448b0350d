"""Turns gateway events into fleet updates (called by the gateway listener).

A dispatch table, one handler per gateway event the fleet uses, and an explicit ignored set:

* ``sessions.changed`` carries the full session row: upsert it at once and push the pulse;
* ``agent`` lifecycle events start / end runs: push a run indicator;
* ``chat`` events stream assistant text: push deltas to open chat panels; a terminal one
  (final / error / aborted) of an agent run settles its attempt (fleet.agent_runs);
* ``config.changed`` queues BATCH-002 for that gateway at once (the 30 s poll is the safety net).

Pushes go through the events declared in :mod:`fleet.live`; the polling batches reconcile
whatever an event misses. Events in neither set are logged at debug level.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async

from openclaw import Event
from scheduler.tasks import queue_batch

from . import agent_runs, live, sessions
from .batches import CONFIG_POLLING, SESSION_POLLING
from .models import Gateway
from .payloads import as_dict

log = logging.getLogger("agentflow.events")

Handler = Callable[[int, dict[str, Any]], Awaitable[None]]
IGNORED = frozenset({"tick", "health", "presence", "heartbeat", "connect.challenge"})


async def on_connected(gateway_id: int) -> None:
    """After every (re)connect: reconcile what we missed while disconnected."""
    await sync_to_async(queue_batch)(SESSION_POLLING, gateway_id)
    await sync_to_async(queue_batch)(CONFIG_POLLING, gateway_id)


def _session_update(gateway_id: int, row: dict[str, Any]) -> list[dict[str, Any]]:
    gateway = Gateway.objects.get(pk=gateway_id)
    return sessions.sync_sessions(gateway, [row], partial=True).changes


async def on_sessions_changed(gateway_id: int, payload: dict[str, Any]) -> None:
    row = payload.get("session")
    if isinstance(row, dict) and isinstance(row.get("key"), str):
        changes = await sync_to_async(_session_update)(gateway_id, row)
        if changes:
            await live.SESSIONS_CHANGED.asend(gateway_id=gateway_id, changes=changes)


async def on_agent(gateway_id: int, payload: dict[str, Any]) -> None:
    data = as_dict(payload.get("data"))
    if payload.get("stream") == "lifecycle" and data.get("phase") in ("start", "end", "error"):
        await live.AGENT_RUN.asend(
            gateway_id=gateway_id,
            agent_id=str(payload.get("agentId", ""))[:200],
            session_key=str(payload.get("sessionKey", ""))[:500],
            run_id=str(payload.get("runId", ""))[:200],
            phase=str(data.get("phase")),
        )


async def on_chat(gateway_id: int, payload: dict[str, Any]) -> None:
    session_key = payload.get("sessionKey")
    if isinstance(session_key, str) and payload.get("state") in ("delta", "final", "aborted", "error"):
        await live.CHAT_STREAM.asend(
            gateway_id=gateway_id,
            session_key=session_key,
            run_id=str(payload.get("runId", "")),
            state=payload["state"],
            delta=str(payload.get("deltaText") or "")[:65536],
            error=str(payload.get("errorMessage") or "")[:1000],
        )
    if payload.get("state") in agent_runs.TERMINAL:
        await agent_runs.on_terminal_event(gateway_id, payload)


async def on_config_changed(gateway_id: int, payload: dict[str, Any]) -> None:
    await sync_to_async(queue_batch)(CONFIG_POLLING, gateway_id)


HANDLERS: dict[str, Handler] = {
    "sessions.changed": on_sessions_changed,
    "agent": on_agent,
    "chat": on_chat,
    "config.changed": on_config_changed,
}


async def handle(gateway_id: int, event: Event) -> None:
    handler = HANDLERS.get(event.event)
    if handler is None:
        if event.event not in IGNORED:
            log.debug("gateway %s: event %s not handled", gateway_id, event.event)
        return
    payload: dict[str, Any] = event.payload if isinstance(event.payload, dict) else {}
    await handler(gateway_id, payload)
