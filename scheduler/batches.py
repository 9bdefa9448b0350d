"""The five batches (BATCH-001…005) as plain functions of one gateway.

Each returns an :class:`Outcome` (log summary + counts) or raises :class:`Skip`; the runner
records the run. Gateway calls go through ``dashboard.services``; persistence through the
dashboard's domain modules.
"""

from __future__ import annotations

import logging
import traceback
from datetime import timedelta

from django.conf import settings
from django.core.mail import mail_admins
from django.db import transaction
from django.utils import timezone

from dashboard import broadcast, chats, cleanup, configs, sessions
from dashboard.gateway import GatewayError, GatewayTimeout
from dashboard.models import Alert, Gateway, HealthSample
from dashboard.services import connected, probe

from .models import BatchRun
from .runner import Outcome, Skip

log = logging.getLogger("agentflow.scheduler")

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
            rows = client.sessions_list()
    except GatewayError as exc:
        raise _skip_on_gateway_error(exc) from None
    result = sessions.sync_sessions(gateway, rows)
    if result.changes:
        broadcast.sessions_changed(gateway.pk, result.changes)
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
        broadcast.config_changed(gateway.pk, result.row.pk if result.row else None)
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
                    broadcast.chat_messages(gateway.pk, session_key, [m.pk for m in result.stored if m.pk])
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
            broadcast.gateway_status(gateway.pk, gateway.status)
        return Outcome(
            f"status=disconnected, error={exc.log_code}", {"connected": False, "error": exc.log_code}
        )
    HealthSample.objects.create(gateway=gateway, connected=True, latency_ms=latency)
    broadcast.gateway_status(gateway.pk, gateway.status)
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
    progress=None,
) -> Outcome:
    """BATCH-004: config history > 30 days, chat history > 7 days, old batch runs; in bounded batches."""
    config_days = config_days if config_days is not None else settings.AGENTFLOW_CONFIG_RETENTION_DAYS
    chat_days = chat_days if chat_days is not None else settings.AGENTFLOW_CHAT_RETENTION_DAYS
    batch_size = batch_size or settings.AGENTFLOW_CLEANUP_BATCH_SIZE
    try:
        result = cleanup.cleanup_history(
            config_days=config_days,
            chat_days=chat_days,
            batch_size=batch_size,
            dry_run=dry_run,
            progress=progress,
        )
        runs = cleanup.delete_before(
            BatchRun,
            "started_at",
            timezone.now() - timedelta(days=settings.AGENTFLOW_BATCH_RUN_RETENTION_DAYS),
            batch_size=batch_size,
            dry_run=dry_run,
        )
    except Exception as exc:
        notify_cleanup_failure(exc)
        raise
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


def notify_cleanup_failure(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc))
    log.error("[BATCH-004] Cleanup failed:\n%s", text)
    with transaction.atomic():
        Alert.objects.create(
            source="BATCH-004", message=f"History cleanup failed: {type(exc).__name__}: {exc}"
        )
    try:
        mail_admins("AgentFlow: history cleanup failed", text, fail_silently=False)
    except Exception:
        log.exception("[BATCH-004] could not mail the admins")
    broadcast.alert_raised()
