"""Admission of queued runs through the shared rate limiter and the circuit breakers (real
Redis, the real database; real worker processes for the pacing): a refused run waits
(scheduled, no attempt, no error), the other runs of its key are held meanwhile, a rate-limit
error backs the provider off, an open breaker holds its runs until a probe closes it; every log
line of a run carries its fields; the run metrics on /metrics."""

from __future__ import annotations

import itertools
import json
import logging
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from agentflow.lib import logcontext
from scheduler import actions, admission, breakers, limits, queue, tick
from scheduler.actions import ActionSpec, Finished
from scheduler.models import Attempt, Run
from tests.scheduler.test_dispatch_worker import broker, worker_env  # noqa: F401
from tests.support.celery import logs, start_worker
from tests.support.gateway import wait_for
from tests.support.processes import stop_group

pytestmark = [pytest.mark.redis]
WORKER = "test-host:1"


def noop(**params) -> Run:
    max_attempts = params.pop("max_attempts", None)
    return queue.enqueue(kind="noop", params=params, max_attempts=max_attempts)


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


# --- the rate limiter ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_under_a_60rpm_budget_the_keys_other_runs_are_held_a_second_in_their_places(redis_prefix):
    limits.set_budget("gateway:gw1", "60rpm")
    first, second, third = (noop(gateway="gw1") for _ in range(3))
    other = noop(gateway="gw2")
    assert queue.start_next(WORKER).pk == first.pk
    # first took the slot: the key's other runs are held until the next one (not claimed, not
    # deferred: no attempt, no error, still queued in their order); the other gateway's starts
    held = admission.held()
    assert 0.9 < held["gateway:gw1"] - time.time() <= 1.0
    assert queue.start_next(WORKER).pk == other.pk
    for run in (second, third):
        run.refresh_from_db()
        assert (run.status, run.attempts, run.attempt_set.count(), run.error_class) == ("queued", 0, 0, "")
    assert queue.start_next(WORKER) is None  # held: nothing is claimed, nothing is refused
    assert limits.status(["gateway:gw1"])[0].rate_rpm == 1  # one request taken
    time.sleep(max(0.0, held["gateway:gw1"] - time.time()) + 0.02)
    assert queue.start_next(WORKER).pk == second.pk  # its place kept: before the third
    second.refresh_from_db()
    assert (second.status, second.attempts, second.attempt_set.count()) == ("succeeded", 1, 1)
    assert "gateway:gw1" in admission.held()  # and the third waits for the slot after


@pytest.mark.django_db
def test_a_run_the_limiter_refuses_waits_scheduled_and_is_not_an_attempt(redis_prefix):
    limits.set_budget("gateway:gw1", "60rpm")
    assert limits.acquire(["gateway:gw1"]).allowed  # another client took the slot: no hold
    run, later = noop(gateway="gw1"), noop(gateway="gw1")
    now = timezone.now()
    assert queue.start_next(WORKER) is None  # refused; the later run is held, not refused too
    run.refresh_from_db()
    later.refresh_from_db()
    assert (run.status, run.attempts, run.attempt_set.count(), run.error_class) == ("scheduled", 0, 0, "")
    assert timedelta(seconds=0.5) < run.next_attempt_at - now <= timedelta(seconds=1.05)
    assert run.run_after == run.next_attempt_at
    assert later.status == "queued" and later.attempt_set.count() == 0
    assert "gateway:gw1" in admission.held()
    time.sleep(max(0.0, (run.run_after - timezone.now()).total_seconds()) + 0.05)
    tick.promote_due(timezone.now())
    assert queue.start_next(WORKER).pk == run.pk  # its place kept: before the later one
    run.refresh_from_db()
    assert (run.status, run.attempts, run.attempt_set.count()) == ("succeeded", 1, 1)


@pytest.mark.django_db
def test_a_rate_limit_error_backs_the_provider_off_and_the_run_waits_that_long(redis_prefix):
    run = noop(gateway="gw", provider="acme", fail="rate_limit", retry_after=30)
    later = noop(gateway="gw", provider="acme")
    now = timezone.now()
    queue.start_next(WORKER)
    run.refresh_from_db()
    assert (run.status, run.attempts, run.error_class) == ("scheduled", 0, "rate_limit")
    assert timedelta(seconds=29) < run.run_after - now < timedelta(seconds=31)
    (status,) = limits.status(["provider:acme"])
    assert 29 < status.blocked_seconds <= 30 and status.errors == 1
    assert queue.start_next(WORKER) is None  # the provider's other runs are held meanwhile
    later.refresh_from_db()
    assert later.status == "queued"


@pytest.mark.django_db
def test_without_a_retry_after_the_wait_is_the_adaptive_backoff_and_a_success_clears_it(redis_prefix):
    run = noop(gateway="gw", provider="acme", fail="rate_limit")
    now = timezone.now()
    queue.start_next(WORKER)
    run.refresh_from_db()
    assert (run.status, run.attempts) == ("scheduled", 0)
    assert 54 <= (run.run_after - now).total_seconds() <= 66.5
    assert limits.status(["provider:acme"])[0].errors == 1
    limits.lift("provider:acme")
    admission.release("provider:acme")
    limits.backoff("provider:acme", retry_after=0)  # an error, no block
    assert limits.status(["provider:acme"])[0].errors == 1
    ok = noop(gateway="gw", provider="acme")
    assert queue.start_next(WORKER).pk == ok.pk
    assert limits.status(["provider:acme"])[0].errors == 0  # the success cleared the count


# --- the breakers ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_five_failures_open_the_breaker_its_runs_wait_and_a_probe_closes_it(redis_prefix, settings):
    settings.AGENTFLOW_BREAKER_OPEN_SECONDS = 1.0
    for _ in range(5):
        noop(gateway="gw", provider="acme", fail="server_error", max_attempts=1)
        queue.start_next(WORKER)
    assert Run.objects.filter(status="failed").count() == 5
    (state,) = breakers.states()
    assert (state.state, state.failures) == ("open", 5)
    probe, held = noop(gateway="gw", provider="acme"), noop(gateway="gw", provider="acme")
    unrelated = noop(gateway="gw", provider="other")
    assert queue.start_next(WORKER).pk == unrelated.pk  # another provider's breaker is closed
    probe.refresh_from_db()
    held.refresh_from_db()
    assert (probe.status, probe.attempts, probe.attempt_set.count(), probe.error_class) == (
        "scheduled",
        0,
        0,
        "",
    )
    assert held.status == "queued" and queue.start_next(WORKER) is None
    time.sleep(max(0.0, (probe.run_after - timezone.now()).total_seconds()) + 0.05)
    tick.promote_due(timezone.now())
    assert queue.start_next(WORKER).pk == probe.pk  # the one probe
    assert breakers.states()[0].state == "closed"
    assert queue.start_next(WORKER).pk == held.pk  # closed: the held run goes at once
    held.refresh_from_db()
    assert (held.status, held.attempts) == ("succeeded", 1)


@pytest.mark.django_db
def test_a_failed_probe_opens_the_breaker_again(redis_prefix, settings):
    settings.AGENTFLOW_BREAKER_OPEN_SECONDS = 0.5
    for _ in range(5):
        breakers.record_failure("gw", "acme")
    time.sleep(0.6)
    run = noop(gateway="gw", provider="acme", fail="timeout", max_attempts=1)
    assert queue.start_next(WORKER).pk == run.pk
    assert breakers.states()[0].state == "open"


# --- logs ----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_every_line_of_a_run_carries_run_job_attempt_gateway_and_agent(redis_prefix):
    seen = []

    def start(ctx):
        logging.getLogger("tests.action").warning("inside the action")
        seen.append(logcontext.bound())
        return Finished("succeeded", result="ok")

    actions.register_action(ActionSpec("test.logs", "Logs", start=start))
    handler = logging.StreamHandler(stream := __import__("io").StringIO())
    handler.setFormatter(logcontext.formatter("json"))
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        run = queue.enqueue(kind="test.logs", params={"gateway": "gw", "agent": "main"})
        queue.start_next(WORKER)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        actions.unregister_action("test.logs")
    attempt = run.attempt_set.get()
    expected = {"run_id": run.pk, "job": "test.logs", "gateway": "gw", "agent": "main"}
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    ours = [line for line in lines if line.get("run_id") == run.pk]
    events = {line["event"] for line in ours}
    assert "inside the action" in events and any("succeeded" in e for e in events)
    for line in ours:
        assert {k: line[k] for k in expected} == expected
        assert line["attempt"] == str(attempt.pk)
    assert seen[0]["attempt"] == str(attempt.pk)
    assert logcontext.bound() == {}  # nothing leaks past the run


# --- metrics --------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_run_metrics_are_on_metrics_at_zero_then_count(
    redis_prefix, client, django_capture_on_commit_callbacks
):
    values = samples(client.get("/metrics").content.decode())
    ok = ("agentflow_runs_total", (("job", "noop"), ("priority", "normal"), ("status", "succeeded")))
    assert values[ok] == 0
    assert values[("agentflow_queue_depth", (("priority", "normal"), ("state", "queued")))] == 0
    wait_top = ("agentflow_run_wait_seconds_bucket", (("le", "3600.0"), ("priority", "normal")))
    assert values[wait_top] == 0
    assert values[("agentflow_run_duration_seconds_count", (("priority", "high"),))] == 0
    with django_capture_on_commit_callbacks(execute=True):
        noop(sleep_ms=30)
        queue.enqueue(kind="noop", priority="high", params={"fail": "invalid_request"})
    with django_capture_on_commit_callbacks(execute=True):
        queue.start_next(WORKER)  # the high one first
        queue.start_next(WORKER)
        noop()  # waits
    values = samples(client.get("/metrics").content.decode())
    assert values[ok] == 1
    failed = ("agentflow_runs_total", (("job", "noop"), ("priority", "high"), ("status", "failed")))
    assert values[failed] == 1
    assert values[("agentflow_queue_depth", (("priority", "normal"), ("state", "queued")))] == 1
    assert values[wait_top] == 1
    assert values[("agentflow_run_duration_seconds_count", (("priority", "normal"),))] == 1
    assert values[("agentflow_run_duration_seconds_sum", (("priority", "normal"),))] >= 0.03
    under = ("agentflow_run_duration_seconds_bucket", (("le", "0.01"), ("priority", "normal")))
    assert (under not in values) or values[under] == 0


# --- real workers: the pace holds without the tick ---------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_workers_pace_runs_at_the_budget_from_wake_ups(own_queues, redis_prefix, tmp_path):
    limits.set_budget("gateway:gw", "60rpm")  # in Redis: every worker's budget
    workers = [start_worker(worker_env(redis_prefix), tmp_path / f"w{i}.log", redis_prefix) for i in (1, 2)]
    try:
        runs = [noop(gateway="gw") for _ in range(14)]
        ids = [r.pk for r in runs]
        try:
            wait_for(
                lambda: Run.objects.filter(pk__in=ids, status="succeeded").count() == 14, 60, what="runs"
            )
        except AssertionError:
            raise AssertionError(logs(tmp_path)) from None
    finally:
        for worker in workers:
            stop_group(worker)
    starts = sorted(a for r in Run.objects.filter(pk__in=ids) for a in [r.attempt_set.get().started_at])
    offsets = [(t - starts[0]).total_seconds() for t in starts]
    interval = 1.0  # 60 rpm
    # GCRA: no window holds more than W / interval + 1 starts (a late caller keeps its slot)...
    for i, j in itertools.combinations(range(14), 2):
        assert offsets[j] - offsets[i] >= (j - i - 1) * interval, offsets
    # ...and the wake-ups keep the pace: no tick-sized (2 s) holes
    assert offsets[-1] < 13 * interval + 1.5, offsets
    assert Run.objects.filter(pk__in=ids, attempts=1).count() == 14


@pytest.mark.django_db(transaction=True)
def test_the_pace_holds_when_each_start_takes_longer_than_the_interval(own_queues, redis_prefix, tmp_path):
    """Agent runs: ``start`` (a ``chat.send``, slow on a busy gateway) returns Started and the
    run ends later, elsewhere (the listener): no completion in a worker asks for the next run.
    Each slot must wake the next one before the action starts, or the pace is lost."""
    limits.set_budget("gateway:gw", "60rpm")
    env = worker_env(redis_prefix, AGENTFLOW_GATEWAY_CONCURRENCY="50")
    workers = [start_worker(env, tmp_path / f"w{i}.log", redis_prefix) for i in (1, 2)]
    params = {"gateway": "gw", "sleep_ms": 1200, "async": True}  # 1.2 s a start, 1 s a slot
    try:
        ids = [queue.enqueue(kind="noop", params=params).pk for _ in range(10)]
        try:
            wait_for(lambda: Attempt.objects.filter(run__in=ids).count() == 10, 30, what="ten starts")
        except AssertionError:
            raise AssertionError(logs(tmp_path)) from None
    finally:
        for worker in workers:
            stop_group(worker)
    starts = sorted(Attempt.objects.filter(run__in=ids).values_list("started_at", flat=True))
    offsets = [(t - starts[0]).total_seconds() for t in starts]
    for i, j in itertools.combinations(range(10), 2):  # never above the budget...
        assert offsets[j] - offsets[i] >= (j - i - 1) * 1.0, offsets
    assert offsets[-1] < 9 * 1.0 + 1.5, offsets  # ...and at it: 10 starts in about 9 s
