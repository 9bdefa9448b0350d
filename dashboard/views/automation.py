"""The Automation page: AgentFlow's processes (heartbeats) and every registered status section
(schedules, webhook endpoints, file watches: scheduler/automation_status.py), the newest lines
of the automation log, and each gateway's own cron jobs (fleet/gateway_cron.py) with a switch to
pause / resume them (role admin, audited; the gateway token needs operator.admin)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from agentflow.lib import eventlog
from dashboard import access
from fleet import gateway_cron
from fleet.models import Gateway
from scheduler import automation_status

LOG_SHOWN = 30


@require_GET
def automation(request: HttpRequest) -> HttpResponse:
    try:
        log_lines = [(line, eventlog.format_line(line)) for line in reversed(eventlog.read(LOG_SHOWN))]
        log_error = ""
    except Exception as exc:  # Redis down: the rest of the page still renders
        log_lines, log_error = [], f"Redis did not answer ({type(exc).__name__})."
    return render(
        request,
        "dashboard/automation.html",
        {
            "tables": automation_status.tables(),
            "crons": gateway_cron.overview(),
            "log_lines": log_lines,
            "log_error": log_error,
            "may_switch": access.actor(request).can("administer"),
        },
    )


@require_POST
def gateway_cron_switch(request: HttpRequest, gateway_id: int) -> HttpResponse:
    gateway = get_object_or_404(Gateway, pk=gateway_id)
    action = request.POST.get("action", "")
    if action not in ("pause", "resume"):
        messages.error(request, 'Choose "pause" or "resume".')
        return redirect("dashboard:automation")
    switch = gateway_cron.pause if action == "pause" else gateway_cron.resume
    problem = switch(access.actor(request), gateway, request.POST.get("reason", "")[:500])
    if problem:
        messages.error(
            request, f"{gateway.name}: not {'paused' if action == 'pause' else 'resumed'}: {problem}."
        )
    else:
        messages.success(
            request, f"{gateway.name}: its cron is {'paused' if action == 'pause' else 'running again'}."
        )
    return redirect("dashboard:automation")
