"""The fleet overview and its fragments (a gateway's section, an agent's sessions, the health card).

Fragments are partials of the page templates (django-template-partials), so a pushed or
re-fetched piece is the same markup as the full page."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from dashboard import overview
from dashboard.views import HtmxHttpRequest
from fleet.models import Agent, AgentSession, Gateway


@require_GET
def overview_page(request: HtmxHttpRequest) -> HttpResponse:
    filters = overview.Filters.from_query(request.GET)
    gateways = overview.build(filters)
    context: dict[str, Any] = {"gateways": gateways, "filters": filters}
    if request.htmx and request.htmx.target == "fleet":
        return render(request, "dashboard/overview.html#fleet", context)
    context.update(
        statuses=AgentSession.Status.choices,
        agent_ids=sorted({a.agent_id for gv in gateways for a in gv.agent_choices}),
    )
    return render(request, "dashboard/overview.html", context)


@require_GET
def gateway_fragment(request: HttpRequest, gateway_id: int) -> HttpResponse:
    """One gateway's section (health, counts, org chart), re-fetched by the live page."""
    filters = overview.Filters.from_query(request.GET)
    views = overview.build(filters, gateway_ids=[gateway_id])
    if not views:
        raise Http404("no such gateway")
    return render(request, "dashboard/overview.html#gateway_section", {"gv": views[0], "filters": filters})


@require_GET
def agent_sessions_fragment(request: HttpRequest, gateway_id: int, agent_pk: int) -> HttpResponse:
    """One agent's session list: loaded when a collapsed agent is expanded, re-fetched live."""
    agent = get_object_or_404(Agent, gateway_id=gateway_id, pk=agent_pk)
    anode = overview.agent_sessions(agent, overview.Filters.from_query(request.GET))
    return render(request, "dashboard/partials/agent_sessions.html", {"anode": anode})


@require_GET
def health_fragment(request: HttpRequest, gateway_id: int) -> HttpResponse:
    gateway = get_object_or_404(Gateway, pk=gateway_id)
    return render(request, "dashboard/partials/health_card.html", {"gv": overview.health(gateway)})


@require_GET
def counts_fragment(request: HttpRequest, gateway_id: int) -> HttpResponse:
    """The counts line (agents, sessions per status, runs in flight), re-fetched live."""
    gateway = get_object_or_404(Gateway, pk=gateway_id)
    return render(request, "dashboard/partials/counts.html", {"gv": overview.counts_line(gateway)})
