"""scheduler.tasks: beat's ``run_batch`` fans a per-gateway batch out to every enabled gateway;
the cleanup runs once, globally. Run eagerly here; tests/scheduler/test_beat_worker.py runs the
real worker and beat."""

from __future__ import annotations

import socket

import pytest

from agentflow.celery import app
from fleet import batches
from fleet.models import Gateway
from scheduler import tasks
from scheduler.models import BatchRun

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


@pytest.fixture
def eager():
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{s.getsockname()[1]}/"


def test_it_runs_a_per_gateway_batch_once_for_each_enabled_gateway(redis_prefix, eager):
    alpha = Gateway.objects.create(name="alpha", url=closed_url())
    beta = Gateway.objects.create(name="beta", url=closed_url())
    Gateway.objects.create(name="off", url=closed_url(), enabled=False)

    tasks.run_batch(batches.CHAT_POLLING)  # no open panel: no gateway call, so closed ports are fine

    runs = BatchRun.objects.filter(batch=batches.CHAT_POLLING)
    assert sorted(r.target_name for r in runs) == [alpha.name, beta.name]
    assert {r.status for r in runs} == {"ok"}


def test_it_runs_the_cleanup_once_without_a_gateway(redis_prefix, eager):
    Gateway.objects.create(name="alpha", url=closed_url())
    tasks.run_batch(batches.HISTORY_CLEANUP)
    run = BatchRun.objects.get()
    assert (run.batch, run.target_id, run.status) == ("BATCH-004", None, "ok")


def test_an_unknown_batch_is_refused(redis_prefix):
    with pytest.raises(ValueError, match="unknown batch"):
        tasks.run_batch("BATCH-999")


def test_a_gateway_disabled_or_deleted_meanwhile_is_not_run(redis_prefix):
    off = Gateway.objects.create(name="off", url=closed_url(), enabled=False)
    tasks.run_batch_for_gateway(batches.SESSION_POLLING, off.pk)
    tasks.run_batch_for_gateway(batches.SESSION_POLLING, 99999)
    assert not BatchRun.objects.exists()


def test_the_task_names_are_the_ones_the_schedules_use():
    assert tasks.run_batch.name == "scheduler.tasks.run_batch"
    assert tasks.run_batch_for_gateway.name == "scheduler.tasks.run_batch_for_gateway"
