"""Flows: the stored flow definitions and recent flow runs, one flow's page, and a run's trace
waterfall (``dashboard.trace`` builds it; ``dashboard.flows_page`` lists the flows)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from dashboard import flows_page, trace
from flows.models import Flow
from scheduler.models import Run


@require_GET
def flows(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "dashboard/flows.html",
        {
            "flows": flows_page.flow_rows(),
            "flow_files": flows_page.flow_files(),
            "flow_runs": list(flows_page.recent_runs()),
        },
    )


@require_GET
def flow_detail(request: HttpRequest, name: str) -> HttpResponse:
    flow = get_object_or_404(Flow, name=name)
    return render(
        request,
        "dashboard/flow.html",
        {"flow": flow, "flow_runs": list(flows_page.recent_runs(flow.name)), **flows_page.flow_detail(flow)},
    )


@require_GET
def run_trace(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(Run, pk=run_id)
    built = trace.for_run(run)
    stored = built.flow_run is not None and Flow.objects.filter(name=built.flow_run.flow_name).exists()
    return render(request, "dashboard/trace.html", {"run": run, "trace": built, "flow_stored": stored})
