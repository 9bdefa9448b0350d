"""Pages and fragments. Views parse input, check access, call a domain function, render.
Fragments are partials of the page templates (django-template-partials), so a pushed or
re-fetched piece is the same markup as the full page."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from . import chats, configs, health, metrics, overview, services
from .gateway import GatewayError
from .models import Agent, AgentSession, ChatHistory, ConfigHistory, Gateway

CHAT_PAGE = 100  # messages shown on a chat panel before "older"
PREVIEW_CHARS = 4000  # longer messages render truncated with a link to the full text


@login_not_required
@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    report = health.report()
    return JsonResponse(report, status=503 if report["status"] == "down" else 200)


@login_not_required
@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    allowed = settings.METRICS_ALLOWED_IPS
    if allowed and request.META.get("REMOTE_ADDR") not in allowed:
        return HttpResponseForbidden("metrics are restricted (AGENTFLOW_METRICS_ALLOWED_IPS)\n")
    return HttpResponse(metrics.render(), content_type=metrics.CONTENT_TYPE)


@require_GET
def overview_page(request: HttpRequest) -> HttpResponse:
    filters = overview.Filters.from_query(request.GET)
    context = {"gateways": overview.build(filters), "filters": filters}
    if request.htmx and request.htmx.target == "fleet":
        return render(request, "dashboard/overview.html#fleet", context)
    context.update(
        statuses=AgentSession.Status.choices,
        agent_ids=sorted({a.agent_id for gv in context["gateways"] for a in gv.agent_choices}),
        alerts=overview.open_alerts(),
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


def _session_context(gateway: Gateway, session_key: str, request: HttpRequest) -> dict:
    session = (
        AgentSession.objects.filter(gateway=gateway, session_key=session_key).select_related("agent").first()
    )
    before = request.GET.get("before")
    history = ChatHistory.objects.filter(gateway=gateway, session_key=session_key).order_by(
        "-timestamp", "-id"
    )
    if before and before.isdigit():
        history = history.filter(id__lt=int(before))
    page = list(history[: CHAT_PAGE + 1])
    older = page[CHAT_PAGE].pk if len(page) > CHAT_PAGE else None
    page = list(reversed(page[:CHAT_PAGE]))
    return {
        "gateway": gateway,
        "session": session,
        "session_key": session_key,
        "chat_messages": page,  # not "messages": that name is the flash messages base.html shows
        "older": page[0].pk if older and page else None,
        "preview_chars": PREVIEW_CHARS,
        "idempotency_key": uuid.uuid4(),
        "can_send": gateway.can_write,
        "send_disabled_reason": _send_disabled_reason(gateway),
    }


def _send_disabled_reason(gateway: Gateway) -> str:
    if gateway.can_write:
        return ""
    if gateway.status == Gateway.Status.READ_ONLY:
        return f"This gateway is read-only: {gateway.status_reason}"
    return f"The gateway is {gateway.get_status_display().lower()}" + (
        f": {gateway.status_reason}" if gateway.status_reason else "."
    )


@require_GET
def session_detail(request: HttpRequest, gateway_id: int, session_key: str) -> HttpResponse:
    gateway = get_object_or_404(Gateway, pk=gateway_id)
    context = _session_context(gateway, session_key, request)
    chats.open_panel(gateway.pk, session_key)  # BATCH-003 polls it from now on; the websocket keeps it open
    if request.htmx and request.htmx.target == "chat-log":
        return render(request, "dashboard/session.html#chat_log", context)
    return render(request, "dashboard/session.html", context)


@require_GET
def message_detail(request: HttpRequest, gateway_id: int, message_id: int) -> HttpResponse:
    message = get_object_or_404(ChatHistory, gateway_id=gateway_id, pk=message_id)
    return render(request, "dashboard/message.html", {"message": message})


@require_POST
def session_send(request: HttpRequest, gateway_id: int, session_key: str) -> HttpResponse:
    gateway = get_object_or_404(Gateway, pk=gateway_id)
    text = request.POST.get("message", "").strip()
    key = request.POST.get("idempotency_key") or str(uuid.uuid4())
    error = ""
    if not text:
        error = "Type a message first."
    elif len(text) > 100_000:
        error = "The message is too long (100,000 characters at most)."
    elif not gateway.can_write:
        error = _send_disabled_reason(gateway)
    else:
        try:
            services.send_chat(gateway, session_key, text, idempotency_key=key[:100])
        except GatewayError as exc:
            error = exc.operator_message
    if request.htmx:
        context = _session_context(gateway, session_key, request)
        context.update(error=error, draft=text if error else "")
        return render(request, "dashboard/session.html#composer", context, status=400 if error else 200)
    if error:
        messages.error(request, error)
    return redirect(reverse("session-detail", args=[gateway.pk, session_key]))


@require_POST
def session_abort(request: HttpRequest, gateway_id: int, session_key: str) -> HttpResponse:
    gateway = get_object_or_404(Gateway, pk=gateway_id)
    try:
        services.abort_chat(gateway, session_key, run_id=request.POST.get("run_id") or None)
        message, status = "Abort requested.", 200
    except GatewayError as exc:
        message, status = exc.operator_message, 400
    if request.htmx:
        return HttpResponse(f'<span class="notice" role="status">{message}</span>', status=status)
    (messages.success if status == 200 else messages.error)(request, message)
    return redirect(reverse("session-detail", args=[gateway.pk, session_key]))


@require_GET
def config_history(request: HttpRequest, gateway_id: int) -> HttpResponse:
    gateway = get_object_or_404(Gateway, pk=gateway_id)
    rows = list(ConfigHistory.objects.filter(gateway=gateway).defer("config", "diff")[:200])
    diff = old = new = None
    a, b = request.GET.get("a"), request.GET.get("b")
    if a and b and a.isdigit() and b.isdigit():
        pair = {c.pk: c for c in ConfigHistory.objects.filter(gateway=gateway, pk__in=[int(a), int(b)])}
        if len(pair) == 2:
            old, new = sorted(pair.values(), key=lambda c: (c.created_at, c.pk))
            diff = configs.unified_diff(
                old.config,
                new.config,
                f"{old.created_at:%Y-%m-%d %H:%M:%S}",
                f"{new.created_at:%Y-%m-%d %H:%M:%S}",
            ).splitlines()
    elif rows and len(rows) > 1:
        new, old = rows[0], rows[1]
        diff = (ConfigHistory.objects.get(pk=new.pk).diff or "").splitlines()
    return render(
        request,
        "dashboard/config_history.html",
        {"gateway": gateway, "rows": rows, "diff": diff, "old": old, "new": new},
    )


@require_GET
def batch_runs(request: HttpRequest) -> HttpResponse:
    from scheduler.models import Batch, BatchRun

    latest = {r.batch: r for r in BatchRun.objects.select_related("gateway").latest_per_batch()}
    recent = BatchRun.objects.select_related("gateway")
    if (batch := request.GET.get("batch")) in Batch.values:
        recent = recent.filter(batch=batch)
    if request.GET.get("status") in BatchRun.Status.values:
        recent = recent.filter(status=request.GET["status"])
    return render(
        request,
        "dashboard/batches.html",
        {
            "batches": [(b, latest.get(b.value)) for b in Batch],
            "recent": recent[:100],
            "batch_filter": batch,
            "statuses": BatchRun.Status.choices,
        },
    )
