"""Celery tasks: thin wrappers. Beat fires ``run_batch(batch)``; a per-target batch fans out one
``run_batch_for(batch, target_id)`` per target of its scope, so several workers share the load."""

from __future__ import annotations

import logging

from celery import shared_task

from . import queue, registry, runner
from . import tick as ticking

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


@shared_task(name="scheduler.tasks.dispatch", ignore_result=True)
def dispatch() -> None:
    """A wake-up: start the next run the queue selects (not a run named by the message)."""
    queue.start_next()


@shared_task(name="scheduler.tasks.tick", ignore_result=True)
def tick() -> None:
    report = ticking.tick()
    if any(vars(report).values()):
        log.info("tick: %s", ", ".join(f"{k} {v}" for k, v in vars(report).items() if v))
