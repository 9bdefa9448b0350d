"""Celery tasks: thin wrappers. Beat fires ``run_batch(batch)``; per-gateway batches fan out
one ``run_batch_for_gateway`` per enabled gateway so several workers share the load."""

from celery import shared_task

from dashboard.models import Gateway

from . import batches, runner
from .models import Batch

PER_GATEWAY = {
    Batch.SESSION_POLLING: (batches.poll_sessions, 60),
    Batch.CONFIG_POLLING: (batches.poll_config, 120),
    Batch.CHAT_POLLING: (batches.poll_chats, 60),
    Batch.HEALTH_CHECK: (batches.check_health, 60),
}


@shared_task(name="scheduler.tasks.run_batch", ignore_result=True)
def run_batch(batch: str) -> None:
    if batch == Batch.HISTORY_CLEANUP:
        runner.run(batch, None, batches.cleanup_history, lock_ttl=3600)
        return
    if batch not in PER_GATEWAY:
        raise ValueError(f"unknown batch {batch!r}")
    for gateway_id in Gateway.objects.enabled().values_list("pk", flat=True):
        run_batch_for_gateway.delay(batch, gateway_id)


@shared_task(name="scheduler.tasks.run_batch_for_gateway", ignore_result=True)
def run_batch_for_gateway(batch: str, gateway_id: int) -> None:
    gateway = Gateway.objects.filter(pk=gateway_id, enabled=True).first()
    if gateway is None:
        return
    fn, lock_ttl = PER_GATEWAY[Batch(batch)]
    runner.run(batch, gateway, fn, lock_ttl=lock_ttl)
