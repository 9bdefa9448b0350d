"""Celery tasks: thin wrappers. Beat fires ``run_batch(batch)``; a per-target batch fans out one
``run_batch_for(batch, target_id)`` per target of its scope, so several workers share the load."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import OperationalError
from django.utils import timezone

from . import admission, alert_rules, queue, registry, results, runner
from . import tick as ticking
from .models import Run
from .notifications import delivery

log = logging.getLogger("agentflow.scheduler")


@shared_task(name="scheduler.tasks.run_batch", ignore_result=True)
def run_batch(batch: str, trigger: str = "schedule") -> None:
    """``trigger`` is recorded on the batch's Run: "schedule" from beat, "system" from queue_batch."""
    spec = registry.get(batch)
    if spec.scope is None:
        runner.run(batch, None, trigger=trigger)
        return
    for target_id in registry.scope(spec.scope).ids():
        run_batch_for.delay(batch, target_id, trigger=trigger)


@shared_task(name="scheduler.tasks.run_batch_for", ignore_result=True)
def run_batch_for(batch: str, target_id: int, trigger: str = "schedule") -> None:
    spec = registry.get(batch)
    if spec.scope is None:
        raise ValueError(f"{batch} is a global batch: it has no targets")
    target = registry.scope(spec.scope).load(target_id)
    if target is None:  # deleted or disabled since the message was queued
        return
    runner.run(batch, target, trigger=trigger)


@shared_task(name="scheduler.tasks.run_batch_for_gateway", ignore_result=True)
def run_batch_for_gateway(batch: str, gateway_id: int) -> None:
    """The name this task had before the batch registry: messages queued by an older worker."""
    run_batch_for(batch, gateway_id)


def queue_batch(batch: str, target_id: int | None = None) -> bool:
    """Queue one run now (e.g. BATCH-002 on a ``config.changed`` event). A broker that is down
    is logged, not raised: the batch's schedule catches up."""
    try:
        if target_id is None:
            run_batch.delay(batch, trigger="system")
        else:
            run_batch_for.delay(batch, target_id, trigger="system")
    except Exception:
        log.warning("could not queue %s for %s (broker down?)", batch, target_id, exc_info=True)
        return False
    return True


# --- the execution queue (scheduler/queue.py) ----------------------------------------------------


@shared_task(
    name="scheduler.tasks.dispatch",
    ignore_result=True,
    bind=True,
    autoretry_for=(OperationalError,),  # a busy database: a coalesced wake-up stands for many runs
    default_retry_delay=1,
    max_retries=10,
)
def dispatch(self: Any) -> None:
    """A wake-up: start the next run the queue selects (not a run named by the message). With
    coalesced wake-ups (AGENTFLOW_DISPATCH_PENDING_MAX, on by default), start runs until none
    is eligible, for at most AGENTFLOW_DISPATCH_DRAIN_SECONDS: then the worker's other messages
    get their turn and a fresh wake-up to the same queue carries on. Every start is its own
    claim through the selection policy, so a run queued meanwhile (an urgent one) is chosen by
    the next claim as it would be by a fresh message."""
    if settings.AGENTFLOW_DISPATCH_PENDING_MAX <= 0:
        queue.start_next()
        return
    _started, more = queue.start_runs(time.monotonic() + settings.AGENTFLOW_DISPATCH_DRAIN_SECONDS)
    if more:
        routed = (self.request.delivery_info or {}).get("routing_key") or ""
        priority = routed.rpartition(".")[2]
        queue.send_dispatch(priority if priority in queue.PRIORITIES else "normal")


@shared_task(name="scheduler.tasks.tick", ignore_result=True)
def tick() -> None:
    report = ticking.tick()
    if any(vars(report).values()):
        log.info("tick: %s", ", ".join(f"{k} {v}" for k, v in vars(report).items() if v))


@shared_task(name="scheduler.tasks.fire_schedules", ignore_result=True)
def fire_schedules() -> None:
    """Beat's ``scheduler-schedules`` entry and the ETA wake-ups it arms: fire the due schedule
    triggers (scheduler/triggers/schedule.py), then arm the next wake-up."""
    from .triggers import schedule

    report = schedule.fire_due()
    schedule.arm()
    counts = {k: v for k, v in vars(report).items() if k != "late_ms" and v}
    if counts:
        log.info("schedules: %s", ", ".join(f"{k} {v}" for k, v in counts.items()))


@shared_task(name="scheduler.tasks.evaluate_alerts", ignore_result=True)
def evaluate_alerts() -> None:
    """Beat's ``scheduler-alerts`` entry (AGENTFLOW_ALERT_INTERVAL_SECONDS): one pass of the rules."""
    report = alert_rules.evaluate()
    if report.raised or report.reopened or report.resolved or report.skipped:
        log.info(
            "alerts: %s raised, %s re-opened, %s resolved, %s open seen again%s",
            report.raised,
            report.reopened,
            report.resolved,
            report.touched,
            f"; could not evaluate {', '.join(report.skipped)}" if report.skipped else "",
        )


@shared_task(
    name="scheduler.tasks.wake",
    ignore_result=True,
    autoretry_for=(OperationalError,),  # a busy database: the pace's chain must not break
    default_retry_delay=1,
    max_retries=10,
)
def wake(run_id: int | None = None, at: float | None = None, member: str = "") -> None:
    """A wait for admission is over: a run's (``run_id``, refused by the rate limiter or a
    breaker) or a key's until its next slot (``at``, epoch seconds: a run of the key took the
    slot before and more wait, scheduler/queue.py ``_pace_next``). Queue the due runs, then
    start one run of the hold ``member`` (the oldest eligible run of the key): its admission
    holds the key again and sends the wake-up of the following slot, so the pace goes on
    without the tick and without a second start that would come only after this one's action
    (a slow ``chat.send``) and take a slot late. A message without a member (older ones, a wait
    for Redis) starts the next run the queue selects."""
    early = 0.0
    if at is not None:
        early = at - time.time()
    elif run_id is not None:
        due = Run.objects.filter(pk=run_id, status=Run.Status.SCHEDULED).values_list("run_after", flat=True)
        early = (due[0] - timezone.now()).total_seconds() if due and due[0] else 0.0
    if 0 < early < 1:  # a countdown a little ahead of the database's clock
        time.sleep(early)
    ticking.promote_due(timezone.now())
    queue.start_next(scope=admission.member_q(member) if member else None)


# --- notifications (scheduler/notifications/delivery.py) -----------------------------------------


@shared_task(name="scheduler.tasks.deliver_notification", ignore_result=True)
def deliver_notification(delivery_id: str) -> None:
    """One attempt of one delivery (a duplicate or early message is a no-op: the attempt claims
    the row); a failure schedules the retry and its countdown message."""
    delivery.deliver(delivery_id)


@shared_task(name="scheduler.tasks.deliver_result", ignore_result=True)
def deliver_result(delivery_id: str) -> None:
    """One attempt of one result action (scheduler/results.py); a failure schedules the retry."""
    results.deliver(delivery_id)
