"""Running one batch for one target: lock, time, record, log, count, and alert when it says so.

Every run is exactly one ``BatchRun`` row, written ``running`` when it starts and ok / error /
skipped when it ends (or ``lost`` when its worker died), one structured log line in the design's
wording and one increment of the Redis-backed metrics.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.mail import mail_admins
from django.db import transaction
from django.utils import timezone

from agentflow.lib.locks import holder as lock_holder
from agentflow.lib.locks import lease
from agentflow.lib.locks import release as release_lock

from . import batch_runs, live, metrics, registry, workers
from .models import Alert, Attempt, BatchRun, Run
from .registry import Outcome, Skip

__all__ = ["Outcome", "Skip", "mark_lost", "run"]

log = logging.getLogger("agentflow.scheduler")


def worker_name() -> str:
    """Who runs a run, as its row records it: host:pid of the Celery pool process (or command).
    Read per run: a prefork pool forks after import."""
    return f"{socket.gethostname()}:{os.getpid()}"


BatchFn = Callable[[Any], Outcome]


def run(
    batch: str,
    target: Any = None,
    fn: BatchFn | None = None,
    *,
    lock_ttl: int | None = None,
    trigger: str = Run.Trigger.SCHEDULE,
    attach: tuple[Run, Attempt] | None = None,
) -> BatchRun:
    """Run ``batch`` for ``target`` (None for a global batch); ``fn`` overrides the registered work
    (the cleanup command passes one with progress output).

    The execution is also a ``Run`` of kind ``batch`` (scheduler/batch_runs.py): written running
    with its attempt next to the BatchRun, settled when the work ends, lost with it. ``attach``:
    the queued Run and claimed Attempt the ``batch`` action runs for (the queue settles it);
    otherwise the runner writes and settles its own (``trigger`` says why it runs).

    1. Mark the runs whose worker died as lost (:func:`mark_lost`).
    2. Take the (batch, target) lease: a lock of AGENTFLOW_BATCH_LEASE_SECONDS renewed by a
       heartbeat thread for at most ``lock_ttl`` (the spec's) seconds. Held: one ``skipped`` row.
    3. Record the run as ``running`` before the work starts (worker, heartbeat, lock token), so
       a worker killed mid-run leaves a visible row for step 1 of a later run to mark lost.
    4. Do the work; write the outcome on the same row while the lock is still ours; release.
    """
    spec = registry.get(batch)
    fn = fn or spec.fn
    # What the run is for: a target of the spec's scope, or nothing (a global batch).
    target_id = target.pk if target is not None else None
    scope = spec.scope if spec.scope and target_id is not None else ""
    target_name = registry.scope(scope).label(target)[:200] if scope else ""
    mark_lost()
    started_at = timezone.now()
    started = time.perf_counter()
    status, error, counts, summary = BatchRun.Status.OK, "", {}, ""
    failure: BaseException | None = None
    fields = {
        "batch": batch,
        "scope": scope,
        "target_id": target_id,
        "target_name": target_name,
        "started_at": started_at,
        "worker": worker_name(),
    }
    record: BatchRun | None = None
    linked: tuple[Run, Attempt] | None = attach

    def heartbeat() -> None:
        if record is not None:
            BatchRun.objects.filter(pk=record.pk, status=BatchRun.Status.RUNNING).update(
                heartbeat_at=timezone.now()
            )

    hold = lock_ttl or spec.lock_ttl
    with lease(
        batch,
        "global" if target_id is None else target_id,
        min(lease_seconds(), hold),
        hold_max=hold,
        on_renew=heartbeat,
    ) as held:
        if not held.acquired:
            status, summary = BatchRun.Status.SKIPPED, "skipped, previous run still holds the lock"
            error = "previous run still holds the lock"  # the reason operators see on the run
            counts = {"reason": "locked"}
            if attach is not None:
                fields["run"] = attach[0]  # nothing ran: only a run queued by an operator is linked
        else:
            if linked is None:
                # Its own path, never the queue's wheel: no backlog, pause or limit delays it.
                worker = workers.this_worker()  # the liveness key the tick checks
                fields["worker"] = worker
                linked = batch_runs.open_run(
                    batch,
                    scope=scope,
                    target_id=target_id,
                    target_name=target_name,
                    worker=worker,
                    started_at=started_at,
                    trigger=trigger,
                    timeout_seconds=hold,
                )
            record = BatchRun.objects.create(
                **fields,
                status=BatchRun.Status.RUNNING,
                heartbeat_at=started_at,
                lock_token=held.token,
                run=linked[0],
            )
            started = time.perf_counter()  # the work's duration, not the bookkeeping's
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
        outcome_fields = {
            "status": status,
            "duration_ms": duration * 1000,
            "counts": counts,
            "error": error[:5000],
        }
        if record is None:
            record = BatchRun.objects.create(**fields, **outcome_fields)
        else:
            # Written while the lock is still ours: the detector never sees a finished run as
            # running without its lock. The outcome wins over a mistaken "lost" (a slow heartbeat).
            outcome_fields["heartbeat_at"] = timezone.now()
            BatchRun.objects.filter(pk=record.pk).update(**outcome_fields)
            for name, value in outcome_fields.items():
                setattr(record, name, value)
    record.summary = summary
    if attach is None and linked is not None:
        batch_runs.settle(linked[1], record)
    where = f" {scope}={target_name}" if scope else ""
    level = logging.ERROR if status == BatchRun.Status.ERROR else logging.INFO
    log.log(level, "[%s] %s: %s%s (%.0fms)", batch, spec.label, summary, where, duration * 1000)
    metrics.record(batch, status, duration)
    if failure is not None and spec.alert_on_error:
        notify_failure(spec, failure)
    return record


def lease_seconds() -> float:
    return max(1, settings.AGENTFLOW_BATCH_LEASE_SECONDS)


def mark_lost() -> list[BatchRun]:
    """Mark as ``lost`` the running rows whose worker is gone, and return them. Gone means:

    - its process was on this host and no longer exists (a Celery pool process killed by the
      OOM killer, say): caught at once, and its lock is released so the task Celery requeues
      for it (reject_on_worker_lost) runs instead of being skipped; or
    - no heartbeat for a lease and its lock no longer holds its token (expired, or taken by a
      later run): a killed worker elsewhere, caught by the first batch run a lease after.

    A live run renews both every third of a lease, so a late heartbeat alone (a busy database)
    never condemns it.
    """
    cutoff = timezone.now() - timedelta(seconds=lease_seconds())
    lost = []
    for candidate in BatchRun.objects.running():
        dead_here = _dead_here(candidate.worker)
        if not dead_here:
            if candidate.heartbeat_at is None or candidate.heartbeat_at >= cutoff:
                continue
            try:
                if lock_holder(candidate.batch, candidate.lock_scope) == candidate.lock_token:
                    continue  # its worker still renews the lock: alive, only the heartbeat write lags
            except Exception:  # Redis down: we cannot tell, so we do not condemn
                log.warning("could not check the lock of run %s", candidate.pk, exc_info=True)
                continue
        last = candidate.heartbeat_at or candidate.started_at
        silent = (timezone.now() - last).total_seconds()
        duration_ms = max(0.0, (last - candidate.started_at).total_seconds() * 1000)
        if dead_here:
            error = f"worker {candidate.worker} died (its process is gone): the run did not finish"
        else:
            error = (
                f"worker {candidate.worker or '?'} stopped (no heartbeat for {silent:.0f} s and its lock "
                "expired): the run did not finish"
            )
        # Conditional: a run that finished meanwhile, or another detector, keeps its row.
        changed = BatchRun.objects.filter(pk=candidate.pk, status=BatchRun.Status.RUNNING).update(
            status=BatchRun.Status.LOST, error=error, duration_ms=duration_ms
        )
        if not changed:
            continue
        if dead_here and candidate.lock_token:
            try:
                release_lock(candidate.batch, candidate.lock_scope, candidate.lock_token)
            except Exception:
                log.warning("could not release the lock of run %s", candidate.pk, exc_info=True)
        if candidate.run_id is not None:
            try:
                batch_runs.lose(candidate.run_id, error)
            except Exception:
                log.warning("could not mark run %s lost", candidate.run_id, exc_info=True)
        candidate.status, candidate.error = BatchRun.Status.LOST, error
        log.warning("[%s] %s: lost%s (%s)", candidate.batch, candidate.batch_label, _where(candidate), error)
        metrics.record(candidate.batch, BatchRun.Status.LOST, duration_ms / 1000)
        lost.append(candidate)
    return lost


def _dead_here(worker: str) -> bool:
    """True when ``worker`` ("host:pid") names a process of this host that no longer exists."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the pid exists
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, someone else's
        return False
    return False


def _where(run: BatchRun) -> str:
    return f" {run.scope}={run.target_name}" if run.scope else ""


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
