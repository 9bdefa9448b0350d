"""Running one batch for one gateway: lock, time, record, log, count.

Every run ends as exactly one ``BatchRun`` row (ok / error / skipped), one structured log
line in the design's wording and one increment of the Redis-backed metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone

from dashboard.models import Gateway

from . import metrics
from .locks import batch_lock
from .models import Batch, BatchRun

log = logging.getLogger("agentflow.scheduler")


class Skip(Exception):
    """Raised by a batch to end its run as ``skipped`` with a reason (e.g. gateway unreachable)."""


@dataclass
class Outcome:
    summary: str  # the part of the log line after the batch name, e.g. "12 sessions"
    counts: dict[str, Any] = field(default_factory=dict)


BatchFn = Callable[[Gateway | None], Outcome]


def run(batch: str, gateway: Gateway | None, fn: BatchFn, *, lock_ttl: int = 120) -> BatchRun:
    label = Batch(batch).label
    started_at = timezone.now()
    started = time.perf_counter()
    scope = gateway.pk if gateway else "global"
    status, error, counts, summary = BatchRun.Status.OK, "", {}, ""
    with batch_lock(batch, scope, lock_ttl) as acquired:
        if not acquired:
            status, summary = BatchRun.Status.SKIPPED, "skipped, previous run still holds the lock"
            error = "previous run still holds the lock"  # the reason operators see on the run
            counts = {"reason": "locked"}
        else:
            try:
                outcome = fn(gateway)
                summary, counts = outcome.summary, outcome.counts
            except Skip as exc:
                status, error, summary = BatchRun.Status.SKIPPED, str(exc), f"skipped ({exc})"
            except Exception as exc:
                status, error, summary = (
                    BatchRun.Status.ERROR,
                    f"{type(exc).__name__}: {exc}",
                    f"error: {exc}",
                )
                log.exception(
                    "[%s] %s failed%s", batch, label, f" for gateway {gateway.name}" if gateway else ""
                )
    duration = time.perf_counter() - started
    where = f" gateway={gateway.name}" if gateway else ""
    level = logging.ERROR if status == BatchRun.Status.ERROR else logging.INFO
    log.log(level, "[%s] %s: %s%s (%.0fms)", batch, label, summary, where, duration * 1000)
    metrics.record(batch, status, duration)
    return BatchRun.objects.create(
        batch=batch,
        gateway=gateway,
        started_at=started_at,
        duration_ms=duration * 1000,
        status=status,
        counts=counts,
        error=error[:5000],
    )
