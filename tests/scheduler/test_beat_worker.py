"""The real thing: ``celery beat`` (DatabaseScheduler) and a ``celery worker`` as subprocesses,
real Redis, the test database and the real gateway; BATCH-001 set to every second.

The subprocesses use this test's Redis prefix (locks, metrics) and a broker database of their
own, so a developer's running stack or a concurrent test run never takes our tasks.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from fleet import batches
from scheduler.models import BatchRun
from scheduler.schedules import ensure_schedules
from tests.support.celery import celery_env, logs, start_celery, start_worker
from tests.support.gateway import wait_for
from tests.support.processes import stop_group

BROKER_DB = 13  # a Redis database for this test's broker queues only


def broker_url() -> str:
    parts = urlsplit(settings.REDIS_URL)
    return urlunsplit(parts._replace(path=f"/{BROKER_DB}"))


@pytest.mark.gateway
@pytest.mark.django_db(transaction=True)
def test_beat_and_a_worker_run_session_polling_on_its_schedule(gateway_row, redis_prefix, tmp_path):
    ensure_schedules()
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.exclude(name="BATCH-001 Session polling").update(enabled=False)
    polling = PeriodicTask.objects.get(name="BATCH-001 Session polling")
    polling.interval = every_second
    polling.save()
    assert gateway_row.enabled

    env = celery_env(redis_prefix, broker_url())
    worker = start_worker(env, tmp_path / "worker.log", redis_prefix)
    beat = start_celery(
        [
            "beat",
            "-S",
            "django_celery_beat.schedulers:DatabaseScheduler",
            "-l",
            "INFO",
            "--max-interval",
            "1",
        ],
        env,
        tmp_path / "beat.log",
    )
    try:
        runs = BatchRun.objects.filter(batch=batches.SESSION_POLLING, target_id=gateway_row.pk)
        try:
            # Finished ones: the newest may still be running when the third is written.
            wait_for(
                lambda: runs.exclude(status="running").count() >= 3,
                timeout=30,
                interval=0.5,
                what="three finished BATCH-001 runs",
            )
        except AssertionError:
            raise AssertionError(
                f"beat and worker did not run BATCH-001 within 30 s\n{logs(tmp_path)}"
            ) from None
        statuses = set(runs.exclude(status="running").values_list("status", flat=True))
        assert "ok" in statuses, list(runs.values_list("status", "error"))
        assert statuses <= {"ok", "skipped"}
        assert all(run.duration_ms > 0 for run in runs)
        # only the enabled schedule ran
        assert not BatchRun.objects.exclude(batch=batches.SESSION_POLLING).exists()
    finally:
        stop_group(beat)
        stop_group(worker)
    assert "Sending due task BATCH-001 Session polling" in (tmp_path / "beat.log").read_text()
    assert "[BATCH-001] Session polling:" in (tmp_path / "worker.log").read_text()
