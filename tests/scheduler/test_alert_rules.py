"""The alert rules (scheduler.alert_rules): each rule raises when its condition holds, is seen
again without a second alert, resolves when it clears, and within its cooldown re-opens quietly;
against real rows, real Redis (limiter, breakers), the host's real memory figures and the
engine's own run path for the job streak. Notifications are observed where scheduler.notify
logs them (its delivery is another part's; the call and its event are ours)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.test import TestCase
from django.utils import timezone

from agentflow.lib.redis import get_redis
from scheduler import alert_rules, breakers, limits, queue
from scheduler.models import Alert, AlertRule, Job, Notification, ProviderBlock, Run
from tests.support.factories import make_gateway, make_health_sample

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

WORKER = "test-host:1"


@pytest.fixture(autouse=True)
def _isolated(own_queues, settings):
    settings.AGENTFLOW_JOB_FAILURE_ALERT_AFTER = 3
    alert_rules.ensure_rules()
    return own_queues


@pytest.fixture
def notified():
    """The notification kinds recorded so far, in order (each on commit, as in production); of the
    per-process memory rule, only those about this test process (others may run on the host)."""
    other_process = Q(subject__contains="(pid ") & ~Q(subject__contains=f"(pid {os.getpid()})")

    def sent() -> list[str]:
        return list(Notification.objects.exclude(other_process).order_by("id").values_list("kind", flat=True))

    return sent


def committed(fn, *args, **kwargs):
    """``fn`` as if its transaction committed: the on-commit work (notifications, live events,
    dispatch messages to this test's own queues) runs."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        return fn(*args, **kwargs)


def evaluate(**kwargs) -> alert_rules.Report:
    return committed(alert_rules.evaluate, **kwargs)


def set_rule(key: str, **fields) -> AlertRule:
    AlertRule.objects.filter(key=key).update(**fields)
    return AlertRule.objects.get(key=key)


def of(key: str):
    return Alert.objects.filter(rule=key)


# --- one scenario per rule: make the condition hold, then clear ----------------------------------------


def finished_runs(n: int, failed: int) -> list[Run]:
    now = timezone.now()
    return [
        Run.objects.create(
            kind="noop",
            status="failed" if i < failed else "succeeded",
            queued_at=now - timedelta(seconds=30),
            started_at=now - timedelta(seconds=20),
            finished_at=now - timedelta(seconds=10),
        )  # fmt: skip
        for i in range(n)
    ]


def run_once(job: Job, *, fail: bool) -> Run:
    run = committed(queue.enqueue, job, params={"fail": "invalid_request"} if fail else {"fail": ""})
    committed(queue.start_next, WORKER)
    run.refresh_from_db()
    assert run.status == ("failed" if fail else "succeeded"), run.error
    return run


@dataclass
class Scenario:
    key: str
    hold: Callable[[dict], None]
    clear: Callable[[dict], None]
    subject: str | Callable[[dict], str] = ""
    setup: Callable[[], dict] = dict


def _error_rate_hold(s: dict) -> None:
    s["runs"] = finished_runs(30, failed=3)  # 10 % of 30 (min samples 20)


def _error_rate_clear(s: dict) -> None:
    Run.objects.filter(status="failed").update(status="succeeded")


def _queue_hold(s: dict) -> None:
    set_rule("queue-length", threshold=5)
    for _ in range(6):
        Run.objects.create(kind="noop", priority="high")


def _queue_clear(s: dict) -> None:
    Run.objects.ready().update(status="cancelled", finished_at=timezone.now())


def _threshold(key: str, value: float) -> Callable[[dict], None]:
    return lambda s: set_rule(key, threshold=value) and None


def _blocked_hold(s: dict) -> None:
    s["block"] = ProviderBlock.objects.create(gateway="1", agent="main", provider="anthropic", reason="401")


def _blocked_clear(s: dict) -> None:
    ProviderBlock.objects.filter(pk=s["block"].pk).update(ended_at=timezone.now(), ended_by="test")
    del s["block"]


def _limited_hold(s: dict) -> None:
    set_rule("rate-limited", threshold=0)
    limits.backoff(limits.provider_key("anthropic"), retry_after=60)


def _limited_clear(s: dict) -> None:
    limits.lift(limits.provider_key("anthropic"))


def _job_setup() -> dict:
    return {"job": Job.objects.create(name="nightly", kind="noop", max_attempts=1, on_error="nothing")}


def _job_hold(s: dict) -> None:
    for _ in range(3):
        run_once(s["job"], fail=True)


def _job_clear(s: dict) -> None:
    run_once(s["job"], fail=False)


def _breaker_hold(s: dict) -> None:
    for _ in range(5):
        breakers.record_failure("1", "openai")


def _breaker_clear(s: dict) -> None:
    breakers.reset("1", "openai")


def _gateway_setup() -> dict:
    return {"gateway": make_gateway("slow-gw", status="connected")}


def _latency_hold(s: dict) -> None:
    for i in range(4):
        make_health_sample(
            s["gateway"], latency_ms=8000, checked_at=timezone.now() - timedelta(seconds=10 * i)
        )


def _latency_clear(s: dict) -> None:
    s["gateway"].health_samples.all().delete()
    for i in range(4):
        make_health_sample(s["gateway"], latency_ms=20, checked_at=timezone.now() - timedelta(seconds=10 * i))


def _down_hold(s: dict) -> None:
    type(s["gateway"]).objects.filter(pk=s["gateway"].pk).update(
        status="disconnected", status_reason="refused"
    )


def _down_clear(s: dict) -> None:
    type(s["gateway"]).objects.filter(pk=s["gateway"].pk).update(status="connected", status_reason="")


def _watch_setup() -> dict:
    from scheduler.models import Watch

    job = Job.objects.create(name="process-file", kind="noop")
    return {"watch": Watch.objects.create(name="inbox", directory="/srv/in", events=["created"], job=job)}


def _watch_hold(s: dict) -> None:  # what the file watcher records when the directory goes
    type(s["watch"]).objects.filter(pk=s["watch"].pk).update(
        state="missing", state_detail="/srv/in does not exist"
    )


def _watch_clear(s: dict) -> None:
    type(s["watch"]).objects.filter(pk=s["watch"].pk).update(state="watching", state_detail="")


def mine(key: str):
    """The rule's alerts about this test: for the process rule, this test process's only (every
    AgentFlow process on the host is over a 0 % threshold, and other ones may be running)."""
    qs = of(key)
    return qs.filter(subject__contains=f"(pid {os.getpid()})") if key == "memory-process" else qs


def _this_process(s: dict) -> str:
    return mine("memory-process").first().subject  # the pid of this test process, found by the rule


SCENARIOS = [
    Scenario("error-rate", _error_rate_hold, _error_rate_clear),
    Scenario("queue-length", _queue_hold, _queue_clear, "high"),
    # The host's real memory: above 0 % it holds, above 100 % it cannot.
    Scenario(
        "memory-host",
        _threshold("memory-host", 0),
        _threshold("memory-host", 100),
        lambda s: __import__("socket").gethostname(),
    ),  # fmt: skip
    Scenario(
        "memory-process", _threshold("memory-process", 0), _threshold("memory-process", 1e9), _this_process
    ),
    Scenario("provider-blocked", _blocked_hold, _blocked_clear, "1:main:anthropic"),
    Scenario("rate-limited", _limited_hold, _limited_clear, "provider:anthropic"),
    Scenario("job-failing", _job_hold, _job_clear, "nightly", _job_setup),
    Scenario("breaker-open", _breaker_hold, _breaker_clear, "1:openai"),
    Scenario("gateway-latency", _latency_hold, _latency_clear, "slow-gw", _gateway_setup),
    Scenario("gateway-down", _down_hold, _down_clear, "slow-gw", _gateway_setup),
    Scenario("watch-directory", _watch_hold, _watch_clear, "inbox", _watch_setup),
]


def test_every_registered_condition_has_a_scenario_here():
    assert sorted(c.key for c in alert_rules.conditions()) == sorted(s.key for s in SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.key)
def test_a_rule_raises_once_is_seen_again_resolves_and_reopens_quietly_within_its_cooldown(
    scenario, notified
):
    rule = set_rule(scenario.key, cooldown_seconds=300)
    state = scenario.setup()
    evaluate()
    assert not mine(scenario.key).exists()  # nothing holds yet

    # 1. it holds: one alert, at the rule's level, told to the channels once
    scenario.hold(state)
    evaluate()
    alert = mine(scenario.key).get()
    subject = scenario.subject(state) if callable(scenario.subject) else scenario.subject
    assert alert.subject == subject and alert.resolved_at is None and alert.level == rule.level
    assert alert.message and alert.created_at <= alert.last_seen
    assert notified().count("alert.raised") == 1

    # 2. still holds: the same alert, seen again (last seen, count), no new notification
    first_count, first_seen = alert.count, alert.last_seen
    evaluate()
    alert.refresh_from_db()
    assert mine(scenario.key).count() == 1
    assert alert.count == first_count + 1 and alert.last_seen >= first_seen
    assert notified().count("alert.raised") == 1

    # 3. it clears: resolved by the next evaluation (or at once by its event), told once
    scenario.clear(state)
    evaluate()
    alert.refresh_from_db()
    assert alert.resolved_at is not None
    assert notified().count("alert.resolved") == 1

    # 4. it comes back within the cooldown: the same alert re-opens, nobody is told again
    scenario.hold(state)
    evaluate()
    assert mine(scenario.key).count() == 1
    alert.refresh_from_db()
    assert alert.resolved_at is None and alert.reopened == 1
    assert notified().count("alert.raised") == 1
    scenario.clear(state)
    evaluate()
    alert.refresh_from_db()
    assert alert.resolved_at is not None
    assert notified().count("alert.resolved") == 1  # its receivers were told the first time

    # 5. past the cooldown it is a new episode: a new alert, told again
    Alert.objects.filter(pk=alert.pk).update(resolved_at=timezone.now() - timedelta(seconds=301))
    scenario.hold(state)
    evaluate()
    assert mine(scenario.key).count() == 2
    assert mine(scenario.key).open().get().pk != alert.pk
    assert notified().count("alert.raised") == 2


# --- the details --------------------------------------------------------------------------------------


def test_the_rules_are_created_with_the_designs_defaults():
    rules = {r.key: r for r in AlertRule.objects.all()}
    assert set(rules) == {c.key for c in alert_rules.conditions()}
    error = rules["error-rate"]
    assert (error.threshold, error.window_seconds, error.min_samples, error.level) == (1.0, 300, 20, "error")
    assert (rules["gateway-latency"].threshold, rules["gateway-latency"].window_seconds) == (5.0, 300)
    assert rules["memory-host"].threshold == 80 and rules["memory-process"].threshold == 80
    assert rules["queue-length"].threshold == 1000
    assert rules["rate-limited"].threshold == 900
    assert rules["job-failing"].threshold == 3
    assert rules["provider-blocked"].level == "critical" and rules["provider-blocked"].threshold is None
    assert alert_rules.describe(error) == (
        "Error rate of finished runs > 1 % over 5 min (at least 20 observations)"
    )
    # An operator's edit survives: ensure_rules only adds what is missing.
    set_rule("error-rate", threshold=5)
    assert alert_rules.ensure_rules() == []
    assert AlertRule.objects.get(key="error-rate").threshold == 5


def test_one_failure_in_three_runs_at_night_is_below_the_minimum_sample():
    finished_runs(3, failed=1)  # 33 %, but 3 runs
    evaluate()
    assert not of("error-rate").exists()
    finished_runs(17, failed=0)  # 1 in 20: 5 %, now a sample
    evaluate()
    alert = of("error-rate").get()
    assert alert.value == 5.0 and "1 of 20 finished runs" in alert.message


def test_cancelled_and_aborted_runs_are_not_errors_and_old_runs_are_outside_the_window():
    finished_runs(20, failed=0)
    now = timezone.now()
    for status in ("cancelled", "aborted"):
        for _ in range(5):
            Run.objects.create(kind="noop", status=status, finished_at=now)
    for _ in range(10):
        Run.objects.create(kind="noop", status="failed", finished_at=now - timedelta(minutes=6))
    evaluate()
    assert not of("error-rate").exists()


def test_a_rate_limit_alerts_only_once_it_lasted_longer_than_the_threshold(redis_client):
    name = limits.provider_key("anthropic")
    limits.backoff(name, retry_after=60)
    evaluate()
    assert not of("rate-limited").exists()  # 15 minutes by default
    # The streak began 16 minutes ago (the limiter records the first error, Redis's clock).
    since = float(get_redis().time()[0]) - 16 * 60
    get_redis().hset(limits._state_key(name), "since", f"{since:.6f}")
    (status,) = [k for k in limits.status() if k.key == name]
    assert 959 <= status.limited_seconds <= 965
    evaluate()
    assert "rate limited for 16 min" in of("rate-limited").get().message
    # A success ends the streak; the block in force runs out on its own, the alert resolves now.
    limits.clear_backoff(name)
    evaluate()
    assert not of("rate-limited").open().exists()


def test_a_disabled_rule_raises_nothing_and_resolves_what_it_had_open():
    ProviderBlock.objects.create(gateway="1", agent="main", provider="anthropic", reason="401")
    evaluate()
    assert of("provider-blocked").open().count() == 1
    set_rule("provider-blocked", enabled=False)
    evaluate()
    assert not of("provider-blocked").open().exists()
    evaluate()
    assert of("provider-blocked").count() == 1


def test_a_condition_that_cannot_tell_leaves_its_alerts_as_they_are(settings):
    for _ in range(5):
        breakers.record_failure("1", "openai")
    evaluate()
    assert of("breaker-open").open().count() == 1
    working = settings.REDIS_URL
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there: Redis is down
    try:
        report = evaluate()
    finally:
        settings.REDIS_URL = working  # before the fixtures clean this test's keys up
    assert {"breaker-open", "rate-limited"} <= set(report.skipped)
    assert of("breaker-open").open().count() == 1  # unknown is not "cleared"


def test_one_open_alert_per_rule_and_subject_is_a_database_constraint():
    Alert.objects.create(rule="gateway-down", subject="a", message="down", source="x")
    with pytest.raises(IntegrityError), transaction.atomic():
        Alert.objects.create(rule="gateway-down", subject="a", message="down again", source="x")
    Alert.objects.create(rule="gateway-down", subject="b", message="another gateway", source="x")
    Alert.objects.create(source="BATCH-004", message="no rule: any number of them")
    Alert.objects.create(source="BATCH-004", message="no rule: any number of them")


def test_a_job_streak_raises_at_the_third_failure_without_waiting_for_the_evaluator(notified):
    job = Job.objects.create(name="hourly", kind="noop", max_attempts=1, on_error="nothing")
    run_once(job, fail=True)
    run_once(job, fail=True)
    assert not of("job-failing").exists()
    third = run_once(job, fail=True)
    alert = of("job-failing").get()
    assert alert.subject == "hourly" and alert.source == "job-failing:hourly"
    assert f"last: run {third.pk}" in alert.message
    run_once(job, fail=True)  # the streak goes on: the same alert, seen again
    alert.refresh_from_db()
    assert alert.count == 2 and of("job-failing").count() == 1
    assert notified().count("alert.raised") == 1
    set_rule("job-failing", threshold=5)  # edited in the admin: the next streak needs 5
    run_once(job, fail=False)
    for _ in range(4):
        run_once(job, fail=True)
    assert of("job-failing").count() == 1 and not of("job-failing").open().exists()
    run_once(job, fail=True)
    assert of("job-failing").open().count() == 1


def test_a_deleted_jobs_streak_alert_resolves():
    job = Job.objects.create(name="gone", kind="noop", max_attempts=1, on_error="nothing")
    for _ in range(3):
        run_once(job, fail=True)
    assert of("job-failing").open().count() == 1
    Run.objects.filter(job=job).delete()
    job.delete()
    evaluate()
    assert not of("job-failing").open().exists()


def test_the_evaluation_keeps_to_a_fixed_number_of_queries(django_assert_max_num_queries):
    jobs = [
        Job.objects.create(name=f"j{i}", kind="noop", max_attempts=1, on_error="nothing") for i in range(5)
    ]
    for job in jobs:
        for _ in range(3):
            run_once(job, fail=True)
    finished_runs(30, failed=5)
    ProviderBlock.objects.create(gateway="1", agent="main", provider="anthropic", reason="401")
    make_gateway("down-gw", status="disconnected")
    evaluate()  # raises
    with django_assert_max_num_queries(16):
        evaluate()  # steady state: every open alert seen again, one UPDATE for all


def test_an_emptied_threshold_falls_back_to_the_conditions_default():
    set_rule("error-rate", threshold=None)
    finished_runs(30, failed=3)
    evaluate()
    assert "(threshold 1 %)" in of("error-rate").get().message
