"""Consecutive failures of one job: one alert after N final failures in a row, resolved by the
next success (real database and Redis, the engine's own path: start_next → complete_attempt)."""

from __future__ import annotations

import pytest

from scheduler import controls, queue, tick
from scheduler.audit import Actor
from scheduler.models import Alert, Job, Run

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

WORKER = "test-host:1"


@pytest.fixture(autouse=True)
def _isolated(redis_prefix, settings):
    settings.AGENTFLOW_JOB_FAILURE_ALERT_AFTER = 3
    return redis_prefix


def streak_alerts():
    return Alert.objects.filter(source__startswith="job-failing:")


def run_once(job: Job, *, fail: bool) -> Run:
    run = queue.enqueue(job, params={"fail": "invalid_request"} if fail else {"fail": ""})
    queue.start_next(WORKER)
    run.refresh_from_db()
    assert run.status == ("failed" if fail else "succeeded"), run.error
    return run


def test_three_final_failures_in_a_row_raise_one_alert_and_a_success_resolves_it():
    job = Job.objects.create(name="nightly", kind="noop", max_attempts=1, on_error="nothing")
    run_once(job, fail=True)
    run_once(job, fail=True)
    assert not streak_alerts().exists()
    third = run_once(job, fail=True)
    alert = streak_alerts().get()
    assert alert.source == "job-failing:nightly" and alert.resolved_at is None
    assert f"failed 3 times in a row (last: run {third.pk}, invalid_request" in alert.message
    run_once(job, fail=True)
    run_once(job, fail=True)
    assert streak_alerts().count() == 1  # one per streak, not one per failure
    run_once(job, fail=False)
    alert.refresh_from_db()
    assert alert.resolved_at is not None
    assert not streak_alerts().open().exists()
    # a new streak raises a new alert
    for _ in range(3):
        run_once(job, fail=True)
    assert streak_alerts().open().count() == 1 and streak_alerts().count() == 2


def test_a_success_between_failures_breaks_the_streak_and_jobs_count_apart():
    job = Job.objects.create(name="flaky", kind="noop", max_attempts=1, on_error="nothing")
    other = Job.objects.create(name="other", kind="noop", max_attempts=1, on_error="nothing")
    run_once(job, fail=True)
    run_once(job, fail=True)
    run_once(job, fail=False)
    run_once(job, fail=True)
    run_once(other, fail=True)
    run_once(other, fail=True)
    run_once(job, fail=True)
    assert not streak_alerts().exists()
    run_once(job, fail=True)
    assert list(streak_alerts().values_list("source", flat=True)) == ["job-failing:flaky"]


def test_retried_attempts_are_one_failure_and_cancelled_runs_do_not_count(settings, operator):
    job = Job.objects.create(
        name="retrying", kind="noop", params={"fail": "server_error"}, max_attempts=2, on_error="nothing"
    )
    settings.AGENTFLOW_RETRY_BASE_SECONDS = 0

    for _ in range(2):  # two runs, four failed attempts: two final failures
        run = queue.enqueue(job)
        queue.start_next(WORKER)
        run.refresh_from_db()
        tick.promote_due(run.run_after)
        queue.start_next(WORKER)
        run.refresh_from_db()
        assert run.status == "failed"
    cancelled = queue.enqueue(job)
    controls.cancel_run(Actor.of_user(operator), cancelled)
    assert not streak_alerts().exists()
    run = queue.enqueue(job, max_attempts=1)
    queue.start_next(WORKER)
    assert streak_alerts().count() == 1
