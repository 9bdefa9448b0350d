"""The dispatch path with real Celery workers (subprocesses on the test database and Redis):
runs start from on-commit messages on the priority queues, duplicate messages start nothing
twice, a worker killed mid-run leaves a lost run that never runs again, and a lost message is
re-dispatched by the tick."""

from __future__ import annotations

import os
import signal
import time

import pytest

from agentflow.celery import app
from scheduler import queue, tick
from scheduler.models import Attempt, Run
from tests.support.celery import celery_env, engine_queues, logs, start_worker
from tests.support.gateway import wait_for
from tests.support.processes import stop_group

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


def broker():
    return app.connection_for_write().default_channel.client


def worker_env(redis_prefix: str, **extra: str) -> dict[str, str]:
    return {**celery_env(redis_prefix, app.conf.broker_url), **extra}


def all_done(ids, status="succeeded"):
    return Run.objects.filter(pk__in=ids, status=status).count() == len(ids)


def test_runs_start_from_their_messages_and_duplicates_start_nothing_twice(
    own_queues, redis_prefix, tmp_path, settings
):
    runs = [queue.enqueue(kind="noop", priority=p) for p in ("low", "normal", "high", "urgent", "normal")]
    runs += [queue.enqueue(kind="noop", params={"sleep_ms": 20}) for _ in range(15)]
    # Coalesced wake-ups (the default): the urgent run's message, and at most the pending maximum
    # for the 19 normal, high and low runs (each message starts runs until none is eligible).
    assert broker().llen(f"{redis_prefix}.urgent") == 1
    assert 1 <= broker().llen(f"{redis_prefix}.normal") <= settings.AGENTFLOW_DISPATCH_PENDING_MAX
    queue.send_dispatch("normal", 20)  # duplicates: wake-ups with nothing left to claim
    workers = []  # two worker processes race for the same rows
    try:
        for i in (1, 2):
            workers.append(start_worker(worker_env(redis_prefix), tmp_path / f"worker-{i}.log", redis_prefix))
        ids = [r.pk for r in runs]
        try:
            wait_for(lambda: all_done(ids), timeout=60, what="the runs to succeed")
        except AssertionError:
            raise AssertionError(logs(tmp_path)) from None
        wait_for(lambda: sum(broker().llen(q) for q in engine_queues(redis_prefix)) == 0, 30, what="drained")
    finally:
        for worker in workers:
            stop_group(worker)
    assert Attempt.objects.count() == 20
    assert {r.attempt_set.count() for r in Run.objects.all()} == {1}
    assert {a.worker.split(":")[-1] for a in Attempt.objects.all()} <= {str(w.pid) for w in workers}


@pytest.mark.parametrize("pending_max", [2, 0], ids=["coalesced", "one-message-per-run"])
def test_runs_queued_while_workers_drain_all_start_once_without_the_tick(
    own_queues, redis_prefix, tmp_path, settings, pending_max
):
    """Coalesced wake-ups lose no run: runs are queued one by one while two workers drain (a run
    committed just as a drain finds nothing is the case to get right), no tick runs, and every
    run starts exactly once. The same with one message per run."""
    settings.AGENTFLOW_DISPATCH_PENDING_MAX = pending_max
    env = worker_env(redis_prefix, AGENTFLOW_DISPATCH_PENDING_MAX=str(pending_max))
    workers = [start_worker(env, tmp_path / f"worker-{i}.log", redis_prefix) for i in (1, 2)]
    try:
        ready = lambda: all("ready" in (tmp_path / f"worker-{i}.log").read_text() for i in (1, 2))  # noqa: E731
        wait_for(ready, 60, what="both workers to consume")
        ids = []
        for i in range(150):
            priority = ("normal", "high", "low")[i % 3]
            # 5 ms runs: the queue grows faster than two workers start runs, so wake-ups coalesce
            ids.append(queue.enqueue(kind="noop", priority=priority, params={"sleep_ms": 5}).pk)
            if i % 25 == 24:
                time.sleep(0.3)  # and the drains run dry now and then
        try:
            wait_for(lambda: all_done(ids), timeout=60, what="every run to succeed")
        except AssertionError:
            raise AssertionError(logs(tmp_path)) from None
    finally:
        for worker in workers:
            stop_group(worker)
    assert Attempt.objects.filter(run_id__in=ids).count() == 150
    assert {r.attempt_set.count() for r in Run.objects.filter(pk__in=ids)} == {1}


def test_a_worker_killed_mid_run_leaves_a_lost_run_that_never_runs_again(
    own_queues, redis_prefix, tmp_path, settings
):
    settings.AGENTFLOW_WORKER_LEASE_SECONDS = 2
    env = worker_env(
        redis_prefix, AGENTFLOW_WORKER_LEASE_SECONDS="2", AGENTFLOW_CELERY_VISIBILITY_TIMEOUT="3"
    )
    first = start_worker(env, tmp_path / "worker-1.log", redis_prefix)
    second = None
    try:
        slow = queue.enqueue(kind="noop", params={"sleep_ms": 60_000})
        try:
            attempt = wait_for(
                lambda: Attempt.objects.filter(run=slow).first(), 60, what="the slow run to start"
            )
        except AssertionError:
            raise AssertionError(logs(tmp_path)) from None
        assert attempt.worker.endswith(f":{first.pid}") and attempt.in_worker
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        time.sleep(2.5)  # its liveness key expires
        report = tick.tick()
        assert report.lost == 1
        slow.refresh_from_db()
        assert (slow.status, slow.attempts) == ("lost", 1)
        second = start_worker(env, tmp_path / "worker-2.log", redis_prefix)
        quick = queue.enqueue(kind="noop")
        wait_for(lambda: all_done([quick.pk]), 60, what="a new run on the second worker")
        # the killed worker's unacknowledged message comes back (visibility 3 s, restore every 5 s)
        # and finds nothing to claim: the lost run is not started again
        time.sleep(9)
    finally:
        stop_group(first)
        if second is not None:
            stop_group(second)
    slow.refresh_from_db()
    assert (slow.status, slow.attempt_set.count()) == ("lost", 1)


def test_a_lost_dispatch_message_is_re_dispatched_by_the_tick(own_queues, redis_prefix, tmp_path, settings):
    settings.AGENTFLOW_REDISPATCH_AFTER_SECONDS = 1
    run = queue.enqueue(kind="noop", priority="high")
    assert broker().delete(f"{redis_prefix}.high") == 1  # the message is lost (e.g. a Redis restart)
    worker = start_worker(worker_env(redis_prefix), tmp_path / "worker.log", redis_prefix)
    try:
        time.sleep(2)
        assert Run.objects.get(pk=run.pk).status == "queued"  # nothing woke a worker
        assert tick.tick().redispatched == 1
        wait_for(lambda: all_done([run.pk]), 60, what="the re-dispatched run")
    finally:
        stop_group(worker)
