"""The engine's periodic tick (scheduler.tasks.tick, every AGENTFLOW_TICK_SECONDS by beat).

Each step is a bounded, idempotent pass, safe to run twice at once:

0. waiting runs an engaged emergency stop covers that slipped past it → parked, held by it; the
   stop's Redis mirror rewritten (a Redis that restarted empty is refilled: scheduler/stops.py);

1. due scheduled runs (delayed, retry backoff, rate-limit wait) → queued (parked under a pause),
   with one dispatch message each;
2. queued runs waiting longer than AGENTFLOW_REDISPATCH_AFTER_SECONDS (their message lost, e.g.
   a broker restart) get a fresh message, at most AGENTFLOW_REDISPATCH_MAX per tick;
3. attempts whose worker died inside start() (its liveness key expired) → the run is lost;
4. runs past their timeout plus a grace, no worker holding them: the action may reconcile
   (say how it ended), else the attempt fails with ``timeout`` (retried by the policy);
5. notification deliveries due for a while (their message lost, a retry's countdown lost with
   a Redis restart, a worker killed mid-send) get a fresh message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import actions, conditions, errors, queue, results, stops, workers
from .actions import AttemptContext, Finished
from .models import Attempt, QueuePause, Run
from .notifications import delivery

log = logging.getLogger("agentflow.scheduler")

BATCH = 1000


@dataclass
class TickReport:
    promoted: int = 0
    parked: int = 0
    redispatched: int = 0
    lost: int = 0
    timed_out: int = 0
    reconciled: int = 0
    stopped: int = 0
    notifications: int = 0
    results: int = 0


def promote_due(now: datetime) -> tuple[int, int]:
    """Due scheduled runs → queued (or parked when a pause covers them); their messages sent."""
    due = list(
        Run.objects.filter(status=Run.Status.SCHEDULED, run_after__lte=now)
        .order_by("run_after", "id")
        .values_list("pk", flat=True)[:BATCH]
    )
    if not due:
        return 0, 0
    parked = 0
    with transaction.atomic():
        rows = Run.objects.filter(pk__in=due, status=Run.Status.SCHEDULED)
        paused = queue.pause_q(QueuePause.objects.all())
        if paused is not None:
            parked = rows.filter(paused).update(status=Run.Status.PARKED)
        by_priority = {p: rows.filter(priority=p).update(status=Run.Status.QUEUED) for p in queue.PRIORITIES}
    for priority, n in by_priority.items():
        if n:
            transaction.on_commit(partial(queue.wake_many, priority, n))
    return sum(by_priority.values()), parked


def redispatch_stale(now: datetime) -> int:
    """Fresh messages for eligible queued runs that have waited too long (lost messages)."""
    cutoff = now - timedelta(seconds=settings.AGENTFLOW_REDISPATCH_AFTER_SECONDS)
    stale = queue.eligible().filter(queued_at__lte=cutoff).exclude(run_after__gt=cutoff)
    counts = {
        p: stale.filter(priority=p)[: settings.AGENTFLOW_REDISPATCH_MAX].count() for p in queue.PRIORITIES
    }
    budget = settings.AGENTFLOW_REDISPATCH_MAX
    sent = 0
    for priority in queue.PRIORITIES:
        n = min(counts[priority], budget - sent)
        if n > 0:
            sent += queue.send_dispatch(priority, n)
    return sent


def mark_dead_workers_lost(now: datetime) -> int:
    """Attempts inside start() of a worker whose liveness key is gone: attempt and run lost.

    Lost, not retried: the work may have partly happened (an operator's retry_run decides)."""
    cutoff = now - timedelta(seconds=settings.AGENTFLOW_WORKER_LEASE_SECONDS)
    held = Attempt.objects.filter(status=Attempt.Status.RUNNING, in_worker=True, started_at__lte=cutoff)
    dead = {w for w in held.order_by().values_list("worker", flat=True).distinct() if not workers.is_alive(w)}
    lost = 0
    for attempt in held.filter(worker__in=dead).select_related("run"):
        with transaction.atomic():
            changed = Attempt.objects.filter(pk=attempt.pk, status=Attempt.Status.RUNNING).update(
                status=Attempt.Status.LOST,
                error_class=errors.SYSTEM,
                error=f"worker {attempt.worker} stopped during the attempt",
                finished_at=now,
                in_worker=False,
            )
            if not changed:
                continue
            run = Run.objects.select_for_update(of=("self",)).select_related("job").get(pk=attempt.run_id)
            if run.status != Run.Status.RUNNING:
                continue
            run.status = Run.Status.LOST
            run.attempts += 1
            run.error_class = errors.SYSTEM
            run.error = (
                f"worker {attempt.worker} stopped during attempt {attempt.number}; it may have partly run"
            )
            run.finished_at = now
            run.save()
            queue.finished(run)
            lost += 1
            log.warning("run %s lost: worker %s stopped", run.pk, attempt.worker)
    return lost


def time_out_running(now: datetime) -> tuple[int, int]:
    """Attempts past their run's timeout + grace that no live worker holds: reconcile or fail."""
    grace = timedelta(seconds=settings.AGENTFLOW_RUN_TIMEOUT_GRACE_SECONDS)
    lease = timedelta(seconds=settings.AGENTFLOW_WORKER_LEASE_SECONDS)
    timed_out = reconciled = 0
    for attempt in Attempt.objects.filter(status=Attempt.Status.RUNNING).select_related("run"):
        run = attempt.run
        deadline = attempt.started_at + timedelta(seconds=run.timeout_seconds) + grace
        if now < deadline:
            continue
        if attempt.in_worker and workers.is_alive(attempt.worker) and now < deadline + lease:
            # The worker is still inside start(): it settles the attempt itself. A lease past
            # the deadline, the flag is stale (its clearing write failed, or the action ignores
            # its timeout): settle it here; complete_attempt is first-wins, a late result is a no-op.
            continue
        spec = actions.find_action(run.kind)
        ctx = AttemptContext(run=run, attempt=attempt, prompt=run.prompt, params=run.params, input=run.input)
        outcome: Finished | None = None
        if spec is not None and spec.reconcile is not None:
            try:
                outcome = spec.reconcile(ctx)
            except Exception:
                log.warning("run %s: reconcile failed", run.pk, exc_info=True)
        if outcome is not None:
            if queue.complete_attempt(attempt.pk, outcome) is not None:
                reconciled += 1
            continue
        # Settle first, then cancel: the cancel's own terminal event (an agent run's "aborted",
        # within ~100 ms) must find the attempt settled, or it would win and end the run aborted
        # (final) instead of a timeout retried by the policy.
        timeout = Finished("failed", errors.TIMEOUT, f"no result within {run.timeout_seconds}s")
        if queue.complete_attempt(attempt.pk, timeout) is not None:
            timed_out += 1
        if spec is not None and spec.cancel is not None:
            try:
                spec.cancel(ctx)
            except Exception:
                log.warning("run %s: cancel after timeout failed", run.pk, exc_info=True)
    return timed_out, reconciled


def tick(now: datetime | None = None) -> TickReport:
    now = now or timezone.now()
    report = TickReport()
    report.stopped = stops.sweep()
    conditions.sweep()
    report.promoted, report.parked = promote_due(now)
    report.lost = mark_dead_workers_lost(now)
    report.timed_out, report.reconciled = time_out_running(now)
    report.redispatched = redispatch_stale(now)
    report.notifications = delivery.redispatch_due(now)
    report.results = results.redispatch_due(now)
    return report
