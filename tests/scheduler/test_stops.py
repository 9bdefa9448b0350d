"""The emergency stop in the engine (scheduler.stops): intake parks, claims and starts refuse,
waiting runs are parked and running ones aborted, the state is saved, the mirror is the hot path
and the database decides without it, release replays nothing, requeue and cancel decide, and
every call is audited. The gateway side is tested against a real gateway in tests/fleet/."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from agentflow.lib.redis import get_redis
from scheduler import audit, controls, queue, stops, tick
from scheduler.models import Attempt, AuditEntry, EmergencyStop, Run
from tests.support.redis import private_redis

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

SYSTEM = audit.Actor.system()
WORKER = "test-host:1"


@pytest.fixture(autouse=True)
def _isolated(redis_prefix):
    return redis_prefix


def noop(priority: str = "normal", **params) -> Run:
    return queue.enqueue(kind="noop", params=params, priority=priority)


def test_a_global_stop_parks_waiting_runs_aborts_running_ones_and_refuses_intake_and_claims():
    waiting = [noop(), noop("urgent")]
    running = noop(**{"async": True})
    assert queue.start_next(WORKER).pk == waiting[1].pk  # the urgent one (a noop: done at once)
    assert queue.start_next(WORKER).pk == waiting[0].pk
    started = queue.start_next(WORKER)
    assert started.pk == running.pk and Run.objects.get(pk=running.pk).status == "running"
    later_waiting = noop("low")

    stop = stops.engage(SYSTEM, "global", reason="runaway agent")

    assert stop.is_engaged and stop.completed_at is not None and stop.engaged_at >= stop.requested_at
    assert stop.parked_ids == [later_waiting.pk] and stop.aborted_ids == [running.pk]
    assert Run.objects.get(pk=later_waiting.pk).status == "parked"
    aborted = Run.objects.get(pk=running.pk)
    assert (aborted.status, aborted.error_class, aborted.stop_id) == ("aborted", "aborted", stop.pk)
    assert f"emergency stop {stop.pk}" in aborted.error and "runaway agent" in aborted.error
    assert [s["step"] for s in stop.steps][:3] == ["intake", "fence", "park"]
    # Intake: a new run is recorded, parked and held by the stop (not rejected, not lost).
    new = noop("urgent")
    assert (new.status, new.stop_id) == ("parked", stop.pk)
    assert queue.claim_next(WORKER) is None
    entry = AuditEntry.objects.get(action="stop.engage")
    assert (entry.result, entry.reason) == ("ok", "runaway agent")
    assert "1 aborted, 1 parked" in entry.message


def test_a_scoped_stop_covers_only_its_runs_and_the_same_scope_twice_is_one_stop():
    a, b = noop(gateway="g1"), noop(gateway="g2", agent="main")
    stop = stops.engage(SYSTEM, "gateway", "g1", reason="bad deploy")
    assert stops.engage(SYSTEM, "gateway", "g1", reason="again").pk == stop.pk
    assert EmergencyStop.objects.count() == 1
    assert Run.objects.get(pk=a.pk).status == "parked"
    assert Run.objects.get(pk=b.pk).status == "queued"
    assert queue.start_next(WORKER).pk == b.pk
    by_priority = stops.engage(SYSTEM, "priority", "low", reason="noisy batch")
    low, normal = noop("low"), noop("normal")
    assert (low.status, low.stop_id) == ("parked", by_priority.pk)
    assert normal.status == "queued"


@pytest.mark.parametrize(
    ("scope", "value", "message"),
    [
        ("planet", "x", "unknown scope 'planet'"),
        ("agent", "", "a agent stop needs its value"),
        ("priority", "asap", "unknown priority 'asap'"),
    ],
)
def test_a_bad_scope_is_refused_with_a_clear_message_and_audited(scope, value, message):
    with pytest.raises(ValidationError, match=message):
        stops.engage(SYSTEM, scope, value, reason="x")
    assert not EmergencyStop.objects.exists()
    assert AuditEntry.objects.get(action="stop.engage").result == "error"


def test_a_stop_needs_a_reason_and_the_admin_role(django_user_model):
    with pytest.raises(ValidationError, match="needs a reason"):
        stops.engage(SYSTEM, "global", reason="  ")
    operator = audit.Actor(label="op", role=audit.Role.OPERATOR)
    with pytest.raises(audit.Refused):
        stops.engage(operator, "global", reason="panic")
    assert not EmergencyStop.objects.exists()
    assert AuditEntry.objects.filter(action="stop.engage", result="refused").count() == 1


def test_a_run_claimed_before_the_stop_is_parked_by_the_start_not_sent():
    run = noop()
    claimed = queue.claim_next(WORKER)
    assert claimed is not None and claimed[0].pk == run.pk
    # The stop engages between the claim and the start (its in-flight pass saw a running run
    # whose attempt a worker holds: the engine's check before the start is what stops it).
    EmergencyStop.objects.create(scope="global", reason="between", who="t")
    stops.sync_mirror()
    assert queue._start(claimed[0], claimed[1], WORKER) == (None, None)
    run.refresh_from_db()
    assert (run.status, run.attempts) == ("parked", 0)
    attempt = Attempt.objects.get(run=run)
    assert attempt.status == "aborted" and "not started: emergency stop" in attempt.error


def test_without_redis_the_database_decides(settings, tmp_path):
    run = noop()
    claimed = queue.claim_next(WORKER)
    EmergencyStop.objects.create(scope="global", reason="redis is down too", who="t")
    # A Redis that restarted empty (no mirror): the database decides and the mirror is refilled.
    get_redis().delete(stops.mirror_key())
    assert stops.enter(claimed[0], "m2") == EmergencyStop.objects.get().pk
    assert get_redis().hget(stops.mirror_key(), "global:") is not None
    saved = settings.REDIS_URL, settings.CACHES, settings.CHANNEL_LAYERS
    try:
        with private_redis(settings, tmp_path) as server:
            server.kill()  # the workers' Redis is gone: the mirror cannot answer
            assert stops.enter(claimed[0], "m") is not None
            assert stops.intake(run) is not None
    finally:
        settings.REDIS_URL, settings.CACHES, settings.CHANNEL_LAYERS = saved


def test_the_tick_parks_what_slipped_past_and_refills_the_mirror():
    stop = EmergencyStop.objects.create(scope="global", reason="r", who="t")  # no mirror, no park
    slipped = noop()
    Run.objects.filter(pk=slipped.pk).update(status="queued", stop=None)
    report = tick.tick()
    assert report.stopped == 1
    slipped.refresh_from_db()
    assert (slipped.status, slipped.stop_id) == ("parked", stop.pk)
    assert get_redis().hget(stops.mirror_key(), "global:") == str(stop.pk).encode()


def test_release_replays_nothing_and_requeue_or_cancel_decides():
    parked = [noop(), noop("high")]
    noop(**{"async": True})  # running when the stop engages
    queue.start_next(WORKER)  # high first: a noop, done
    Run.objects.filter(pk=parked[1].pk).update(status="queued")  # (it finished: queue it again)
    started = queue.start_next(WORKER)
    assert started is not None
    stop = stops.engage(SYSTEM, "global", reason="incident")
    held_before = set(stops.held_runs().values_list("pk", flat=True))
    assert held_before == set()  # held by an engaged stop: not yet for a decision
    with pytest.raises(ValidationError, match="needs a reason"):
        stops.release(SYSTEM, stop_id=stop.pk)
    (released,) = stops.release(SYSTEM, stop_id=stop.pk, reason="fixed")
    assert not released.is_engaged and released.released_by == "system"
    held = stops.held_runs(stop)
    assert held.count() == len(stop.parked_ids) + len(stop.aborted_ids) >= 2
    assert not Run.objects.filter(status="queued").exists()  # nothing replayed
    # A selection: one parked run requeued, the rest cancelled.
    first = stop.parked_ids[0]
    out = stops.requeue(SYSTEM, [first, 999999])
    assert out.requeued == 1 and out.skipped == ["run 999999: not held by a released stop"]
    assert Run.objects.get(pk=first).status == "queued" and Run.objects.get(pk=first).stop_id is None
    left = held.count()
    out = stops.requeue(SYSTEM, "all", cancel=True)
    assert out.cancelled == left and not stops.held_runs().exists()
    actions = list(AuditEntry.objects.order_by("id").values_list("action", "result"))
    assert actions[-4:] == [
        ("stop.release", "error"),
        ("stop.release", "ok"),
        ("stop.requeue", "ok"),
        ("stop.cancel_held", "ok"),
    ]


def test_requeue_brings_aborted_runs_back_for_a_new_attempt_and_skips_what_another_stop_covers():
    running = noop(**{"async": True})
    queue.start_next(WORKER)
    other = noop(gateway="g1")
    first = stops.engage(SYSTEM, "global", reason="one")
    second = stops.engage(SYSTEM, "gateway", "g1", reason="two")
    stops.release(SYSTEM, stop_id=first.pk, reason="done")
    out = stops.requeue(SYSTEM, "all")
    assert out.requeued == 1  # the aborted run: queued again for its next attempt
    assert Run.objects.get(pk=running.pk).status == "queued"
    assert out.skipped == [f"run {other.pk}: stop {second.pk} (gateway g1) is still engaged"]
    assert Run.objects.get(pk=other.pk).status == "parked"


def test_a_pause_resume_does_not_release_runs_a_stop_holds():
    run = noop()
    controls.pause(SYSTEM, "all")
    stops.engage(SYSTEM, "global", reason="r")
    controls.resume(SYSTEM, "all")
    assert Run.objects.get(pk=run.pk).status == "parked"


def test_monitoring_batches_are_not_stopped():
    stops.engage(SYSTEM, "global", reason="r")
    batch = Run(kind="batch", priority="normal")
    assert stops.intake(batch) is None and stops.enter(batch, "x") is None


def test_status_lists_the_engaged_stops():
    stop = stops.engage(SYSTEM, "agent", "main", reason="loops")
    body = stops.status()
    assert [s["id"] for s in body["engaged"]] == [stop.pk]
    assert body["engaged"][0]["label"] == "agent main" and body["engaged"][0]["reason"] == "loops"


def test_a_stale_mirror_is_not_believed():
    """A mirror naming a stop the database does not have engaged (a restored database, keys left
    by another install) neither parks new runs nor holds them by a missing row."""
    get_redis().hset(stops.mirror_key(), mapping={stops.SYNCED: "1", "global:": "424242"})
    run = noop()
    assert (run.status, run.stop_id) == ("queued", None)
    assert get_redis().hget(stops.mirror_key(), "global:") is None  # rewritten from the database


def test_release_and_requeue_queues_what_it_held_before_the_hooks_run_and_audits_both():
    running = noop(**{"async": True})
    queue.start_next(WORKER)  # running when the stop engages: aborted, held
    for _ in range(5):
        noop()  # parked
    stop = stops.engage(SYSTEM, "global", reason="incident")
    seen: dict[str, object] = {}

    def release_hook(stop_, state, still):
        # The hooks (the gateway's cron restore) come after the requeue and the mirror.
        seen["queued"] = Run.objects.filter(status="queued").count()
        seen["mirrored"] = get_redis().hget(stops.mirror_key(), "global:")  # what workers read
        return stops.HookResult(notes=["probe: ran"])

    hook = stops.StopHook("probe", engage=lambda s, f: stops.HookResult(), release=release_hook)
    previous = stops.register_hook(hook)
    try:
        released, out = stops.release_and_requeue(SYSTEM, stop_id=stop.pk, reason="fixed")
    finally:
        stops.unregister_hook("probe")
        if previous is not None:
            stops.register_hook(previous)
    assert [s.pk for s in released] == [stop.pk] and not released[0].is_engaged
    assert out.requeued == 6 and out.skipped == []
    assert seen == {"queued": 6, "mirrored": None}  # requeued and startable before the hook ran
    assert not stops.held_runs().exists()
    aborted = Run.objects.get(pk=running.pk)
    assert aborted.status == "queued" and aborted.attempts == 0 and aborted.error == ""
    assert aborted.triggered_by == "retry by system"
    actions = [a for a in AuditEntry.objects.order_by("id").values_list("action", flat=True) if "stop." in a]
    assert actions[-2:] == ["stop.requeue", "stop.release"]  # the requeue inside the release


def test_a_requeue_of_many_runs_sends_a_bounded_number_of_wake_ups(
    settings, monkeypatch, django_capture_on_commit_callbacks
):
    for _ in range(40):
        noop()
    stop = stops.engage(SYSTEM, "global", reason="incident")
    stops.release(SYSTEM, stop_id=stop.pk, reason="fixed")
    sent: list[tuple[str, int]] = []
    monkeypatch.setattr(queue, "send_dispatch", lambda priority, count=1: sent.append((priority, count)))
    with django_capture_on_commit_callbacks(execute=True):
        out = stops.requeue(SYSTEM, "all")
    assert out.requeued == 40
    # Each dispatch starts runs until none is eligible: a few messages, not one per run.
    assert sent == [("normal", settings.AGENTFLOW_DISPATCH_PENDING_MAX)]
    settings.AGENTFLOW_DISPATCH_PENDING_MAX = 0  # coalescing off: one message per run
    sent.clear()
    queue.wake_many("high", 7)
    assert sent == [("high", 7)]
    monkeypatch.undo()
    started = 0
    while queue.start_next(WORKER) is not None:
        started += 1
    assert started == 40


def test_requeue_falls_back_to_one_by_one_when_a_dedupe_key_was_taken_meanwhile():
    held = queue.enqueue(kind="noop", params={"async": True}, dedupe_key="nightly")
    queue.start_next(WORKER)
    stop = stops.engage(SYSTEM, "global", reason="incident")
    assert Run.objects.get(pk=held.pk).status == "aborted"
    stops.release(SYSTEM, stop_id=stop.pk, reason="fixed")
    newer = queue.enqueue(kind="noop", dedupe_key="nightly")  # the key is free again: a new run holds it
    assert newer.pk != held.pk
    other = noop()
    Run.objects.filter(pk=other.pk).update(status="parked", stop=stop)
    out = stops.requeue(SYSTEM, "all")
    assert out.requeued == 1  # the parked run; the aborted one is refused with its reason
    assert out.skipped == [f"run {held.pk}: another run with dedupe key 'nightly' is in progress"]
    assert Run.objects.get(pk=held.pk).status == "aborted"
    assert Run.objects.get(pk=other.pk).status == "queued"
