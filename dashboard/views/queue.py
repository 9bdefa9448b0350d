"""The Queue page (live: its figures re-fetch every few seconds while visible) and its pause /
resume buttons, which call ``scheduler.controls`` (role check and audit row there)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard import access, queue_page
from fleet import agent_runs
from scheduler import controls
from scheduler.models import Priority, QueuePause, Run


def _context(request: HttpRequest) -> dict:
    return {
        "q": queue_page.build(),
        "state_labels": [(s, Run.Status(s).label) for s in queue_page.STATES],
        "priorities": Priority.choices,
        "scopes": [(v, label) for v, label in QueuePause.Scope.choices if v not in ("all", "priority")],
        "can_operate": access.can_operate(request),
    }


@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/queue.html", _context(request))


@require_GET
def queue_fragment(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/queue.html#queue_live", _context(request))


def _label(scope: str, value: str) -> str:
    if scope == QueuePause.Scope.ALL:
        return "everything"
    return f"the {value} priority" if scope == QueuePause.Scope.PRIORITY else f"{scope} {value}"


def _scope(request: HttpRequest) -> tuple[str, str, str]:
    scope = request.POST.get("scope", "")
    value = request.POST.get("value", "")
    return scope, value, request.POST.get("reason", "").strip()[:500]


@require_POST
def queue_pause(request: HttpRequest) -> HttpResponse:
    scope, value, reason = _scope(request)
    try:
        pause = controls.pause(access.actor(request), scope, value, reason)
    except ValidationError as exc:
        messages.error(request, "Not paused: " + "; ".join(exc.messages))
    else:
        messages.success(request, f"Paused {_label(pause.scope, pause.value)}.")
    return redirect("dashboard:queue")


@require_POST
def queue_resume(request: HttpRequest) -> HttpResponse:
    scope, value, reason = _scope(request)
    try:
        released = controls.resume(access.actor(request), scope, value, reason)
    except ValidationError as exc:
        messages.error(request, "Not resumed: " + "; ".join(exc.messages))
    else:
        messages.success(
            request, f"Resumed {_label(scope, value)}; {released} run{'s' if released != 1 else ''} released."
        )
    return redirect("dashboard:queue")


@require_POST
def queue_unblock(request: HttpRequest) -> HttpResponse:
    """Unblock a provider by hand (its credentials were fixed): the blocked runs are queued again
    in their first order. ``fleet.agent_runs.unblock`` checks the role and writes the audit row."""
    gateway, agent, provider = (
        request.POST.get(name, "").strip()[:100] for name in ("gateway", "agent", "provider")
    )
    if not (gateway and agent and provider):
        messages.error(request, "Not unblocked: say which gateway, agent and provider.")
        return redirect("dashboard:queue")
    reason = request.POST.get("reason", "").strip()[:500] or "unblocked from the queue page"
    requeued = agent_runs.unblock(access.actor(request), gateway, agent, provider, reason)
    messages.success(
        request,
        f"Unblocked {provider} for agent {agent}; {requeued} run{'s' if requeued != 1 else ''} queued again.",
    )
    return redirect("dashboard:queue")
