"""The ``job-failing`` alert rule's event side: consecutive final failures of one job.

A job whose last N final runs all failed (failed or lost; N is the rule's threshold, by
default ``AGENTFLOW_JOB_FAILURE_ALERT_AFTER``, 3) gets ONE open alert, not one per failure (the
job's own ``on_error=notify`` alerts per run; this one says "it keeps failing"). It is raised the
moment the N-th failure ends, through :func:`scheduler.alert_rules.fire` (de-duplicated,
notified), and the job's next success resolves it; the evaluator re-checks the open ones
(scheduler/alert_conditions.py). Cancelled and aborted runs are an operator's doing: they
neither count nor break the streak.

Also every page's alert banners: :func:`open_snapshot` (the severest open alerts from a Redis
snapshot, refreshed by one bounded query when an alert changed; ``models.drop_alert_banner``).
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime

from agentflow.lib.redis import get_redis, key

from . import alert_rules
from .alert_conditions import COUNTED, FAILED, failure_streak, job_threshold
from .models import ALERT_BANNER_KEY, Alert, AlertRule, Job, Run

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


# --- every page's alert banners ------------------------------------------------------------------

BANNER_TTL = 15  # seconds; a saved, updated or deleted alert drops the snapshot at once (models)


def open_snapshot(shown: int, cap: int) -> tuple[list[Alert], int]:
    """The severest ``shown`` open alerts and how many are open (at most ``cap`` + 1), for every
    page's banners: from a Redis snapshot (no query, so pages keep their query budgets), else one
    bounded query on the ``alert_open`` index that refreshes it. The alerts are unsaved copies."""
    raw = None
    with contextlib.suppress(Exception):
        raw = get_redis().get(key(*ALERT_BANNER_KEY))
    if raw is not None:
        data = json.loads(raw)
        rows = [
            Alert(
                pk=r["id"],
                level=r["level"],
                source=r["source"],
                message=r["message"],
                rule=r["rule"],
                subject=r["subject"],
                count=r["count"],
                created_at=datetime.fromisoformat(r["created_at"]),
                last_seen=datetime.fromisoformat(r["last_seen"]) if r["last_seen"] else None,
            )
            for r in data["rows"]
        ]
        return rows, int(data["count"])
    found = list(Alert.objects.open().by_severity()[: cap + 1])
    rows = found[:shown]
    snapshot = {
        "count": len(found),
        "rows": [
            {
                "id": a.pk,
                "level": a.level,
                "source": a.source,
                "message": a.message,
                "rule": a.rule,
                "subject": a.subject,
                "count": a.count,
                "created_at": a.created_at.isoformat(),
                "last_seen": a.last_seen.isoformat() if a.last_seen else None,
            }
            for a in rows
        ],
    }
    with contextlib.suppress(Exception):
        get_redis().set(key(*ALERT_BANNER_KEY), json.dumps(snapshot), ex=BANNER_TTL)
    return rows, len(found)
