"""The ``job-failing`` alert rule's event side: consecutive final failures of one job.

A job whose last N final runs all failed (failed or lost; N is the rule's threshold, by
default ``AGENTFLOW_JOB_FAILURE_ALERT_AFTER``, 3) gets ONE open alert, not one per failure (the
job's own ``on_error=notify`` alerts per run; this one says "it keeps failing"). It is raised the
moment the N-th failure ends, through :func:`scheduler.alert_rules.fire` (de-duplicated,
notified), and the job's next success resolves it; the evaluator re-checks the open ones
(scheduler/alert_conditions.py). Cancelled and aborted runs are an operator's doing: they
neither count nor break the streak.
"""

from __future__ import annotations

from . import alert_rules
from .alert_conditions import COUNTED, FAILED, failure_streak, job_threshold
from .models import Alert, AlertRule, Job, Run

RULE = "job-failing"


def source_for(job: Job) -> str:
    return f"{RULE}:{job.name}"[:50]


def on_run_final(run: Run) -> Alert | None:
    """Called inside the transaction that made ``run`` final (scheduler.queue.finished). Returns
    the alert raised, if this run raised one."""
    if run.job_id is None or run.status not in COUNTED:
        return None
    # Lock the job row: two runs of it ending at once see each other's outcome (one alert).
    job = Job.objects.select_for_update().filter(pk=run.job_id).first()
    if job is None:
        return None
    if run.status == Run.Status.SUCCEEDED:
        alert_rules.clear(RULE, job.name)
        return None
    threshold = job_threshold(AlertRule.objects.filter(key=RULE).first())
    last = failure_streak(job, threshold)
    if len(last) < threshold or any(status not in FAILED for status in last):
        return None
    return alert_rules.fire(
        RULE,
        job.name,
        (
            f"job {job.name} failed {threshold} times in a row (last: run {run.pk}"
            + (f", {run.error_class}: {run.error[:300]}" if run.error_class else "")
            + "); resolved by its next success"
        ),
        value=float(threshold),
        source=source_for(job),
    )
