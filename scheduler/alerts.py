"""Alerts the engine raises on its own: consecutive final failures of one job.

A job whose last ``AGENTFLOW_JOB_FAILURE_ALERT_AFTER`` (3) final runs all failed (failed or
lost) gets ONE open alert, not one per failure (the job's own ``on_error=notify`` alerts per
run; this one says "it keeps failing"). The job's next success resolves it. Cancelled and
aborted runs are an operator's doing: they neither count nor break the streak.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from . import live
from .models import Alert, Job, Run

FAILED = (Run.Status.FAILED, Run.Status.LOST)
COUNTED = (Run.Status.SUCCEEDED, *FAILED)


def source_for(job: Job) -> str:
    return f"job-failing:{job.name}"[:50]


def on_run_final(run: Run) -> Alert | None:
    """Called inside the transaction that made ``run`` final (scheduler.queue.finished). Returns
    the alert raised, if this run raised one."""
    if run.job_id is None or run.status not in COUNTED:
        return None
    # Lock the job row: two runs of it ending at once see each other's outcome (one alert).
    job = Job.objects.select_for_update().filter(pk=run.job_id).first()
    if job is None:
        return None
    source = source_for(job)
    if run.status == Run.Status.SUCCEEDED:
        Alert.objects.open().filter(source=source).update(resolved_at=timezone.now())
        return None
    threshold = settings.AGENTFLOW_JOB_FAILURE_ALERT_AFTER
    last = list(
        Run.objects.filter(job=job, status__in=COUNTED)
        .order_by("-finished_at", "-id")
        .values_list("status", flat=True)[:threshold]
    )
    if len(last) < threshold or any(status not in FAILED for status in last):
        return None
    if Alert.objects.open().filter(source=source).exists():
        return None  # already raised for this streak
    alert = Alert.objects.create(
        source=source,
        message=(
            f"job {job.name} failed {threshold} times in a row (last: run {run.pk}"
            + (f", {run.error_class}: {run.error[:300]}" if run.error_class else "")
            + "); resolved by its next success"
        ),
    )
    live.ALERT_RAISED.send_on_commit()
    return alert
