"""The emergency stop's automatic conditions (scheduler.conditions): each fires at its threshold
within its window, says so in the stop's reason, never flaps (stays engaged until a person
releases it; only later hits count again), and Redis failing three times engages the stop when
it is configured to, with Redis really down."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from agentflow.lib.redis import redis_problem
from scheduler import audit, conditions, errors, queue, stops
from scheduler.actions import Finished
from scheduler.models import Alert, ConditionHit, EmergencyStop, Run, StopCondition
from tests.support.redis import private_redis

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


@pytest.fixture(autouse=True)
def _defaults(redis_prefix):
    conditions.ensure_defaults()
    return redis_prefix


def failed(provider: str = "stub", error_class: str = errors.PROVIDER_AUTH, text: str = "HTTP 401") -> None:
    run = Run(kind="noop", provider=provider, pk=None)
    conditions.on_outcome(run, Finished("failed", error_class, text), error_class)


def spread(n: int, key: str, subject: str) -> None:
    """n hits a second apart (the debounce), written straight in as a past minute's hits."""
    condition = StopCondition.objects.get(key=key)
    now = conditions.timezone.now()
    for i in range(n):
        ConditionHit.objects.create(
            condition=condition, subject=subject, at=now - timedelta(seconds=10 + i * 2)
        )


def test_the_defaults_are_the_designs():
    rows = {c.key: (c.threshold, c.window_seconds, c.action, c.scope) for c in StopCondition.objects.all()}
    assert rows == {
        "memory": (1, 300, "stop", "global"),
        "redis": (3, 60, "alert", "global"),
        "provider-auth": (5, 600, "stop", "provider"),
        "rate-limit-wait": (3600, 3600, "alert", "provider"),
    }


def test_five_provider_auth_failures_stop_that_provider_once_until_a_person_releases_it():
    spread(4, conditions.PROVIDER_AUTH, "stub")
    other = Run.objects.create(kind="noop", provider="openai")
    failed("stub")
    stop = EmergencyStop.objects.get()
    assert (stop.scope, stop.value, stop.automatic) == ("provider", "stub", "provider-auth")
    assert stop.reason.startswith(
        "automatic: Provider authentication failure (across agents) (5 within 600 s, stub)"
    )
    assert queue.enqueue(kind="noop", params={"provider": "stub"}).status == "parked"
    assert Run.objects.get(pk=other.pk).status == "queued"  # another provider runs on
    time.sleep(1.05)
    failed("stub")  # a sixth: the same stop, no other
    assert EmergencyStop.objects.count() == 1
    stops.release(audit.Actor.system(label="oncall"), stop_id=stop.pk, reason="re-authenticated")
    time.sleep(1.05)
    failed("stub")  # one hit after the release: not five
    assert EmergencyStop.objects.engaged().count() == 0


def test_a_memory_failure_stops_everything_at_once_and_other_failures_do_not():
    failed(error_class=errors.SERVER_ERROR, text="HTTP 500 from the provider")
    assert not EmergencyStop.objects.exists()
    failed(error_class=errors.SYSTEM, text="FATAL ERROR: Reached heap limit Allocation failed")
    stop = EmergencyStop.objects.get()
    assert (stop.scope, stop.automatic) == ("global", "memory")
    assert "Memory exhaustion" in stop.reason and "heap limit" in stop.reason


def test_a_long_rate_limit_wait_raises_one_alert_resolved_when_the_window_passes_quietly():
    run = Run.objects.create(kind="noop", provider="stub")
    conditions.on_rate_limit_wait(run, 300, "rate limit")  # under an hour: nothing
    assert not Alert.objects.exists()
    conditions.on_rate_limit_wait(run, 4000, "rate limit")
    alert = Alert.objects.get()
    assert alert.source == "condition:rate-limit-wait:stub" and "4000 s, over 3600 s" in alert.message
    ConditionHit.objects.update(at=conditions.timezone.now() - timedelta(hours=2))
    assert conditions.sweep() == 1 and not Alert.objects.open().exists()


def test_three_redis_failures_alert_by_default_and_engage_the_stop_when_configured_to(settings, tmp_path):
    saved = settings.REDIS_URL, settings.CACHES, settings.CHANNEL_LAYERS
    try:
        with private_redis(settings, tmp_path) as server:
            server.kill()  # Redis is really gone
            for _ in range(3):
                assert redis_problem() is not None
                time.sleep(1.05)
            assert Alert.objects.open().filter(source="condition:redis:").count() == 1
            assert not EmergencyStop.objects.exists()
            StopCondition.objects.filter(key="redis").update(action="stop")
            ConditionHit.objects.all().delete()
            for _ in range(3):
                redis_problem()
                time.sleep(1.05)
            stop = EmergencyStop.objects.get()
            assert (stop.scope, stop.automatic) == ("global", "redis")
            assert "Redis connection failure (3 within 60 s)" in stop.reason
            # With Redis down the database decides: a worker refuses to start anything.
            assert stops.enter(Run(kind="noop", priority="normal"), "m") == stop.pk
            assert any("Redis did not answer" in s["note"] for s in stop.steps)
    finally:
        settings.REDIS_URL, settings.CACHES, settings.CHANNEL_LAYERS = saved


def test_a_disabled_condition_records_nothing():
    StopCondition.objects.filter(key="provider-auth").update(enabled=False)
    for _ in range(6):
        failed("stub")
    assert not ConditionHit.objects.exists() and not EmergencyStop.objects.exists()


def test_the_admin_engages_through_the_control_and_releases_the_selected(admin_client):
    response = admin_client.post(
        "/admin/scheduler/emergencystop/add/",
        {"scope": "agent", "value": "main", "reason": "loops in the admin"},
    )
    assert response.status_code == 302, response.content[:2000]
    stop = EmergencyStop.objects.get()
    assert (stop.scope, stop.value, stop.who) == ("agent", "main", "boss")  # the admin_user fixture
    bad = admin_client.post(
        "/admin/scheduler/emergencystop/add/", {"scope": "priority", "value": "asap", "reason": "x"}
    )
    assert bad.status_code == 200 and b"unknown priority" in bad.content
    response = admin_client.post(
        "/admin/scheduler/emergencystop/",
        {"action": "release_selected", "_selected_action": [stop.pk]},
    )
    assert response.status_code == 302
    stop.refresh_from_db()
    assert not stop.is_engaged and stop.released_by == "boss"
