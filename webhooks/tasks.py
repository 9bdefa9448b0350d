from __future__ import annotations

from celery import shared_task

from . import retention


@shared_task(name="webhooks.tasks.prune_deliveries", ignore_result=True)
def prune_deliveries() -> int:
    """Beat's hourly ``webhooks-prune`` entry: the delivery log's retention."""
    return retention.prune()
