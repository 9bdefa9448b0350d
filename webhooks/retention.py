"""The delivery log's retention: rows older than AGENTFLOW_WEBHOOK_RETENTION_DAYS are deleted in
bounded batches (:func:`agentflow.lib.retention.delete_before`), hourly by beat."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from agentflow.lib.retention import delete_before

from .models import Delivery


def prune(now: datetime | None = None, *, batch_size: int = 500) -> int:
    cutoff = (now or timezone.now()) - timedelta(days=settings.AGENTFLOW_WEBHOOK_RETENTION_DAYS)
    return delete_before(Delivery, "received_at", cutoff, batch_size=batch_size)
