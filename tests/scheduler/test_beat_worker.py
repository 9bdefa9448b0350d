"""The real thing: ``celery beat`` (DatabaseScheduler) and a ``celery worker`` as subprocesses,
real Redis, the test database and the real gateway; BATCH-001 set to every second.

The subprocesses use this test's Redis prefix (locks, metrics) and a broker database of their
own, so a developer's running stack or a concurrent test run never takes our tasks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from fleet import batches
from scheduler.models import BatchRun
from scheduler.schedules import ensure_schedules
from tests.support.gateway import wait_for

BASE_DIR = Path(settings.BASE_DIR)
CELERY = str(Path(sys.executable).with_name("celery"))
BROKER_DB = 13  # a Redis database for this test's broker queues only


def database_url() -> str:
    """The test database (not the development one) as a DATABASE_URL for the subprocesses."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    if db["ENGINE"].endswith("postgresql"):
        auth = f"{quote(db['USER'] or '')}:{quote(db['PASSWORD'] or '')}@" if db["USER"] else ""
        return f"postgres://{auth}{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    raise AssertionError(f"no DATABASE_URL for {db['ENGINE']}")


def broker_url() -> str:
    parts = urlsplit(settings.REDIS_URL)
    return urlunsplit(parts._replace(path=f"/{BROKER_DB}"))


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            [CELERY, "-A", "agentflow", *args],
            cwd=BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole below
        )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


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

    env = {
        **os.environ,
        "AGENTFLOW_ENV": "test",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": broker_url(),
        "AGENTFLOW_REDIS_PREFIX": redis_prefix,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PYTEST_VERSION", None)
    name = f"aftest-{uuid.uuid4().hex[:8]}@%h"
    worker = start(
        ["worker", "--pool", "solo", "-n", name, "--without-gossip", "--without-mingle", "-l", "INFO"],
        env,
        tmp_path / "worker.log",
    )
    beat = start(
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
            wait_for(lambda: runs.count() >= 3, timeout=30, interval=0.5, what="three BATCH-001 runs")
        except AssertionError:
            logs = "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(tmp_path.glob("*.log")))
            raise AssertionError(f"beat and worker did not run BATCH-001 within 30 s\n{logs}") from None
        statuses = set(runs.values_list("status", flat=True))
        assert "ok" in statuses, list(runs.values_list("status", "error"))
        assert statuses <= {"ok", "skipped"}
        assert all(run.duration_ms > 0 for run in runs)
        # only the enabled schedule ran
        assert not BatchRun.objects.exclude(batch=batches.SESSION_POLLING).exists()
    finally:
        stop(beat)
        stop(worker)
    assert "Sending due task BATCH-001 Session polling" in (tmp_path / "beat.log").read_text()
    assert "[BATCH-001] Session polling:" in (tmp_path / "worker.log").read_text()
