"""The five batches (BATCH-001…005) as plain functions of one gateway, registered with the engine.

Each returns an :class:`Outcome` (log summary + counts) or raises :class:`Skip`; the engine's
runner locks, records and counts the run. Gateway calls go through :mod:`fleet.services`;
persistence through the fleet's domain modules. :func:`register` (called from
``FleetConfig.ready``) is the one place a batch is defined: id, label, default schedule,
per-gateway or global, lock TTL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from agentflow.lib.retention import delete_before
from openclaw import GatewayError, GatewayTimeout
from scheduler import batch_runs
from scheduler.models import BatchRun
from scheduler.registry import BatchSpec, Outcome, Scope, Skip, register_batch, register_scope

from . import chats, configs, live, retention, sessions
from .models import Gateway, HealthSample
from .services import connected, probe

log = logging.getLogger("agentflow.scheduler")

SESSION_POLLING = "BATCH-001"
CONFIG_POLLING = "BATCH-002"
CHAT_POLLING = "BATCH-003"
HISTORY_CLEANUP = "BATCH-004"
HEALTH_CHECK = "BATCH-005"

SESSION_TIMEOUT = 10.0
HEALTH_TIMEOUT = 5.0
CHAT_LIMIT = 20
CHAT_CATCH_UP_LIMIT = 1000


def _skip_on_gateway_error(exc: GatewayError) -> Skip:
    if isinstance(exc, GatewayTimeout):
        return Skip(f"timed out: {exc.message}")
    return Skip(f"[{exc.log_code}] {exc.operator_message}")


def poll_sessions(gateway: Gateway) -> Outcome:
    """BATCH-001: sessions.list (all pages) → diff → write and push only what changed."""
    try:
        with connected(gateway, request_timeout=SESSION_TIMEOUT) as client:
            rows = client.sessions_list(includeLastMessage=True)  # the overview's preview
    except GatewayError as exc:
        raise _skip_on_gateway_error(exc) from None
    result = sessions.sync_sessions(gateway, rows)
    if result.changes:
        live.SESSIONS_CHANGED.send(gateway_id=gateway.pk, changes=result.changes)
    return Outcome(
        f"{result.seen} sessions, {len(result.changes)} changed",
        {
            "sessions": result.seen,
            "changed": len(result.changes),
            "created": result.created,
            "updated": result.updated,
            "invalid": result.invalid,
        },
    )


def poll_config(gateway: Gateway) -> Outcome:
    """BATCH-002: config.get; a new hash → a history row, the roster and org chart rebuilt."""
    try:
        with connected(gateway) as client:
            payload = client.config_get()
            result = configs.record_config(gateway, payload)
            roster_writes = 0
            if result.changed or not gateway.agents.exists():
                roster = client.agents_list()
                config = payload.get("sourceConfig") if isinstance(payload, dict) else None
                roster_writes = configs.rebuild_roster(
                    gateway, roster, config if isinstance(config, dict) else {}
                )
    except GatewayError as exc:
        raise _skip_on_gateway_error(exc) from None
    if result.changed or roster_writes:
        live.CONFIG_CHANGED.send(gateway_id=gateway.pk, history_id=result.row.pk if result.row else None)
    paths = result.row.changed_paths if result.row else []
    return Outcome(
        f"changed={'true' if result.changed else 'false'}",
        {"changed": result.changed, "changed_paths": paths[:50], "roster_writes": roster_writes},
    )


def poll_chats(gateway: Gateway) -> Outcome:
    """BATCH-003: only sessions with an open chat panel; none open → no gateway call at all."""
    keys = chats.open_panels(gateway.pk)
    if not keys:
        return Outcome("0 open panels", {"panels": 0, "stored": 0})
    stored = errors = 0
    try:
        with connected(gateway) as client:
            for session_key in keys:
                try:
                    history = client.chat_history(session_key, limit=CHAT_LIMIT)
                    result = chats.store_messages(gateway, session_key, history.get("messages"))
                    # A full page with nothing already stored: there may be a gap → fetch more.
                    if result.received and not result.overlap and len(result.stored) >= CHAT_LIMIT:
                        history = client.chat_history(session_key, limit=CHAT_CATCH_UP_LIMIT)
                        more = chats.store_messages(gateway, session_key, history.get("messages"))
                        result.stored += more.stored
                except (GatewayError, ValueError, AttributeError) as exc:
                    errors += 1
                    log.warning("[BATCH-003] %s: %s", session_key, exc)
                    continue
                if result.stored:
                    stored += len(result.stored)
                    live.CHAT_MESSAGES.send(
                        gateway_id=gateway.pk,
                        session_key=session_key,
                        message_ids=[m.pk for m in result.stored if m.pk],
                    )
    except GatewayError as exc:
        raise _skip_on_gateway_error(exc) from None
    return Outcome(
        f"{len(keys)} panels, {stored} new messages",
        {"panels": len(keys), "stored": stored, "errors": errors},
    )


def check_health(gateway: Gateway) -> Outcome:
    """BATCH-005: config.get with a 5 s timeout; status, latency and a sample for the sparkline."""
    previous = gateway.status
    try:
        latency = probe(gateway, timeout=HEALTH_TIMEOUT)
    except GatewayError as exc:
        HealthSample.objects.create(gateway=gateway, connected=False, error=exc.operator_message[:500])
        if gateway.status != previous:
            live.GATEWAY_STATUS.send(**live.status_of(gateway))
        return Outcome(
            f"status=disconnected, error={exc.log_code}", {"connected": False, "error": exc.log_code}
        )
    HealthSample.objects.create(gateway=gateway, connected=True, latency_ms=latency)
    live.GATEWAY_STATUS.send(**live.status_of(gateway))
    return Outcome(
        f"status=connected, latency={latency:.0f}ms", {"connected": True, "latency_ms": round(latency, 2)}
    )


def cleanup_history(
    _gateway: Gateway | None = None,
    *,
    config_days: int | None = None,
    chat_days: int | None = None,
    batch_size: int | None = None,
    dry_run: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> Outcome:
    """BATCH-004: config history > 30 days, chat history > 7 days, old batch runs; in bounded batches."""
    config_days = config_days if config_days is not None else settings.AGENTFLOW_CONFIG_RETENTION_DAYS
    chat_days = chat_days if chat_days is not None else settings.AGENTFLOW_CHAT_RETENTION_DAYS
    batch_size = batch_size or settings.AGENTFLOW_CLEANUP_BATCH_SIZE
    # A failure raises: the runner records it, and this batch's spec (alert_on_error) makes it
    # raise an Alert and mail the admins.
    result = retention.cleanup_history(
        config_days=config_days,
        chat_days=chat_days,
        batch_size=batch_size,
        dry_run=dry_run,
        progress=progress,
    )
    batch_cutoff = timezone.now() - timedelta(days=settings.AGENTFLOW_BATCH_RUN_RETENTION_DAYS)
    runs = delete_before(BatchRun, "started_at", batch_cutoff, batch_size=batch_size, dry_run=dry_run)
    # The same executions in the runs table (kind "batch") go with them.
    batch_runs.delete_before(batch_cutoff, batch_size=batch_size, dry_run=dry_run)
    log.info("[BATCH-004] Cleanup: config=%d, chat=%d", result.config, result.chat)
    return Outcome(
        f"config={result.config}, chat={result.chat}" + (" (dry run)" if dry_run else ""),
        {
            "config": result.config,
            "chat": result.chat,
            "batch_runs": runs,
            "health_samples": result.other,
            "batches": result.batches,
            "max_batch_ms": round(result.max_batch_ms, 1),
            "dry_run": dry_run,
        },
    )


GATEWAYS = Scope(
    name="gateway",
    ids=lambda: list(Gateway.objects.enabled().values_list("pk", flat=True)),
    load=lambda pk: Gateway.objects.filter(pk=pk, enabled=True).first(),
    label=lambda gateway: gateway.name,
)

BATCHES = (
    BatchSpec(
        SESSION_POLLING,
        "Session polling",
        poll_sessions,
        every_seconds=10,
        description="Session states (active / idle / offline)",
        scope="gateway",
        lock_ttl=60,
    ),
    BatchSpec(
        CONFIG_POLLING,
        "Config polling",
        poll_config,
        every_seconds=30,
        description="Config changes and the org chart",
        scope="gateway",
        lock_ttl=120,
    ),
    BatchSpec(
        CHAT_POLLING,
        "Chat polling",
        poll_chats,
        every_seconds=5,
        description="New chat messages, only for open chat panels",
        scope="gateway",
        lock_ttl=60,
    ),
    BatchSpec(
        HISTORY_CLEANUP,
        "History cleanup",
        cleanup_history,
        crontab=("0", "3"),
        description="Delete old config and chat history",
        lock_ttl=3600,
        alert_on_error=True,
    ),
    BatchSpec(
        HEALTH_CHECK,
        "Health check",
        check_health,
        every_seconds=60,
        description="Gateway connectivity and latency",
        scope="gateway",
        lock_ttl=60,
    ),
)


def register() -> None:
    register_scope(GATEWAYS)
    for spec in BATCHES:
        register_batch(spec)
