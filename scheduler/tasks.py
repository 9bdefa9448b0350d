"""Celery tasks: thin wrappers. Beat fires ``run_batch(batch)``; a per-target batch fans out one
``run_batch_for(batch, target_id)`` per target of its scope, so several workers share the load."""

from __future__ import annotations

import logging

from celery import shared_task

from . import registry, runner

log = logging.getLogger("agentflow.scheduler")


@shared_task(name="scheduler.tasks.run_batch", ignore_result=True)
def run_batch(batch: str) -> None:
    spec = registry.get(batch)
    if spec.scope is None:
        runner.run(batch, None)
        return
    for target_id in registry.scope(spec.scope).ids():
        run_batch_for.delay(batch, target_id)


@shared_task(name="scheduler.tasks.run_batch_for", ignore_result=True)
def run_batch_for(batch: str, target_id: int) -> None:
    spec = registry.get(batch)
    if spec.scope is None:
        raise ValueError(f"{batch} is a global batch: it has no targets")
    target = registry.scope(spec.scope).load(target_id)
    if target is None:  # deleted or disabled since the message was queued
        return
    runner.run(batch, target)


@shared_task(name="scheduler.tasks.run_batch_for_gateway", ignore_result=True)
def run_batch_for_gateway(batch: str, gateway_id: int) -> None:
    """The name this task had before the batch registry: messages queued by an older worker."""
    run_batch_for(batch, gateway_id)


def queue_batch(batch: str, target_id: int | None = None) -> bool:
    """Queue one run now (e.g. BATCH-002 on a ``config.changed`` event). A broker that is down
    is logged, not raised: the batch's schedule catches up."""
    try:
        if target_id is None:
            run_batch.delay(batch)
        else:
            run_batch_for.delay(batch, target_id)
    except Exception:
        log.warning("could not queue %s for %s (broker down?)", batch, target_id, exc_info=True)
        return False
    return True
