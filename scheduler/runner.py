"""Running one batch for one target: lock, time, record, log, count, and alert when it says so.

Every run ends as exactly one ``BatchRun`` row (ok / error / skipped), one structured log
line in the design's wording and one increment of the Redis-backed metrics.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

from django.core.mail import mail_admins
from django.db import transaction
from django.utils import timezone

from agentflow.lib.locks import lock

from . import live, metrics, registry
from .models import Alert, BatchRun
from .registry import Outcome, Skip

__all__ = ["Outcome", "Skip", "run"]

log = logging.getLogger("agentflow.scheduler")


BatchFn = Callable[[Any], Outcome]


def run(
    batch: str, target: Any = None, fn: BatchFn | None = None, *, lock_ttl: int | None = None
) -> BatchRun:
    """Run ``batch`` for ``target`` (None for a global batch); ``fn`` overrides the registered work
    (the cleanup command passes one with progress output)."""
    spec = registry.get(batch)
    fn = fn or spec.fn
    # What the run is for: a target of the spec's scope, or nothing (a global batch).
    target_id = target.pk if target is not None else None
    scope = spec.scope if spec.scope and target_id is not None else ""
    target_name = registry.scope(scope).label(target)[:200] if scope else ""
    started_at = timezone.now()
    started = time.perf_counter()
    status, error, counts, summary = BatchRun.Status.OK, "", {}, ""
    failure: BaseException | None = None
    with lock(batch, "global" if target_id is None else target_id, lock_ttl or spec.lock_ttl) as acquired:
        if not acquired:
            status, summary = BatchRun.Status.SKIPPED, "skipped, previous run still holds the lock"
            error = "previous run still holds the lock"  # the reason operators see on the run
            counts = {"reason": "locked"}
        else:
            try:
                outcome = fn(target)
                summary, counts = outcome.summary, outcome.counts
            except Skip as exc:
                status, error, summary = BatchRun.Status.SKIPPED, str(exc), f"skipped ({exc})"
            except Exception as exc:
                failure = exc
                status, error, summary = (
                    BatchRun.Status.ERROR,
                    f"{type(exc).__name__}: {exc}",
                    f"error: {exc}",
                )
                log.exception(
                    "[%s] %s failed%s",
                    batch,
                    spec.label,
                    f" for {scope} {target_name}" if scope else "",
                )
    duration = time.perf_counter() - started
    where = f" {scope}={target_name}" if scope else ""
    level = logging.ERROR if status == BatchRun.Status.ERROR else logging.INFO
    log.log(level, "[%s] %s: %s%s (%.0fms)", batch, spec.label, summary, where, duration * 1000)
    metrics.record(batch, status, duration)
    if failure is not None and spec.alert_on_error:
        notify_failure(spec, failure)
    return BatchRun.objects.create(
        batch=batch,
        scope=scope,
        target_id=target_id,
        target_name=target_name,
        started_at=started_at,
        duration_ms=duration * 1000,
        status=status,
        counts=counts,
        error=error[:5000],
    )


def notify_failure(spec: registry.BatchSpec, exc: BaseException) -> None:
    """An Alert on the dashboard, a mail to the admins and a live nudge to open pages."""
    text = "".join(traceback.format_exception(exc))
    log.error("[%s] %s failed:\n%s", spec.id, spec.label, text)
    with transaction.atomic():
        Alert.objects.create(source=spec.id, message=f"{spec.label} failed: {type(exc).__name__}: {exc}")
    try:
        mail_admins(f"AgentFlow: {spec.label.lower()} failed", text, fail_silently=False)
    except Exception:
        log.exception("[%s] could not mail the admins", spec.id)
    live.ALERT_RAISED.send()
