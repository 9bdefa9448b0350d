"""Bulk submit (scheduler.queue.enqueue_many) with the real database and Redis: validation as
enqueue's naming the item, all or nothing, pauses and emergency stops at intake, dedupe keys,
ids returned from one insert, one wake-up per priority."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from scheduler import audit, queue, stops
from scheduler.models import Job, QueuePause, Run

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

WORKER = "test-host:1"


@pytest.fixture(autouse=True)
def _isolated(redis_prefix):
    return redis_prefix


@pytest.fixture
def broker(redis_client):
    """The priorities' Celery queues, empty before and after."""
    names = {p: queue.queue_name(p) for p in queue.PRIORITIES}
    redis_client.delete(*names.values())
    yield names
    redis_client.delete(*names.values())


def test_it_queues_every_spec_in_order_with_ids_and_enqueues_validation():
    job = Job.objects.create(name="greet", kind="noop", priority="low", prompt_template="Hi {{ input }}")
    runs = queue.enqueue_many(
        [
            {"kind": "noop", "params": {"sleep_ms": 5, "gateway": "3"}, "priority": "high"},
            {"job": "greet", "input": "Ann"},
            {"job": job, "run_after": timezone.now() + timedelta(hours=1), "timeout_seconds": 9},
        ],
        trigger=Run.Trigger.API_TOKEN,
        triggered_by="api token ci",
    )
    assert all(r.pk is not None for r in runs)
    assert [r.pk for r in runs] == sorted(r.pk for r in runs)
    stored = {r.pk: r for r in Run.objects.all()}
    assert set(stored) == {r.pk for r in runs}
    first, second, third = (stored[r.pk] for r in runs)
    assert (first.status, first.priority, first.gateway, first.params["sleep_ms"]) == (
        "queued",
        "high",
        "3",
        5,
    )
    assert (second.job_name, second.priority, second.prompt) == ("greet", "low", "Hi Ann")
    assert (third.status, third.timeout_seconds) == ("scheduled", 9)
    assert {r.trigger for r in stored.values()} == {"api_token"}
    assert {r.triggered_by for r in stored.values()} == {"api token ci"}


@pytest.mark.parametrize(
    ("bad", "message", "code"),
    [
        ({"kind": "nope"}, "item 2: unknown kind 'nope' (registered: ", "unknown_kind"),
        ({"kind": "noop", "params": {"sleep_ms": -1}}, "item 2: noop: sleep_ms must be a whole number", None),
        ({"kind": "noop", "priority": "scheduled"}, "item 2: unknown priority 'scheduled'", "bad_priority"),
        ({"job": "missing"}, "item 2: no job named 'missing'", "unknown_job"),
        ({}, "item 2: a run needs a job or a kind", "no_kind"),
        ({"kind": "noop", "trigger": "user"}, "item 2: unknown field(s) trigger (allowed: ", "bad_field"),
    ],
)
def test_a_bad_item_is_refused_naming_its_index_and_nothing_is_written(
    broker, redis_client, bad, message, code
):
    with pytest.raises(ValidationError) as exc:
        queue.enqueue_many([{"kind": "noop"}, {"kind": "noop", "dedupe_key": "k"}, bad, {"kind": "noop"}])
    assert exc.value.messages[0].startswith(message)
    if "trigger" not in bad:  # the same message and code as enqueue's, after the index
        with pytest.raises(ValidationError) as single:
            queue.enqueue(**bad)
        assert exc.value.messages[0] == f"item 2: {single.value.messages[0]}"
        assert exc.value.code == single.value.code
    if code:
        assert exc.value.code == code
    assert not Run.objects.exists()
    assert sum(redis_client.llen(n) for n in broker.values()) == 0


def test_a_disabled_job_is_refused_like_enqueue():
    Job.objects.create(name="off", kind="noop", enabled=False)
    with pytest.raises(ValidationError) as exc:
        queue.enqueue_many([{"job": "off"}])
    assert (exc.value.messages, exc.value.code) == (["item 0: job 'off' is disabled"], "job_disabled")
    assert not Run.objects.exists()


def test_pauses_and_emergency_stops_park_at_intake_and_the_stop_holds_its_runs():
    QueuePause.objects.create(scope="priority", value="low", who="t")
    stop = stops.engage(audit.Actor.system(), "gateway", "g1", reason="bad deploy")
    runs = queue.enqueue_many(
        [
            {"kind": "noop", "priority": "low"},
            {"kind": "noop", "params": {"gateway": "g1"}},
            {"kind": "noop", "params": {"gateway": "g1"}, "priority": "low"},
            {"kind": "noop", "params": {"gateway": "g2"}},
        ]
    )
    got = [(r.status, r.stop_id) for r in Run.objects.filter(pk__in=[r.pk for r in runs]).order_by("pk")]
    # the stop before the pause (a stop's runs wait for an operator, not for the resume)
    assert got == [("parked", None), ("parked", stop.pk), ("parked", stop.pk), ("queued", None)]
    single = queue.enqueue(kind="noop", params={"gateway": "g1"}, priority="low")
    assert (single.status, single.stop_id) == ("parked", stop.pk)  # as enqueue decides
    claimed = queue.claim_next(WORKER)
    assert claimed is not None and claimed[0].pk == runs[3].pk
    assert queue.claim_next(WORKER) is None


def test_a_held_dedupe_key_returns_the_unfinished_run_and_a_repeated_key_the_batchs_first():
    held = queue.enqueue(kind="noop", dedupe_key="nightly")
    runs = queue.enqueue_many(
        [
            {"kind": "noop", "dedupe_key": "nightly"},
            {"kind": "noop", "dedupe_key": "fresh"},
            {"kind": "noop", "dedupe_key": "fresh"},
            {"kind": "noop"},
        ]
    )
    assert runs[0].pk == held.pk
    assert runs[1].pk == runs[2].pk and runs[1].pk != held.pk
    assert Run.objects.count() == 3
    Run.objects.filter(pk=held.pk).update(status="succeeded")  # final: the key is free again
    again = queue.enqueue_many([{"kind": "noop", "dedupe_key": "nightly"}])
    assert again[0].pk not in (held.pk, runs[1].pk)


def test_one_wake_up_per_priority_with_queued_runs_on_commit(
    settings, broker, redis_client, django_capture_on_commit_callbacks
):
    settings.AGENTFLOW_DISPATCH_PENDING_MAX = 0  # one message per run for enqueue: not the cap here
    QueuePause.objects.create(scope="priority", value="low", who="t")
    specs = [{"kind": "noop", "priority": p} for p in ["normal"] * 50 + ["urgent"] * 3 + ["low"] * 4]
    specs.append({"kind": "noop", "priority": "high", "run_after": timezone.now() + timedelta(hours=1)})
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        runs = queue.enqueue_many(specs)
    assert sum(redis_client.llen(n) for n in broker.values()) == 0  # nothing before the commit
    for callback in callbacks:
        callback()
    lengths = {p: redis_client.llen(n) for p, n in broker.items()}
    assert lengths == {"urgent": 1, "high": 0, "normal": 1, "low": 0}  # low paused, high scheduled
    assert len(runs) == 58
    # a dispatch drains: every queued run starts after the single wake-ups
    started, more = queue.start_runs(deadline=float("inf"), worker=WORKER)
    assert (started, more) == (53, False)


def test_an_empty_batch_writes_and_sends_nothing(broker, redis_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        assert queue.enqueue_many([]) == []
    assert not Run.objects.exists()
    assert sum(redis_client.llen(n) for n in broker.values()) == 0
