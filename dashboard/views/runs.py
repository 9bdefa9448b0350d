"""Runs: a filtered list and a run's page with its attempts, and the Cancel / Retry buttons
(``scheduler.controls``: role check and audit row there)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import OuterRef, Subquery
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard import access
from dashboard.params import BadParam, as_id
from scheduler import actions, controls
from scheduler.models import Attempt, Job, Priority, Run

RUNS_PER_PAGE = 50
RESULT_SHOWN = 4000  # characters of the result on the run page; the whole is one link away


def _choice(request: HttpRequest, name: str, allowed: list[str]) -> str:
    value = request.GET.get(name, "")
    if value and value not in allowed:
        raise BadParam(name, f"must be one of {', '.join(allowed)}, got {value[:40]!r}")
    return value


def _kinds() -> list[str]:
    return sorted(spec.key for spec in actions.actions())


@require_GET
def runs(request: HttpRequest) -> HttpResponse:
    filters = {
        "status": _choice(request, "status", list(Run.Status.values)),
        "priority": _choice(request, "priority", list(Priority.values)),
        "job": request.GET.get("job", "").strip()[:100],
        "kind": _choice(request, "kind", _kinds()),
    }
    # Successful batch runs (BATCH-003 polls every few seconds) would bury every other run: they
    # are left out unless asked for (a kind, status or job filter, or "show batches"); the Batch runs
    # page is their home.
    show_batches = (
        request.GET.get("batches") == "all" or filters["kind"] == "batch" or bool(filters["status"])
    )
    qs = Run.objects.all()
    if not show_batches:
        qs = qs.exclude(kind="batch", status=Run.Status.SUCCEEDED)
    if filters["status"]:
        qs = qs.filter(status=filters["status"])
    if filters["priority"]:
        qs = qs.filter(priority=filters["priority"])
    if filters["job"]:
        qs = qs.filter(job_name=filters["job"])
    if filters["kind"]:
        qs = qs.filter(kind=filters["kind"])
    last_session = (
        Attempt.objects.filter(run=OuterRef("pk"))
        .exclude(session_key="")
        .order_by("-number")
        .values("session_key")
    )
    qs = qs.annotate(session_key=Subquery(last_session[:1]))
    page = Paginator(qs.order_by("-id"), RUNS_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "dashboard/runs.html",
        {
            "page": page,
            "filters": filters,
            "active": any(filters.values()),
            "show_batches": show_batches,
            "batches_param": request.GET.get("batches") == "all",
            "statuses": Run.Status.choices,
            "priorities": Priority.choices,
            "kinds": _kinds(),
            "job_names": list(Job.objects.values_list("name", flat=True)[:200]),
        },
    )


def _disabled(request: HttpRequest, run: Run) -> dict[str, str]:
    """Why each button is off ("" when it is on)."""
    if not access.can_operate(request):
        reason = "Needs the operator role."
        return {"cancel": reason, "retry": reason}
    return {
        "cancel": "" if run.status in controls.CANCELLABLE else f"A {run.status} run cannot be cancelled.",
        "retry": "" if run.status in controls.RETRYABLE else f"A {run.status} run cannot be retried.",
    }


@require_GET
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(Run.objects.select_related("job"), pk=run_id)
    attempts = list(run.attempt_set.order_by("number"))
    session = next((a.session_key for a in reversed(attempts) if a.session_key), "")
    return render(
        request,
        "dashboard/run.html",
        {
            "run": run,
            "attempts": attempts,
            "session_key": session,
            "gateway_id": as_id(run.gateway),
            "result": run.result[:RESULT_SHOWN],
            "result_cut": len(run.result) > RESULT_SHOWN,
            "disabled": _disabled(request, run),
            "result_deliveries": list(
                run.result_deliveries.select_related("notification_delivery", "started_run").order_by(
                    "created_at"
                )
            ),
        },
    )


@require_GET
def run_result(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(Run, pk=run_id)
    return HttpResponse(run.result, content_type="text/plain; charset=utf-8")


@require_POST
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(Run, pk=run_id)
    try:
        controls.cancel_run(access.actor(request), run, request.POST.get("reason", "")[:500])
    except ValidationError as exc:
        messages.error(request, "Not cancelled: " + "; ".join(exc.messages))
    else:
        messages.success(request, f"Run {run.pk} is {run.get_status_display().lower()}.")
    return redirect("dashboard:run-detail", run.pk)


@require_POST
def run_retry(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(Run, pk=run_id)
    try:
        controls.retry_run(access.actor(request), run, request.POST.get("reason", "")[:500])
    except ValidationError as exc:
        messages.error(request, "Not retried: " + "; ".join(exc.messages))
    else:
        messages.success(request, f"Run {run.pk} is {run.get_status_display().lower()} again.")
    return redirect("dashboard:run-detail", run.pk)
