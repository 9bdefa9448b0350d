"""The queue's controls: pause, resume, cancel, retry, bulk. One function per control, used by
every edge (admin, commands, later the API and the pages), each inside ``audit.control`` so it
checks the actor's role and writes one audit row, refused, failed or done.

An illegal request (an unknown scope, cancelling a finished run) raises ``ValidationError``
with a message for the operator; it is recorded as an ``error`` row and nothing changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from functools import partial
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import actions, audit, errors, queue
from .actions import AttemptContext, Finished
from .audit import Actor, Target
from .models import Attempt, Job, Priority, QueuePause, Run

CANCELLABLE = (*Run.WAITING, Run.Status.RUNNING)
RETRYABLE = (Run.Status.FAILED, Run.Status.ABORTED, Run.Status.LOST, Run.Status.CANCELLED)
BULK_FILTERS = ("status", "priority", "job", "kind", "gateway", "agent", "error_class")


def _scope(scope: str, value: str) -> tuple[str, str]:
    if scope not in QueuePause.Scope.values:
        raise ValidationError(
            f"unknown scope {scope!r} (one of {', '.join(QueuePause.Scope.values)})", code="bad_scope"
        )
    value = (value or "").strip()
    if scope == QueuePause.Scope.ALL:
        return scope, ""
    if not value:
        raise ValidationError(f"pausing a {scope} needs its value (which {scope})", code="bad_scope")
    if scope == QueuePause.Scope.PRIORITY and value not in Priority.values:
        raise ValidationError(
            f"unknown priority {value!r} (one of {', '.join(Priority.values)})", code="bad_priority"
        )
    return scope, value[:100]


def _queue_target(scope: str, value: str) -> Target:
    label = "everything" if scope == QueuePause.Scope.ALL else f"{scope} {value}"
    return Target("queue", f"{scope}:{value}" if value else scope, label)


def pause(actor: Actor, scope: str, value: str = "", reason: str = "") -> QueuePause:
    """Pause a scope: a QueuePause row; its queued runs become parked (claim skips them too)."""
    with audit.control("queue.pause", actor, _queue_target(scope, value), reason=reason) as ctl:
        scope, value = _scope(scope, value)
        with transaction.atomic():
            row, created = QueuePause.objects.get_or_create(
                scope=scope, value=value, defaults={"who": actor.label[:200], "reason": reason}
            )
            covered = queue.pause_q([row])
            assert covered is not None
            parked = Run.objects.ready().filter(covered).update(status=Run.Status.PARKED)
        ctl.note(f"{parked} run(s) parked" + ("" if created else "; it was already paused"))
    return row


def resume(actor: Actor, scope: str, value: str = "", reason: str = "") -> int:
    """Lift a pause: parked runs no other pause covers return to queued, in their first order
    (selection goes by id); one dispatch message each. Returns how many were released."""
    with audit.control("queue.resume", actor, _queue_target(scope, value), reason=reason) as ctl:
        scope, value = _scope(scope, value)
        with transaction.atomic():
            deleted, _ = QueuePause.objects.filter(scope=scope, value=value).delete()
            if not deleted:
                raise ValidationError(f"{_queue_target(scope, value).label} is not paused", code="not_paused")
            parked = Run.objects.filter(status=Run.Status.PARKED, stop__isnull=True)  # not a stop's
            still = queue.pause_q(QueuePause.objects.all())
            if still is not None:
                parked = parked.exclude(still)
            ids = list(parked.values_list("pk", flat=True))
            by_priority = Counter(Run.objects.filter(pk__in=ids).values_list("priority", flat=True))
            released = Run.objects.filter(pk__in=ids, status=Run.Status.PARKED).update(
                status=Run.Status.QUEUED
            )
            for priority, n in by_priority.items():
                transaction.on_commit(partial(queue.send_dispatch, priority, n))
        ctl.note(f"{released} run(s) released")
    return released


def _run_target(run: Run) -> Target:
    return Target("run", str(run.pk), f"run {run.pk} ({run.job_name or run.kind})")


def _cancel(actor: Actor, run: Run, reason: str) -> str:
    """Cancel one run without an audit row (cancel_run and bulk write theirs). Returns its new status."""
    now = timezone.now()
    why = f"cancelled by {actor.label}" + (f": {reason}" if reason else "")
    if run.status in Run.WAITING:
        changed = Run.objects.filter(pk=run.pk, status__in=Run.WAITING).update(
            status=Run.Status.CANCELLED, finished_at=now, error_class="", error=why
        )
        if changed:
            run.refresh_from_db()
            with transaction.atomic():
                queue.finished(run)
            return run.status
        run.refresh_from_db()  # it moved meanwhile (started?): treat as it is now
    if run.status == Run.Status.RUNNING:
        attempt = run.attempt_set.filter(status=Attempt.Status.RUNNING).order_by("-number").first()
        if attempt is not None:
            spec = actions.find_action(run.kind)
            if spec is not None and spec.cancel is not None:
                spec.cancel(
                    AttemptContext(
                        run=run, attempt=attempt, prompt=run.prompt, params=run.params, input=run.input
                    )
                )
            queue.complete_attempt(attempt.pk, Finished("aborted", errors.ABORTED, why))
        else:
            Run.objects.filter(pk=run.pk, status=Run.Status.RUNNING).update(
                status=Run.Status.ABORTED, finished_at=now, error_class=errors.ABORTED, error=why
            )
        run.refresh_from_db()
        return run.status
    raise ValidationError(
        f"run {run.pk} is {run.status}: "
        "only queued, scheduled, blocked, parked or running runs can be cancelled",
        code="illegal_state",
    )


def cancel_run(actor: Actor, run: Run, reason: str = "") -> Run:
    """Waiting → cancelled; running → the action's cancel (the agent kind aborts the chat) and
    aborted. A finished run is refused with a clear message."""
    run.refresh_from_db()  # the caller's copy may be stale: act on the row as it is
    with audit.control("run.cancel", actor, _run_target(run), reason=reason) as ctl:
        ctl.note(f"now {_cancel(actor, run, reason)}")
    return run


def retried_fields(actor: Actor) -> dict[str, Any]:
    """What a retry resets on a run (its status aside): a new first attempt, by ``actor``."""
    return {
        "attempts": 0,
        "error_class": "",
        "error": "",
        "result": "",
        "finished_at": None,
        "run_after": None,
        "next_attempt_at": None,
        "triggered_by": f"retry by {actor.label}"[:200],
    }


def _retry(actor: Actor, run: Run) -> None:
    if run.status not in RETRYABLE:
        raise ValidationError(
            f"run {run.pk} is {run.status}: only failed, aborted, lost or cancelled runs can be retried",
            code="illegal_state",
        )
    status = Run.Status.PARKED if queue.covered_by_pause(run) else Run.Status.QUEUED
    try:
        with transaction.atomic():
            changed = Run.objects.filter(pk=run.pk, status__in=RETRYABLE).update(
                status=status, **retried_fields(actor)
            )
    except IntegrityError:
        raise ValidationError(
            f"run {run.pk}: another run with dedupe key {run.dedupe_key!r} is in progress", code="dedupe"
        ) from None
    if not changed:
        run.refresh_from_db()
        raise ValidationError(f"run {run.pk} is {run.status} now: not retried", code="illegal_state")
    if status == Run.Status.QUEUED:
        transaction.on_commit(lambda: queue.send_dispatch(run.priority))
    run.refresh_from_db()


def retry_run(actor: Actor, run: Run, reason: str = "") -> Run:
    """A final failed / aborted / lost / cancelled run is queued again for a new attempt."""
    run.refresh_from_db()
    with audit.control("run.retry", actor, _run_target(run), reason=reason) as ctl:
        _retry(actor, run)
        ctl.note(f"now {run.status}")
    return run


def bulk_queryset(action: str, filters: Mapping[str, Any]) -> Any:
    unknown = sorted(set(filters) - set(BULK_FILTERS))
    if unknown:
        raise ValidationError(
            f"unknown filter(s) {', '.join(unknown)} (use {', '.join(BULK_FILTERS)})", code="bad_filter"
        )
    legal = {"cancel": CANCELLABLE, "retry": RETRYABLE}.get(action)
    if legal is None:
        raise ValidationError(f"unknown bulk action {action!r} (cancel or retry)", code="bad_action")
    lookups = {("job_name" if k == "job" else k): v for k, v in filters.items() if v not in (None, "")}
    return Run.objects.filter(status__in=legal, **lookups).order_by("id")


def bulk(
    actor: Actor, action: str, filters: Mapping[str, Any], dry_run: bool = True, reason: str = ""
) -> int:
    """Cancel or retry every run the filter matches that is in a legal state for it. A dry run
    counts them and changes nothing (no audit row); the real one writes one audit row."""
    if dry_run:
        return bulk_queryset(action, filters).count()
    label = ", ".join(f"{k}={v}" for k, v in sorted(filters.items())) or "all"
    with audit.control(f"runs.bulk_{action}"[:60], actor, Target("runs", "", label), reason=reason) as ctl:
        done = 0
        for run in bulk_queryset(action, filters):
            try:
                _cancel(actor, run, reason) if action == "cancel" else _retry(actor, run)
                done += 1
            except ValidationError:
                continue  # moved to a state the action does not apply to meanwhile
        ctl.note(f"{done} run(s)")
    return done


def run_now(actor: Actor, job: Job, reason: str = "") -> Run:
    """Queue a run of ``job`` now for ``actor`` (the Jobs page's "Run now"), audited."""
    with audit.control("job.run_now", actor, Target("job", str(job.pk), job.name), reason=reason) as ctl:
        run = queue.enqueue(job, trigger=Run.Trigger.USER, triggered_by=actor.label)
        ctl.note(f"run {run.pk} {run.status}")
    return run
