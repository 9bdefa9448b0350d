"""A run (and an alert) as JSON, in one place: the ops API (``/api/v1/runs/``) and ``manage.py enqueue_run``
print the same shape."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .models import Alert, Attempt, Job, Run

RESULT_CHARS = 4000  # the reply shown inline; the whole stored reply is at result_url


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def run_json(
    run: Run,
    *,
    result_url: str | None = None,
    result_chars: int = RESULT_CHARS,
    attempts: list[Attempt] | None = None,
) -> dict[str, Any]:
    """``run`` with its attempts (prefetch ``attempt_set`` for lists, or pass ``attempts``: ``[]``
    for a run just queued, which has none). ``result`` is capped at ``result_chars``;
    ``result_truncated`` says whether anything was cut (here or when stored)."""
    if attempts is None:
        attempts = list(run.attempt_set.all())
    latest = attempts[-1] if attempts else None
    result = run.result or ""
    shown = result[:result_chars]
    return {
        "id": run.pk,
        "job": run.job_name or None,
        "kind": run.kind,
        "status": run.status,
        "priority": run.priority,
        "trigger": run.trigger,
        "triggered_by": run.triggered_by,
        "gateway": run.gateway or None,
        "agent": run.agent or None,
        "dedupe_key": run.dedupe_key or None,
        "attempts": run.attempts,
        "max_attempts": run.max_attempts,
        "timeout": run.timeout_seconds,
        "timings": {
            "queued_at": _ts(run.queued_at),
            "run_after": _ts(run.run_after),
            "started_at": _ts(run.started_at),
            "finished_at": _ts(run.finished_at),
            "wait_time": _seconds(run.wait_seconds),
            "execution_time": _seconds(run.execution_seconds),
        },
        "result": shown or None,
        "result_truncated": len(shown) < len(result) or run.result_truncated,
        "result_url": result_url,
        "session_key": (latest.session_key or None) if latest else None,
        "usage": run.usage or {},
        "error_class": run.error_class or None,
        "error": run.error or None,
        "attempt_list": [
            {
                "id": str(a.pk),
                "number": a.number,
                "status": a.status,
                "error_class": a.error_class or None,
                "error": a.error or None,
                "session_key": a.session_key or None,
                "started_at": _ts(a.started_at),
                "finished_at": _ts(a.finished_at),
            }
            for a in attempts
        ],
    }


def job_json(job: Job) -> dict[str, Any]:
    return {
        "name": job.name,
        "kind": job.kind,
        "params": job.params,
        "prompt_template": job.prompt_template,
        "priority": job.priority,
        "timeout": job.timeout_seconds,
        "max_attempts": job.max_attempts,
        "on_error": job.on_error,
        "on_error_job": job.on_error_job.name if job.on_error_job_id and job.on_error_job else None,
        "concurrency_limit": job.concurrency_limit,
        "enabled": job.enabled,
        "tags": job.tags,
        "system": job.system,
        "created_at": _ts(job.created_at),
        "updated_at": _ts(job.updated_at),
    }


def alert_json(alert: Alert) -> dict[str, Any]:
    """An alert as the ops API (``/api/v1/alerts/``) answers it."""
    return {
        "id": alert.pk,
        "level": alert.level,
        "rule": alert.rule or None,
        "subject": alert.subject,
        "source": alert.source,
        "message": alert.message,
        "value": alert.value,
        "open": alert.resolved_at is None,
        "first_seen": _ts(alert.created_at),
        "last_seen": _ts(alert.seen_at),
        "count": alert.count,
        "reopened": alert.reopened,
        "resolved_at": _ts(alert.resolved_at),
    }
