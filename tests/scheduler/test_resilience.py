"""Resilience of the engine (issue 9 §7) with real processes: Redis (broker and app, a private
redis-server without persistence) restarted while runs are queued: the messages are gone with it,
a worker started during the outage connects once Redis is back, and the tick re-dispatches the
queued runs, which start within 10 s of Redis answering.

The engine's tick (beat's job in production) is called by the test's poll loop. Also here: a
timed-out run whose cancel reports "aborted" is retried as a timeout (a bug these tests found).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import kombu.pools
import pytest
from django.utils import timezone

from agentflow.celery import app
from scheduler import actions, queue, tick
from scheduler.actions import ActionSpec, Finished, Started
from scheduler.models import Attempt, Run
from tests.support.celery import celery_env, engine_queues, logs, start_worker
from tests.support.processes import stop_group
from tests.support.redis import private_redis

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


@contextlib.contextmanager
def broker_at(url: str) -> Iterator[None]:
    """This process's Celery app sends to ``url`` (its connection and producer pools rebuilt)."""
    previous = app.conf.broker_url

    def rebuild() -> None:
        # kombu keeps producer pools in a module-wide registry keyed by connection: closing
        # them without clearing it left later tests "Acquire on closed pool". reset() does both.
        app.pool.force_close_all()
        kombu.pools.reset()
        app._pool = None
        app.amqp._producer_pool = None

    rebuild()
    app.conf.broker_url = url
    try:
        yield
    finally:
        rebuild()
        app.conf.broker_url = previous


@pytest.fixture
def own_queues(redis_prefix):
    previous = app.conf.task_default_queue
    app.conf.task_default_queue = redis_prefix
    try:
        yield redis_prefix
    finally:
        app.conf.task_default_queue = previous


def test_runs_queued_when_redis_restarts_resume_within_10_s_of_redis_answering(
    own_queues, redis_prefix, settings, tmp_path: Path
):
    settings.AGENTFLOW_REDISPATCH_AFTER_SECONDS = 1
    shared = {name: getattr(settings, name) for name in ("REDIS_URL", "CACHES", "CHANNEL_LAYERS")}
    try:
        first_started, answered, ids = outage(settings, redis_prefix, tmp_path)
    finally:
        for name, value in shared.items():  # back to the shared Redis (redis_prefix cleans it up)
            setattr(settings, name, value)
    assert first_started - answered <= 10, f"the first run started {first_started - answered:.1f} s after"
    assert {Run.objects.get(pk=pk).attempt_set.count() for pk in ids} == {1}


def outage(settings, redis_prefix: str, tmp_path: Path) -> tuple[float, float, list[int]]:
    """20 runs queued, Redis killed, a worker started, Redis back: when it answered, when the
    first run started."""
    with private_redis(settings, tmp_path) as server, broker_at(server.url):
        ids = [queue.enqueue(kind="noop").pk for _ in range(20)]
        client = app.connection_for_write().default_channel.client
        # wake-ups are on the private Redis (how many: coalescing reads the length on REDIS_URL's
        # server, the shared one here, so it does not apply; what matters is below: every run
        # starts once after the outage)
        assert client.llen(f"{redis_prefix}.normal") >= 1
        server.kill()  # no persistence: the messages die with it
        env = {**celery_env(redis_prefix, server.url), "REDIS_URL": server.url}
        worker = start_worker(env, tmp_path / "worker.log", redis_prefix)
        try:
            deadline = time.monotonic() + 60
            log = tmp_path / "worker.log"
            while "Cannot connect to redis" not in log.read_text():
                assert worker.poll() is None and time.monotonic() < deadline, logs(tmp_path)
                time.sleep(0.25)
            assert Run.objects.filter(pk__in=ids, status=Run.Status.QUEUED).count() == 20
            server.start()
            answered = time.monotonic()
            first_started = None
            deadline = answered + 60
            while Run.objects.filter(pk__in=ids, status=Run.Status.SUCCEEDED).count() < 20:
                assert time.monotonic() < deadline, (
                    f"runs {list(Run.objects.filter(pk__in=ids).values_list('status', flat=True))}\n"
                    f"{logs(tmp_path)}"
                )
                tick.tick()
                if first_started is None and Attempt.objects.filter(run_id__in=ids).exists():
                    first_started = time.monotonic()
                time.sleep(0.5)
            if first_started is None:
                first_started = time.monotonic()
        finally:
            stop_group(worker)
            with contextlib.suppress(Exception):
                for name in engine_queues(redis_prefix):
                    client.delete(name, f"_kombu.binding.{name}")
    return first_started, answered, ids


def test_a_timed_out_run_whose_cancel_reports_aborted_is_retried_as_a_timeout(settings, redis_prefix):
    """The tick's timeout cancels the remote work; the cancel's own terminal event (an agent
    run's "aborted", heard by the listener within ~100 ms, here at once) must not turn our
    timeout into a final "aborted": the attempt is settled as a timeout first (found with the
    gateway restart scenario, where timed-out agent runs ended aborted instead of retried)."""
    settings.AGENTFLOW_RUN_TIMEOUT_GRACE_SECONDS = 0

    def cancel(ctx):  # what the listener does when the gateway confirms the abort
        queue.complete_attempt(ctx.attempt.pk, Finished("aborted", "aborted", "aborted by the gateway"))

    actions.register_action(
        ActionSpec("remote-abortable", "Remote", start=lambda ctx: Started(session_key="s1"), cancel=cancel)
    )
    try:
        run = queue.enqueue(kind="remote-abortable", timeout_seconds=1, max_attempts=3)
        queue.start_next("test-worker:1")
        assert tick.time_out_running(timezone.now() + timedelta(seconds=2)) == (1, 0)
    finally:
        actions.unregister_action("remote-abortable")
    run.refresh_from_db()
    assert (run.status, run.error_class, run.attempts) == ("scheduled", "timeout", 1), run.error
