"""Jobs: the list, a job's page with its definition and recent runs, and "Run now"
(``scheduler.controls.run_now``: role check and audit row there)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Count, Max, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard import access
from scheduler import controls
from scheduler.models import Job, Run

RECENT_RUNS = 25


@require_GET
def jobs(request: HttpRequest) -> HttpResponse:
    listed = Job.objects.annotate(
        run_count=Count("runs"),
        active=Count("runs", filter=Q(runs__status__in=Run.NOT_FINAL)),
        last_queued=Max("runs__queued_at"),
    ).order_by("name")
    # The batches' system jobs (scheduler/batch_runs.py) are listed apart, below the operators' jobs.
    return render(
        request,
        "dashboard/jobs.html",
        {"jobs": listed.filter(system=False), "system_jobs": listed.filter(system=True)},
    )


@require_GET
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(Job.objects.select_related("on_error_job"), pk=job_id)
    can = access.can_operate(request)
    return render(
        request,
        "dashboard/job.html",
        {
            "job": job,
            "runs": list(job.runs.order_by("-id")[:RECENT_RUNS]),
            "run_now_disabled": ""
            if can and job.enabled
            else ("Needs the operator role." if not can else "The job is disabled."),
        },
    )


@require_POST
def job_run_now(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(Job, pk=job_id)
    try:
        run = controls.run_now(access.actor(request), job)
    except ValidationError as exc:
        messages.error(request, "Not queued: " + "; ".join(exc.messages))
        return redirect("dashboard:job-detail", job.pk)
    messages.success(request, f"Run {run.pk} of {job.name} is {run.get_status_display().lower()}.")
    return redirect("dashboard:job-detail", job.pk)
