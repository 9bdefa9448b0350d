"""The queue's controls (scheduler.controls): pause / resume keep order, cancel and retry from
each source state (the illegal ones refused with a clear message), bulk with a dry run, and an
audit row for each call, including refusals."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from scheduler import audit, controls, queue
from scheduler.actions import ActionSpec, Finished, Started
from scheduler.models import Attempt, AuditEntry, QueuePause, Run

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

SYSTEM = audit.Actor.system()
WORKER = "test-host:1"


@pytest.fixture(autouse=True)
def _isolated(redis_prefix):
    return redis_prefix


def noop(priority: str = "normal", **params) -> Run:
    return queue.enqueue(kind="noop", params=params, priority=priority)


def in_state(status: str) -> Run:
    run = noop(**({"async": True} if status == "running" else {}))
    if status == "running":
        queue.start_next(WORKER)
    elif status != "queued":
        Run.objects.filter(pk=run.pk).update(status=status)
    run.refresh_from_db()
    return run


def test_pause_parks_and_resume_releases_in_the_original_order():
    first = [noop() for _ in range(3)]
    controls.pause(SYSTEM, "all", reason="maintenance")
    later = [noop("high"), noop()]
    assert set(Run.objects.values_list("status", flat=True)) == {"parked"}
    assert queue.claim_next(WORKER) is None
    assert controls.resume(SYSTEM, "all") == 5
    assert not QueuePause.objects.exists()
    claimed = []
    while (got := queue.claim_next(WORKER)) is not None:
        claimed.append(got[0].pk)
    assert claimed == [later[0].pk] + [r.pk for r in first] + [later[1].pk]  # high first, then by age
    rows = list(AuditEntry.objects.order_by("id").values_list("action", "result", "message", "reason"))
    assert rows == [
        ("queue.pause", "ok", "3 run(s) parked", "maintenance"),
        ("queue.resume", "ok", "5 run(s) released", ""),
    ]


def test_a_scoped_pause_parks_only_its_runs_and_another_pause_keeps_them_parked():
    g1, g2 = noop(gateway="g1"), noop(gateway="g2", agent="main")
    controls.pause(SYSTEM, "gateway", "g1")
    controls.pause(SYSTEM, "agent", "main")
    assert Run.objects.get(pk=g1.pk).status == Run.objects.get(pk=g2.pk).status == "parked"
    assert controls.resume(SYSTEM, "gateway", "g1") == 1
    assert Run.objects.get(pk=g2.pk).status == "parked"


@pytest.mark.parametrize(
    ("scope", "value", "message"),
    [
        ("planet", "", "unknown scope 'planet'"),
        ("priority", "scheduled", "unknown priority 'scheduled'"),
        ("gateway", "", "pausing a gateway needs its value"),
    ],
)
def test_a_bad_scope_is_refused_clearly_and_recorded(scope, value, message):
    with pytest.raises(ValidationError) as exc:
        controls.pause(SYSTEM, scope, value)
    assert message in exc.value.messages[0]
    assert not QueuePause.objects.exists()
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.result) == ("queue.pause", "error") and message in entry.message


def test_resuming_what_is_not_paused_is_an_error():
    with pytest.raises(ValidationError, match="everything is not paused"):
        controls.resume(SYSTEM, "all")


def test_a_viewer_is_refused_and_nothing_changes(viewer):
    run = noop()
    with pytest.raises(audit.Refused):
        controls.cancel_run(audit.Actor.of_user(viewer, source="web"), run)
    with pytest.raises(audit.Refused):
        controls.pause(audit.Actor.of_user(viewer, source="web"), "all")
    assert Run.objects.get(pk=run.pk).status == "queued"
    assert not QueuePause.objects.exists()
    assert list(AuditEntry.objects.values_list("result", flat=True)) == ["refused", "refused"]


@pytest.mark.parametrize("status", ["queued", "scheduled", "blocked", "parked"])
def test_a_waiting_run_is_cancelled(status, operator):
    run = in_state(status)
    controls.cancel_run(audit.Actor.of_user(operator, source="admin"), run, reason="not needed")
    run.refresh_from_db()
    assert (run.status, run.error) == ("cancelled", "cancelled by operator: not needed")
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.result, entry.target_id, entry.actor_id) == (
        "run.cancel",
        "ok",
        str(run.pk),
        operator.pk,
    )


def test_a_running_run_is_cancelled_through_its_action_and_aborted():
    cancelled = []
    from scheduler import actions

    actions.register_action(
        ActionSpec(
            "remote",
            "Remote",
            start=lambda ctx: Started(),
            cancel=lambda ctx: cancelled.append(ctx.attempt_id),
        )
    )
    try:
        run = queue.enqueue(kind="remote")
        queue.start_next(WORKER)
        controls.cancel_run(SYSTEM, run)
    finally:
        actions.unregister_action("remote")
    run.refresh_from_db()
    attempt = Attempt.objects.get(run=run)
    assert cancelled == [str(attempt.pk)]
    assert (run.status, run.error_class, attempt.status) == ("aborted", "aborted", "aborted")
    # the gateway's late terminal event changes nothing
    assert queue.complete_attempt(attempt.pk, Finished()) is None


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled", "aborted", "lost"])
def test_cancelling_a_finished_run_is_refused_with_a_clear_message(status):
    run = in_state(status)
    with pytest.raises(ValidationError) as exc:
        controls.cancel_run(SYSTEM, run)
    assert exc.value.messages[0] == (
        f"run {run.pk} is {status}: only queued, scheduled, blocked, parked or running runs can be cancelled"
    )
    assert Run.objects.get(pk=run.pk).status == status
    assert AuditEntry.objects.get().result == "error"


@pytest.mark.parametrize("status", ["failed", "aborted", "lost", "cancelled"])
def test_a_final_unsuccessful_run_is_retried_with_a_new_attempt(status):
    run = noop()
    queue.start_next(WORKER)
    Run.objects.filter(pk=run.pk).update(status=status, error="it broke", attempts=3)
    controls.retry_run(SYSTEM, run)
    run.refresh_from_db()
    assert (run.status, run.attempts, run.error) == ("queued", 0, "")
    queue.start_next(WORKER)
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert list(run.attempt_set.values_list("number", flat=True)) == [1, 2]
    assert AuditEntry.objects.get().action == "run.retry"


@pytest.mark.parametrize("status", ["queued", "scheduled", "blocked", "parked", "running", "succeeded"])
def test_retrying_a_run_that_is_not_final_failed_is_refused(status):
    run = in_state(status)
    with pytest.raises(ValidationError, match=f"is {status}: only failed, aborted, lost or cancelled"):
        controls.retry_run(SYSTEM, run)
    assert Run.objects.get(pk=run.pk).status == status


def test_retry_under_a_pause_parks():
    run = in_state("failed")
    controls.pause(SYSTEM, "all")
    controls.retry_run(SYSTEM, run)
    assert Run.objects.get(pk=run.pk).status == "parked"


def test_bulk_counts_in_a_dry_run_then_acts_with_one_audit_row():
    for _ in range(3):
        noop(gateway="g1")
    noop(gateway="g2")
    in_state("succeeded")
    assert controls.bulk(SYSTEM, "cancel", {"gateway": "g1"}) == 3
    assert not AuditEntry.objects.exists()
    assert Run.objects.filter(status="cancelled").count() == 0
    assert controls.bulk(SYSTEM, "cancel", {"gateway": "g1"}, dry_run=False) == 3
    assert Run.objects.filter(status="cancelled").count() == 3
    assert controls.bulk(SYSTEM, "retry", {"status": "cancelled"}, dry_run=False) == 3
    assert Run.objects.filter(status="queued").count() == 4
    assert list(AuditEntry.objects.order_by("id").values_list("action", "message")) == [
        ("runs.bulk_cancel", "3 run(s)"),
        ("runs.bulk_retry", "3 run(s)"),
    ]
    with pytest.raises(ValidationError, match="unknown filter"):
        controls.bulk(SYSTEM, "cancel", {"colour": "red"})
    with pytest.raises(ValidationError, match="unknown bulk action"):
        controls.bulk(SYSTEM, "explode", {})
