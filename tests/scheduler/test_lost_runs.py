"""A run is a row from its start, its lock lives only as long as its worker does, and a run whose
worker died is marked lost; the killed worker's task message comes back (acks_late) and runs.

The end-to-end test kills a real ``celery worker`` (solo pool: the task runs in the main process)
with SIGKILL in the middle of a run."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from agentflow.celery import app
from agentflow.lib.locks import holder, lease
from agentflow.lib.redis import get_redis, key
from fleet import batches
from scheduler import runner, tasks
from scheduler.models import BatchRun, Run
from scheduler.runner import Outcome
from tests.support.celery import celery_env, logs, start_celery
from tests.support.factories import make_gateway
from tests.support.gateway import wait_for
from tests.support.processes import stop_group

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

LEASE = 2
SLOW = "TEST-SLOW"  # tests/support/slow_batch.py, registered in the worker only (-I)


@pytest.fixture
def short_lease(settings):
    settings.AGENTFLOW_BATCH_LEASE_SECONDS = LEASE
    return LEASE


# --- the row from the start ----------------------------------------------------------------------


def test_a_run_is_recorded_as_running_while_it_works(redis_prefix, short_lease):
    gateway = make_gateway("alpha")
    seen = []

    def look(_gateway):
        seen.append(BatchRun.objects.values_list("status", "worker", "lock_token").get())
        return Outcome("done", {"n": 1})

    run = runner.run(batches.SESSION_POLLING, gateway, look)
    status, worker, token = seen[0]
    assert status == "running"
    assert worker.endswith(f":{os.getpid()}")
    assert len(token) == 32
    assert BatchRun.objects.get() == run
    run.refresh_from_db()
    assert (run.status, run.counts) == ("ok", {"n": 1})
    assert run.heartbeat_at is not None


def test_the_lease_outlives_its_ttl_while_the_holder_lives_and_frees_at_the_end(redis_prefix):
    beats = []
    with lease("TEST", "x", 0.6, on_renew=lambda: beats.append(1)) as held:
        assert held.acquired
        time.sleep(1.5)  # 2.5 ttls: without renewals the key would be gone
        assert holder("TEST", "x") == held.token
    assert len(beats) >= 3
    assert holder("TEST", "x") is None


def test_a_stuck_heartbeat_does_not_delay_the_renewals(redis_prefix):
    # e.g. SQLite's write lock held by the batch itself while the heartbeat wants to write
    with lease("TEST", "z", 0.6, on_renew=lambda: time.sleep(3)) as held:
        time.sleep(1.8)  # three ttls
        assert holder("TEST", "z") == held.token
        assert not held.lost


def test_a_lease_held_too_long_stops_being_renewed(redis_prefix):
    with lease("TEST", "y", 0.5, hold_max=0.6) as held:
        time.sleep(1.6)
        assert holder("TEST", "y") is None  # a hung holder frees it after hold_max + ttl
    assert held.acquired


# --- the detector ---------------------------------------------------------------------------------


def running_row(token: str, heartbeat_age: float, **fields) -> BatchRun:
    now = timezone.now()
    return BatchRun.objects.create(
        batch=batches.HISTORY_CLEANUP,
        status=BatchRun.Status.RUNNING,
        started_at=now - timedelta(seconds=heartbeat_age + 5),
        heartbeat_at=now - timedelta(seconds=heartbeat_age),
        worker="host-a:4242",
        lock_token=token,
        **fields,
    )


def test_a_run_without_heartbeat_nor_lock_is_marked_lost_once(redis_prefix, short_lease):
    dead = running_row("dead-token", heartbeat_age=LEASE + 1)
    assert [r.pk for r in runner.mark_lost()] == [dead.pk]
    dead.refresh_from_db()
    assert dead.status == "lost"
    assert "worker host-a:4242 stopped" in dead.error
    assert dead.duration_ms == pytest.approx(5000, abs=50)  # from start to its last heartbeat
    assert runner.mark_lost() == []


def test_a_run_whose_worker_still_holds_its_lock_is_not_lost(redis_prefix, short_lease):
    get_redis().set(key("lock", batches.HISTORY_CLEANUP, "global"), "live-token", ex=30)
    slow_heartbeat = running_row("live-token", heartbeat_age=LEASE + 1)
    fresh = running_row("other", heartbeat_age=0)
    assert runner.mark_lost() == []
    assert set(BatchRun.objects.values_list("status", flat=True)) == {"running"}
    assert slow_heartbeat.pk and fresh.pk


def test_the_next_run_marks_a_dead_run_lost_and_is_not_skipped(redis_prefix, short_lease):
    dead = running_row("dead-token", heartbeat_age=LEASE + 1)
    run = runner.run(batches.HISTORY_CLEANUP, None, lambda _t: Outcome("0 rows", {}))
    assert run.status == "ok"
    dead.refresh_from_db()
    assert dead.status == "lost"


def test_the_api_and_the_page_show_running_and_lost(redis_prefix, short_lease, client, django_user_model):
    user = django_user_model.objects.create_user("op", password="pw-op-1234")
    client.force_login(user)
    running_row("dead-token", heartbeat_age=LEASE + 1)
    runner.mark_lost()
    running_row("x", heartbeat_age=0, target_name="")
    page = client.get("/batches/")
    assert page.status_code == 200
    body = page.content.decode()
    assert 'data-status="lost"' in body and 'data-status="running"' in body
    api = client.get("/api/v1/batches/")
    assert api.status_code == 200
    cleanup = next(b for b in api.json()["results"] if b["batch"] == batches.HISTORY_CLEANUP)
    assert cleanup["last_run"]["status"] == "running"


# --- a real worker killed mid-run ----------------------------------------------------------------


@pytest.fixture
def own_queue(redis_prefix):
    previous = app.conf.task_default_queue
    app.conf.task_default_queue = redis_prefix
    try:
        yield redis_prefix
    finally:
        app.conf.task_default_queue = previous
        with app.connection_for_write() as connection:
            connection.default_channel.client.delete(redis_prefix, f"_kombu.binding.{redis_prefix}")


def slow_worker(
    redis_prefix: str,
    log,
    sleep_s: float | str,
    pool: tuple[str, ...] = ("--pool", "solo"),
    lease_s: int = LEASE,
):
    env = {
        **celery_env(redis_prefix, app.conf.broker_url),
        "AGENTFLOW_BATCH_LEASE_SECONDS": str(lease_s),
        "AGENTFLOW_CELERY_VISIBILITY_TIMEOUT": "3",
        "AGENTFLOW_TEST_SLOW_SECONDS": str(sleep_s),
    }
    args = ["worker", *pool, "-Q", redis_prefix, "--without-gossip", "--without-mingle"]
    return start_celery([*args, "-I", "tests.support.slow_batch", "-l", "INFO"], env, log)


@pytest.mark.django_db(transaction=True)  # the worker subprocess writes the runs
def test_a_worker_killed_mid_run_leaves_a_lost_run_a_free_lock_and_its_task_redelivered(
    own_queue, redis_prefix, short_lease, tmp_path
):
    first = slow_worker(redis_prefix, tmp_path / "worker-1.log", sleep_s=60)
    second = None
    try:
        tasks.run_batch.delay(SLOW)
        try:
            row = wait_for(
                lambda: BatchRun.objects.filter(batch=SLOW, status="running").first(),
                timeout=30,
                what="the slow run to start",
            )
        except AssertionError:
            raise AssertionError(f"the worker did not start the run\n{logs(tmp_path)}") from None
        assert row.worker.endswith(f":{first.pid}")  # the worker's main process runs it (solo)
        assert holder(SLOW, "global") == row.lock_token
        time.sleep(LEASE)  # a heartbeat or two on the row
        row.refresh_from_db()
        assert row.heartbeat_at > row.started_at

        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        killed = time.monotonic()

        # The lock frees within a lease (not the batch's 600 s lock_ttl)...
        wait_for(lambda: holder(SLOW, "global") is None, timeout=LEASE + 2, interval=0.1, what="the lock")
        freed_after = time.monotonic() - killed
        assert freed_after <= LEASE + 1.5
        # ...and the detector marks the run lost.
        wait_for(lambda: runner.mark_lost(), timeout=LEASE + 2, interval=0.2, what="the run marked lost")
        row.refresh_from_db()
        assert row.status == "lost"
        assert row.error == f"worker {row.worker} died (its process is gone): the run did not finish"
        # ...and so is its Run in the runs table (kind "batch"), like any other lost run.
        lost_run = Run.objects.get(pk=row.run_id)
        assert (lost_run.kind, lost_run.status, lost_run.error) == ("batch", "lost", row.error)

        # The task message was not acknowledged: a new worker gets it back and the run completes.
        second = slow_worker(redis_prefix, tmp_path / "worker-2.log", sleep_s=0.2)
        try:
            done = wait_for(
                lambda: BatchRun.objects.filter(batch=SLOW, status="ok").first(),
                timeout=30,
                what="the redelivered run",
            )
        except AssertionError:
            raise AssertionError(f"the task was not redelivered\n{logs(tmp_path)}") from None
        assert done.worker.endswith(f":{second.pid}")
        # The runner settles the Run just after it writes the BatchRun (two writes, not one):
        # wait for it rather than read between them.
        wait_for(
            lambda: Run.objects.get(pk=done.run_id).status == "succeeded",
            timeout=10,
            interval=0.1,
            what="the redelivered run's Run settled",
        )
        assert Run.objects.filter(kind="batch").count() == 2
        assert not BatchRun.objects.filter(batch=SLOW, status="skipped").exists()
        assert BatchRun.objects.filter(batch=SLOW).count() == 2
    finally:
        stop_group(first)
        if second is not None:
            stop_group(second)


@pytest.mark.django_db(transaction=True)
def test_a_pool_process_killed_mid_run_has_its_task_requeued_and_run_at_once(
    own_queue, redis_prefix, short_lease, tmp_path
):
    """The OOM killer's usual victim: a prefork pool process. The worker's main process requeues
    its task (reject_on_worker_lost) and the next run finds the dead holder's lock released."""
    seconds = tmp_path / "sleep"
    seconds.write_text("60")
    pool = ("--pool", "prefork", "--concurrency", "1")
    # A lease longer than the pool's restart: the requeued task must not wait for the dead
    # holder's lock to expire (it would be skipped: the lock is released because its pid is gone).
    worker = slow_worker(redis_prefix, tmp_path / "worker.log", f"@{seconds}", pool=pool, lease_s=20)
    try:
        tasks.run_batch.delay(SLOW)
        try:
            row = wait_for(
                lambda: BatchRun.objects.filter(batch=SLOW, status="running").first(),
                timeout=30,
                what="the slow run to start",
            )
        except AssertionError:
            raise AssertionError(f"the worker did not start the run\n{logs(tmp_path)}") from None
        child = int(row.worker.rpartition(":")[2])
        assert child != worker.pid  # a pool process runs it, not the main process
        seconds.write_text("0.2")
        os.kill(child, signal.SIGKILL)
        killed = time.monotonic()
        try:
            done = wait_for(
                lambda: BatchRun.objects.filter(batch=SLOW, status="ok").first(),
                timeout=20,
                what="the requeued run",
            )
        except AssertionError:
            raise AssertionError(f"the task was not requeued\n{logs(tmp_path)}") from None
        assert time.monotonic() - killed < 15  # not after the lease, nor a visibility timeout
        row.refresh_from_db()
        assert row.status == "lost" and "died (its process is gone)" in row.error
        assert done.worker != row.worker
        assert not BatchRun.objects.filter(batch=SLOW, status="skipped").exists()
        assert worker.poll() is None  # the worker itself lived on
    finally:
        stop_group(worker)


def test_celery_is_configured_to_lose_no_task(settings):
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1
    options = app.conf.broker_transport_options
    assert options["visibility_timeout"] == 900
    assert options["unacked_key"].startswith(settings.REDIS_PREFIX)
