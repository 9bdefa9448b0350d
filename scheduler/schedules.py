"""The registered batches' schedules, created idempotently in django-celery-beat.

django-celery-beat's ``PeriodicTask`` rows are the source of truth once created: operators
change intervals, disable a batch or run it now in the admin, and beat's DatabaseScheduler
picks the change up without a restart. ``ensure_schedules`` only creates what is missing
(``reset=True`` restores the defaults).
"""

from __future__ import annotations

import json

from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from . import batch_runs, registry

TASK = "scheduler.tasks.run_batch"


@transaction.atomic
def ensure_schedules(reset: bool = False) -> list[tuple[str, bool]]:
    """Create the periodic tasks that are missing; returns (name, created) pairs. The batches'
    system jobs (scheduler/batch_runs.py) are created too when missing."""
    batch_runs.ensure_system_jobs()
    results = []
    for spec in registry.batches():
        defaults: dict = {"task": TASK, "args": json.dumps([spec.id]), "description": spec.description}
        if spec.every_seconds:
            interval, _ = IntervalSchedule.objects.get_or_create(
                every=spec.every_seconds, period=IntervalSchedule.SECONDS
            )
            defaults.update(interval=interval, crontab=None)
        else:
            assert spec.crontab is not None  # BatchSpec allows exactly one of the two schedules
            minute, hour = spec.crontab
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
