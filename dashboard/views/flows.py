"""Flows: the stored flow definitions and recent flow runs, one flow's page, and a run's trace
waterfall (``dashboard.trace`` builds it; ``dashboard.flows_page`` lists the flows)."""

from __future__ import annotations

import json

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from dashboard import access, flows_page, trace
from flows import spec, tracing
from flows.models import Flow
from scheduler import ops
from scheduler.models import Run

CONTEXT_MAX_BYTES = 64 * 1024


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


@require_http_methods(["GET", "POST"])
def run_flow(request: HttpRequest) -> HttpResponse:
    """Start a flow (a stored one or a file under the roots) with a context, a preset and a
    tracer: a ``flow`` run through the queue (``ops.submit``: the operator role, the audit row)."""
    data = request.POST if request.method == "POST" else request.GET
    form = {
        "flow": data.get("flow", "").strip(),
        "context": data.get("context", "{}") or "{}",
        "preset": data.get("preset", ""),
        "tracer": data.get("tracer", "none"),
    }
    errors: list[str] = []
    if request.method == "POST":
        context = None
        if len(form["context"].encode()) > CONTEXT_MAX_BYTES:
            errors.append(f"The context is over {CONTEXT_MAX_BYTES // 1024} KB.")
        else:
            try:
                context = json.loads(form["context"])
            except ValueError as exc:
                errors.append(f"The context is not JSON: {exc}.")
            else:
                if not isinstance(context, dict):
                    errors.append("The context must be a JSON object.")
        if form["preset"] and form["preset"] not in spec.PRESETS:
            errors.append(f"Unknown preset {form['preset']!r}.")
        if form["tracer"] not in tracing.TRACERS:
            errors.append(f"Unknown tracer {form['tracer']!r}.")
        if not errors:
            params = {"flow": form["flow"], "tracer": form["tracer"]}
            if form["preset"]:
                params["preset"] = form["preset"]
            try:
                run, _ = ops.submit(access.actor(request), kind="flow", params=params, input=context)
            except ValidationError as exc:
                errors.extend(exc.messages)
            else:
                messages.success(request, f"Flow run {run.pk} is {run.get_status_display().lower()}.")
                return redirect("dashboard:run-trace", run.pk)
    choices = [f.name for f in Flow.objects.order_by("name")] + [
        f.path for f in flows_page.flow_files() if f.name
    ]
    return render(
        request,
        "dashboard/flow_run.html",
        {
            "form": form,
            "errors": errors,
            "choices": choices,
            "presets": list(spec.PRESETS),
            "tracers": list(tracing.TRACERS),
            "can_operate": access.can_operate(request),
        },
        status=400 if errors else 200,
    )
