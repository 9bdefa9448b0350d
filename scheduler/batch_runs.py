"""The batches in the runs table: each batch execution is also a ``Run`` of kind ``batch``.

A batch run keeps its own path: beat (or ``queue_batch``) sends ``run_batch`` to a worker,
the runner takes the batch's lease and records the run as it starts. It is **not** queued:
the runner writes the ``Run`` already ``running`` with its single ``Attempt`` (the worker's
``host:pid``, ``in_worker``), so it never waits in the wheel, no pause or concurrency limit
holds it, and a backlog of agent runs cannot delay session polling. When the work ends the
runner settles the attempt through ``queue.complete_attempt`` like any other run:

    BatchRun ok                → Run succeeded (result: the summary and the counts)
    BatchRun skipped (Skip)    → Run succeeded (result: "skipped (reason)")
    BatchRun error             → Run failed, error class ``system`` (one attempt, no retry)
    BatchRun lost              → Run lost (runner.mark_lost, or the tick's dead-worker pass)
    skipped on its lock        → no Run: nothing ran (the BatchRun row says so)

Each registered batch has a **system job** (``batch-001``…, ``Job.system``), created after
``migrate`` and by ``setup_schedules``; it cannot be deleted. Running it from the queue ("Run now"
on the job page, a retry of a lost run) goes through the ``batch`` action below, which runs
the batch in the claiming worker under the same lease, linked to the queued Run.

Retention: batch Runs go with the BatchRun history (BATCH-004, :func:`delete_before`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models.signals import post_migrate
from django.utils import timezone

from . import errors, registry
from .actions import ActionSpec, AttemptContext, Finished, Started
from .models import Attempt, BatchRun, Job, Priority, Run

if TYPE_CHECKING:
    from django.apps import AppConfig
    from django.apps.registry import Apps

log = logging.getLogger("agentflow.scheduler")

KIND = "batch"


def job_name(batch: str) -> str:
    """The system job of a batch: "BATCH-001" → "batch-001"."""
    return batch.lower()[:100]


def _job_defaults(spec: registry.BatchSpec) -> dict[str, Any]:
    return {
        "kind": KIND,
        "params": {"batch": spec.id},
        "system": True,
        "priority": Priority.HIGH,
        "on_error": Job.OnError.NOTHING,  # the batch's own alert_on_error alerts (runner.notify_failure)
        "max_attempts": 1,
        "timeout_seconds": max(1, int(spec.lock_ttl)),
        "tags": ["system", "batch"],
    }


def ensure_system_jobs(job_model: Any = Job) -> list[str]:
    """Create the missing system job of every registered batch; returns the names created.
    Existing ones are left as operators changed them (only ``system`` is kept true)."""
    created = []
    for spec in registry.batches():
        job, made = job_model.objects.get_or_create(name=job_name(spec.id), defaults=_job_defaults(spec))
        if made:
            created.append(job.name)
        elif not job.system:
            job_model.objects.filter(pk=job.pk).update(system=True)
    return created


def system_job(batch: str) -> Job:
    """The system job of ``batch``, created when missing (a batch registered after migrate)."""
    job = Job.objects.filter(name=job_name(batch)).first()
    if job is None:
        spec = registry.get(batch)
        job, _ = Job.objects.get_or_create(name=job_name(batch), defaults=_job_defaults(spec))
    return job


def create_after_migrate(sender: AppConfig, apps: Apps | None = None, **kwargs: Any) -> None:
    """post_migrate: the system jobs exist as soon as the database does (not when migrated back
    to before 0008, where the historical Job has no ``system`` column)."""
    if apps is None:
        return
    try:
        historical = apps.get_model("scheduler", "Job")
        historical._meta.get_field("system")
    except LookupError:
        return
    except Exception:  # FieldDoesNotExist: a state before 0008
        return
    ensure_system_jobs(historical)


def connect() -> None:
    post_migrate.connect(create_after_migrate, dispatch_uid="scheduler-system-jobs")


# --- the runner's side ---------------------------------------------------------------------------


def open_run(
    batch: str,
    *,
    scope: str,
    target_id: int | None,
    target_name: str,
    worker: str,
    started_at: datetime,
    trigger: str,
    timeout_seconds: int,
) -> tuple[Run, Attempt]:
    """The Run of a batch execution that starts now: written running with its one attempt."""
    job = system_job(batch)
    params: dict[str, Any] = {"batch": batch}
    if scope:
        params.update(scope=scope, target_id=target_id)
    spec = registry.find(batch)
    label = spec.label if spec else batch
    with transaction.atomic():
        run = Run.objects.create(
            job=job,
            job_name=job.name,
            kind=KIND,
            params=params,
            priority=job.priority,
            status=Run.Status.RUNNING,
            trigger=trigger,
            triggered_by=(f"{batch} {label}" + (f" {scope}={target_name}" if scope else ""))[:200],
            queued_at=started_at,
            started_at=started_at,
            attempts=0,
            max_attempts=1,
            timeout_seconds=max(1, int(timeout_seconds)),
        )
        attempt = Attempt.objects.create(run=run, number=1, worker=worker, started_at=started_at)
    return run, attempt


def outcome_of(record: BatchRun) -> Finished:
    """What a finished BatchRun means for its Run."""
    counts = record.counts_text
    if record.status == BatchRun.Status.ERROR:
        return Finished("failed", errors.SYSTEM, record.error or record.summary)
    text = record.summary + (f" · {counts}" if counts and record.status == BatchRun.Status.OK else "")
    return Finished("succeeded", result=text)


def settle(attempt: Attempt, record: BatchRun) -> None:
    """The runner's end of a batch Run (first terminal wins: a run already lost stays lost)."""
    from . import queue

    try:
        queue.complete_attempt(attempt.pk, outcome_of(record))
    except Exception:  # the BatchRun is written; the Run is settled by the lost-run passes
        log.exception("[%s] could not settle run %s", record.batch, attempt.run_id)


def lose(run_id: int, error: str, now: datetime | None = None) -> bool:
    """Mark a batch Run lost with its running attempt (the BatchRun was found lost)."""
    from . import queue

    now = now or timezone.now()
    with transaction.atomic():
        run = Run.objects.select_for_update(of=("self",)).select_related("job").filter(pk=run_id).first()
        if run is None or run.status != Run.Status.RUNNING:
            return False
        Attempt.objects.filter(run_id=run_id, status=Attempt.Status.RUNNING).update(
            status=Attempt.Status.LOST,
            error_class=errors.SYSTEM,
            error=error,
            finished_at=now,
            in_worker=False,
        )
        run.status = Run.Status.LOST
        run.attempts = max(run.attempts, 1)
        run.error_class = errors.SYSTEM
        run.error = error
        run.finished_at = now
        run.save()
        queue.finished(run)
    return True


def delete_before(cutoff: datetime, *, batch_size: int, dry_run: bool = False) -> int:
    """Delete the batch Runs queued before ``cutoff`` (with their attempts), ``batch_size`` per
    transaction; the BatchRun retention of BATCH-004 calls it after deleting the BatchRuns."""
    old = Run.objects.filter(kind=KIND, queued_at__lt=cutoff).exclude(status__in=Run.NOT_FINAL)
    if dry_run:
        return old.count()
    total = 0
    while True:
        ids = list(old.order_by("id").values_list("pk", flat=True)[:batch_size])
        if not ids:
            return total
        with transaction.atomic():
            BatchRun.objects.filter(run_id__in=ids).update(run=None)
            Attempt.objects.filter(run_id__in=ids).delete()
            deleted, _ = Run.objects.filter(pk__in=ids).delete()
        total += len(ids)
        if deleted == 0:
            return total


# --- the action: a batch run started from the queue ----------------------------------------------


def _validate(params: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - {"batch", "scope", "target_id"})
    if unknown:
        raise ValidationError(f"batch: unknown parameter(s) {', '.join(unknown)}", code="invalid_params")
    batch = params.get("batch")
    spec = registry.find(batch) if isinstance(batch, str) else None
    if spec is None:
        known = ", ".join(registry.batch_ids()) or "none"
        raise ValidationError(f"batch: unknown batch {batch!r} (registered: {known})", code="invalid_params")
    cleaned: dict[str, Any] = {"batch": spec.id}
    target_id = params.get("target_id")
    if target_id not in (None, ""):
        if spec.scope is None:
            raise ValidationError(
                f"batch: {spec.id} is a global batch, it has no targets", code="invalid_params"
            )
        if isinstance(target_id, bool) or not isinstance(target_id, int):
            raise ValidationError("batch: target_id must be a whole number", code="invalid_params")
        cleaned.update(scope=spec.scope, target_id=target_id)
    return cleaned


def _start(ctx: AttemptContext) -> Finished | Started:
    """Run the batch now in this worker, linked to the queued run (a per-target batch without a
    target fans out: one batch Run per target, through the batch tasks)."""
    from . import runner, tasks

    spec = registry.get(ctx.params["batch"])
    if spec.scope is None:
        record = runner.run(spec.id, None, attach=(ctx.run, ctx.attempt))
        return outcome_of(record)
    target_id = ctx.params.get("target_id")
    if target_id is None:
        ids = list(registry.scope(spec.scope).ids())
        for one in ids:
            tasks.run_batch_for.delay(spec.id, one)
        return Finished("succeeded", result=f"queued {spec.id} for {len(ids)} {spec.scope}(s)")
    target = registry.scope(spec.scope).load(target_id)
    if target is None:
        return Finished(
            "failed",
            errors.INVALID_REQUEST,
            f"{spec.scope} {target_id} is gone or disabled: {spec.id} not run",
        )
    record = runner.run(spec.id, target, attach=(ctx.run, ctx.attempt))
    return outcome_of(record)


BATCH_ACTION = ActionSpec(
    KIND,
    "Batch",
    start=_start,
    validate=_validate,
    description="One of the registered batches (BATCH-001…), run under its lease: the system jobs.",
)
