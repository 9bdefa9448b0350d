"""scheduler.tasks: beat's ``run_batch`` fans a per-gateway batch out to every enabled gateway,
one message each, which a real worker runs; the cleanup runs once, globally, in the task itself.
The tasks are thin wrappers, called here as functions; the fan-out goes through the real broker
to a real ``celery worker`` (tests/scheduler/test_beat_worker.py adds beat)."""

from __future__ import annotations

import pytest

from agentflow.celery import app
from fleet import batches
from scheduler import tasks
from scheduler.models import BatchRun
from tests.support.celery import celery_env, logs, queued_tasks, start_worker
from tests.support.factories import make_gateway
from tests.support.gateway import wait_for
from tests.support.ports import closed_url
from tests.support.processes import stop_group

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


@pytest.fixture
def own_queue(redis_prefix):
    """Messages this process queues go to a broker queue named after the test's Redis prefix
    (the default queue of a worker started with that prefix), on the app's own broker."""
    previous = app.conf.task_default_queue
    app.conf.task_default_queue = redis_prefix
    try:
        yield redis_prefix
    finally:
        app.conf.task_default_queue = previous
        with app.connection_for_write() as connection:  # the broker's own client, whatever its URL
            client = connection.default_channel.client
            client.delete(redis_prefix, f"_kombu.binding.{redis_prefix}")


@pytest.mark.django_db(transaction=True)  # the worker subprocess reads the gateways and writes the runs
def test_it_runs_a_per_gateway_batch_once_for_each_enabled_gateway(own_queue, redis_prefix, tmp_path):
    alpha = make_gateway("alpha", url=closed_url())
    beta = make_gateway("beta", url=closed_url())
    make_gateway("off", url=closed_url(), enabled=False)

    tasks.run_batch(batches.CHAT_POLLING)

    # One message per enabled gateway is waiting on the broker, and nothing ran in this process.
    with app.connection_for_write() as connection:
        queued = queued_tasks(connection.default_channel.client, own_queue)
    assert sorted(queued) == [
        ("scheduler.tasks.run_batch_for", [batches.CHAT_POLLING, alpha.pk]),
        ("scheduler.tasks.run_batch_for", [batches.CHAT_POLLING, beta.pk]),
    ]
    assert not BatchRun.objects.exists()

    # A real worker takes them: no open panel means no gateway call, so closed ports are fine.
    worker = start_worker(celery_env(redis_prefix, app.conf.broker_url), tmp_path / "worker.log", own_queue)
    try:
        runs = BatchRun.objects.filter(batch=batches.CHAT_POLLING)
        try:
            wait_for(lambda: runs.count() >= 2, timeout=60, interval=0.5, what="two BATCH-003 runs")
        except AssertionError:
            raise AssertionError(f"the worker did not run the fan-out\n{logs(tmp_path)}") from None
    finally:
        stop_group(worker)
    assert sorted(r.target_name for r in runs) == [alpha.name, beta.name]
    assert {r.status for r in runs} == {"ok"}


def test_it_runs_the_cleanup_once_without_a_gateway(own_queue, redis_prefix):
    make_gateway("alpha", url=closed_url())
    tasks.run_batch(batches.HISTORY_CLEANUP)
    run = BatchRun.objects.get()
    assert (run.batch, run.target_id, run.status) == ("BATCH-004", None, "ok")
    with app.connection_for_write() as connection:  # run in the task itself: nothing was queued
        assert queued_tasks(connection.default_channel.client, own_queue) == []


def test_an_unknown_batch_is_refused(redis_prefix):
    with pytest.raises(ValueError, match="unknown batch"):
        tasks.run_batch("BATCH-999")


def test_a_gateway_disabled_or_deleted_meanwhile_is_not_run(redis_prefix):
    off = make_gateway("off", url=closed_url(), enabled=False)
    tasks.run_batch_for_gateway(batches.SESSION_POLLING, off.pk)
    tasks.run_batch_for_gateway(batches.SESSION_POLLING, 99999)
    assert not BatchRun.objects.exists()


def test_a_global_batch_has_no_targets_to_run_for(redis_prefix):
    with pytest.raises(ValueError, match="global batch"):
        tasks.run_batch_for(batches.HISTORY_CLEANUP, 1)


def test_the_task_names_are_the_ones_the_schedules_use():
    assert tasks.run_batch.name == "scheduler.tasks.run_batch"
    assert tasks.run_batch_for.name == "scheduler.tasks.run_batch_for"
    assert tasks.run_batch_for_gateway.name == "scheduler.tasks.run_batch_for_gateway"
