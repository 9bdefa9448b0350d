"""A session's chat panel: history, streaming reply, composer (chat.send) and abort (chat.abort)."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from dashboard import access, params
from dashboard.views import HtmxHttpRequest
from fleet import chats, services, sessions
from fleet.models import Agent, AgentSession, ChatHistory, Gateway
from openclaw import GatewayError
from scheduler import audit

CHAT_PAGE = 100  # messages shown on a chat panel before "older"
PREVIEW_CHARS = 4000  # longer messages render truncated with a link to the full text
VIEWER_REASON = "You have the viewer role: sending and aborting need the operator role."


def _session_context(gateway: Gateway, session_key: str, request: HttpRequest) -> dict:
    session = (
        AgentSession.objects.filter(gateway=gateway, session_key=session_key).select_related("agent").first()
    )
    before = params.get_id(request.GET, "before")
    history = ChatHistory.objects.filter(gateway=gateway, session_key=session_key).order_by(
        "-timestamp", "-id"
    )
    if before is not None:
        history = history.filter(id__lt=before)
    page = list(history[: CHAT_PAGE + 1])
    older = page[CHAT_PAGE].pk if len(page) > CHAT_PAGE else None
    page = list(reversed(page[:CHAT_PAGE]))
    can_operate = access.can_operate(request)
    return {
        "gateway": gateway,
        "session": session,
        "session_key": session_key,
        "agent_label": _agent_label(session, session_key),
        "chat_messages": page,  # not "messages": that name is the flash messages base.html shows
        "older": page[0].pk if older and page else None,
        "preview_chars": PREVIEW_CHARS,
        "idempotency_key": uuid.uuid4(),
        # A viewer's controls are disabled with the reason; the views check the role again.
        "can_operate": can_operate,
        "can_send": gateway.can_write and can_operate,
        "send_disabled_reason": _send_disabled_reason(gateway) if can_operate else VIEWER_REASON,
    }


def _agent_label(session: AgentSession | None, session_key: str) -> str:
    """The agent a session belongs to, for the breadcrumb: its row, else the key's agent part
    (keys look like ``agent:<agentId>:<name>``), else nothing."""
    if session is not None and session.agent is not None:
        # Not str(agent): its emoji is an empty box where no emoji font is installed.
        return session.agent.name or session.agent.agent_id
    parts = session_key.split(":")
    return parts[1] if len(parts) >= 3 and parts[0] == "agent" else ""


def _target(gateway: Gateway, session_key: str) -> audit.Target:
    return audit.Target("session", f"{gateway.pk}:{session_key}", f"{gateway.name} / {session_key}")


def _send_input_error(gateway: Gateway, text: str) -> str:
    if not text:
        return "Type a message first."
    if len(text) > 100_000:
        return "The message is too long (100,000 characters at most)."
    return _send_disabled_reason(gateway)


def _send_disabled_reason(gateway: Gateway) -> str:
    if gateway.can_write:
        return ""
    if gateway.status == Gateway.Status.READ_ONLY:
        return f"This gateway is read-only: {gateway.status_reason}"
    return f"The gateway is {gateway.get_status_display().lower()}" + (
        f": {gateway.status_reason}" if gateway.status_reason else "."
    )


@require_GET
def session_detail(request: HtmxHttpRequest, gateway_id: int, session_key: str) -> HttpResponse:
    gateway = get_object_or_404(Gateway, pk=gateway_id)
    chats.open_panel(gateway.pk, session_key)  # BATCH-003 polls it from now on; the websocket keeps it open
    partial = PARTIALS.get(request.htmx.target or "") if request.htmx else None
    # Opening a panel on a session with nothing stored: fetch its history once, bounded.
    notice = "" if partial else chats.fetch_on_open(gateway, session_key)
    context = _session_context(gateway, session_key, request)
    context.update(history_notice=notice, focus=request.GET.get("new") == "1")
    if partial:
        return render(request, f"dashboard/session.html#{partial}", context)
    return render(request, "dashboard/session.html", context)


# Fragments of the session page its live script re-fetches (by the element's id, htmx's HX-Target).
PARTIALS = {"chat-log": "chat_log", "session-meta": "session_meta"}


@require_GET
def message_detail(request: HttpRequest, gateway_id: int, message_id: int) -> HttpResponse:
    message = get_object_or_404(ChatHistory, gateway_id=gateway_id, pk=message_id)
    return render(request, "dashboard/message.html", {"message": message})


@require_POST
def session_send(request: HtmxHttpRequest, gateway_id: int, session_key: str) -> HttpResponse:
    gateway = get_object_or_404(Gateway, pk=gateway_id)
    text = request.POST.get("message", "").strip()
    key = request.POST.get("idempotency_key") or str(uuid.uuid4())
    # A viewer is refused (and audited) here: 403 before anything is sent.
    with audit.control("chat.send", access.actor(request), _target(gateway, session_key)) as ctl:
        error = _send_input_error(gateway, text)
        if not error:
            try:
                services.send_chat(gateway, session_key, text, idempotency_key=key[:100])
                ctl.note(f"{len(text)} characters sent")
                # The gateway has the session now, even if our sync has not stored it yet: poll its chat.
                chats.register_panel(gateway.pk, session_key)
            except GatewayError as exc:
                error = exc.operator_message
        if error:
            ctl.fail(error)
    if request.htmx:
        context = _session_context(gateway, session_key, request)
        context.update(error=error, draft=text if error else "")
        return render(request, "dashboard/session.html#composer", context, status=400 if error else 200)
    if error:
        messages.error(request, error)
    return redirect(reverse("dashboard:session-detail", args=[gateway.pk, session_key]))


@require_POST
def session_abort(request: HtmxHttpRequest, gateway_id: int, session_key: str) -> HttpResponse:
    gateway = get_object_or_404(Gateway, pk=gateway_id)
    with audit.control("chat.abort", access.actor(request), _target(gateway, session_key)) as ctl:
        try:
            services.abort_chat(gateway, session_key, run_id=request.POST.get("run_id") or None)
            message, status = "Abort requested.", 200
        except GatewayError as exc:
            message, status = exc.operator_message, 400
            ctl.fail(message)
    if request.htmx:
        # A template, so gateway-supplied error text is escaped (it was an f-string once).
        return render(request, "dashboard/partials/abort_notice.html", {"message": message}, status=status)
    (messages.success if status == 200 else messages.error)(request, message)
    return redirect(reverse("dashboard:session-detail", args=[gateway.pk, session_key]))


@require_POST
def new_chat(request: HttpRequest, gateway_id: int, agent_pk: int) -> HttpResponse:
    """ "New chat" on an agent: a fresh session key, then its page with the composer focused.
    Nothing is created on the gateway until the first message is sent."""
    agent = get_object_or_404(Agent, gateway_id=gateway_id, pk=agent_pk)
    try:
        key = sessions.new_session_key(agent.agent_id)
    except ValueError:
        messages.error(request, f"Agent {agent.agent_id!r} has an id no session key can carry.")
        return redirect(reverse("dashboard:overview"))
    return redirect(reverse("dashboard:session-detail", args=[gateway_id, key]) + "?new=1")
