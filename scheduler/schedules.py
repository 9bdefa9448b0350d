"""The five batch schedules, created idempotently in django-celery-beat.

django-celery-beat's ``PeriodicTask`` rows are the source of truth once created: operators
change intervals, disable a batch or run it now in the admin, and beat's DatabaseScheduler
picks the change up without a restart. ``ensure_schedules`` only creates what is missing
(``reset=True`` restores the defaults).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from .models import Batch


@dataclass(frozen=True)
class BatchSpec:
    batch: str
    every_seconds: int | None = None
    crontab: tuple[str, str] | None = None  # (minute, hour) in UTC
    description: str = ""

    @property
    def task_name(self) -> str:
        return f"{self.batch} {Batch(self.batch).label}"


SPECS = (
    BatchSpec(
        Batch.SESSION_POLLING, every_seconds=10, description="Session states (active / idle / offline)"
    ),
    BatchSpec(Batch.CONFIG_POLLING, every_seconds=30, description="Config changes and the org chart"),
    BatchSpec(
        Batch.CHAT_POLLING, every_seconds=5, description="New chat messages, only for open chat panels"
    ),
    BatchSpec(Batch.HISTORY_CLEANUP, crontab=("0", "3"), description="Delete old config and chat history"),
    BatchSpec(Batch.HEALTH_CHECK, every_seconds=60, description="Gateway connectivity and latency"),
)
TASK = "scheduler.tasks.run_batch"


@transaction.atomic
def ensure_schedules(reset: bool = False) -> list[tuple[str, bool]]:
    """Create the periodic tasks that are missing; returns (name, created) pairs."""
    results = []
    for spec in SPECS:
        defaults: dict = {"task": TASK, "args": json.dumps([spec.batch]), "description": spec.description}
        if spec.every_seconds:
            interval, _ = IntervalSchedule.objects.get_or_create(
                every=spec.every_seconds, period=IntervalSchedule.SECONDS
            )
            defaults.update(interval=interval, crontab=None)
        else:
            minute, hour = spec.crontab  # type: ignore[misc]
            crontab, _ = CrontabSchedule.objects.get_or_create(
                minute=minute, hour=hour, day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
            )
            defaults.update(crontab=crontab, interval=None)
        task, created = PeriodicTask.objects.get_or_create(name=spec.task_name, defaults=defaults)
        if reset and not created:
            for field, value in {**defaults, "enabled": True}.items():
                setattr(task, field, value)
            task.save()
        results.append((spec.task_name, created))
    return results
