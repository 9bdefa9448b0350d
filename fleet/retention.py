"""The fleet's history retention plan (BATCH-004): config and chat history, health samples.

The deleting itself is :func:`agentflow.lib.retention.delete_before` (bounded batches).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from agentflow.lib.retention import DeleteStats, delete_before

from .models import ChatHistory, ConfigHistory, HealthSample


@dataclass
class CleanupResult(DeleteStats):
    config: int = 0
    chat: int = 0
    other: int = 0


def cleanup_history(
    *,
    config_days: int,
    chat_days: int,
    batch_size: int,
    dry_run: bool = False,
    progress: Callable[[str, int], None] | None = None,
    now: datetime | None = None,
) -> CleanupResult:
    if config_days < 0 or chat_days < 0:
        raise ValueError(f"retention days must not be negative (config {config_days}, chat {chat_days})")
    now = now or timezone.now()
    result = CleanupResult()
    # (result field, model, time field, retention); health samples feed a one-hour sparkline,
    # a day is kept for context.
    plan = (
        ("config", ConfigHistory, "created_at", timedelta(days=config_days)),
        ("chat", ChatHistory, "timestamp", timedelta(days=chat_days)),
        ("other", HealthSample, "checked_at", timedelta(days=1)),
    )
    for name, model, field, keep in plan:
        report = (lambda n, name=name: progress(name, n)) if progress and name != "other" else None
        deleted = delete_before(
            model, field, now - keep, batch_size=batch_size, dry_run=dry_run, progress=report, stats=result
        )
        setattr(result, name, deleted)
    return result
