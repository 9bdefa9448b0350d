"""Read-only JSON API (``/api/v1/``) for ops scripts.

Authenticated by the login session or ``Authorization: Bearer <token>`` (tokens are issued in
the admin or by ``manage.py create_api_token`` and stored hashed; a token's role is at most its
user's, and ``/api/v1/audit/`` needs the admin role). Every error is JSON with a clear
``error`` message. Lists are paginated with ``limit`` (≤ 500) and ``offset``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET

from fleet.models import Agent, AgentSession, ChatHistory, ConfigHistory, Gateway
from scheduler import registry, roles
from scheduler.models import AuditEntry, BatchRun

from . import access
from .models import ApiToken

MAX_LIMIT = 500
DEFAULT_LIMIT = 100


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _authenticate(request: HttpRequest) -> bool:
    if request.user.is_authenticated:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        return False
    token = ApiToken.objects.select_related("user").filter(token_hash=ApiToken.hash(raw.strip())).first()
    if token is None or not token.user.is_active:
        return False
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    request.user = token.user
    request.api_token = token  # type: ignore[attr-defined]  # its role bounds the user's (access.actor)
    return True


def api_view(view: Callable[..., Any]) -> Callable[..., JsonResponse]:
    @login_not_required  # this decorator does its own auth and answers 401 in JSON, not a redirect
    @require_GET
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        if not _authenticate(request):
            return JsonResponse(
                {"error": "authentication required: log in or send 'Authorization: Bearer <api token>'"},
                status=401,
            )
        try:
            return JsonResponse(view(request, *args, **kwargs))
        except ApiError as exc:
            return JsonResponse({"error": exc.message}, status=exc.status)
        except PermissionDenied as exc:  # a refused control (scheduler.audit.Refused) or requires()
            return JsonResponse({"error": str(exc) or "not allowed"}, status=403)

    return wrapper


def _int_param(request: HttpRequest, name: str, default: int, maximum: int | None = None) -> int:
    raw = request.GET.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"'{name}' must be an integer, got {raw!r}") from None
    if value < 0:
        raise ApiError(400, f"'{name}' must not be negative")
    return min(value, maximum) if maximum else value


def paginate(request: HttpRequest, qs: QuerySet, serialize: Callable[[Any], dict]) -> dict[str, Any]:
    limit = _int_param(request, "limit", DEFAULT_LIMIT, MAX_LIMIT) or DEFAULT_LIMIT
    offset = _int_param(request, "offset", 0)
    rows = list(qs[offset : offset + limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]

    def link(new_offset: int) -> str:
        params = request.GET.copy()
        params["offset"], params["limit"] = str(new_offset), str(limit)
        return request.build_absolute_uri(f"{request.path}?{params.urlencode()}")

    return {
        "next": link(offset + limit) if has_more else None,
        "previous": link(max(0, offset - limit)) if offset else None,
        "results": [serialize(row) for row in rows],
    }


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _gateway_filter(request: HttpRequest, qs: QuerySet, field: str = "gateway") -> QuerySet:
    name = request.GET.get("gateway")
    if not name:
        return qs
    gateway = Gateway.objects.filter(name=name).first() or (
        Gateway.objects.filter(pk=name).first() if name.isdigit() else None
    )
    if gateway is None:
        raise ApiError(404, f"no gateway named {name!r}")
    return qs.filter(**{field: gateway})


@api_view
def gateways(request: HttpRequest) -> dict[str, Any]:
    def row(g: Gateway) -> dict[str, Any]:
        return {
            "id": g.pk,
            "name": g.name,
            "url": g.url,
            "enabled": g.enabled,
            "status": g.status,
            "status_reason": g.status_reason,
            "version": g.version or None,
            "latency_ms": g.latency_ms,
            "scopes": g.scopes,
            "last_checked_at": _ts(g.last_checked_at),
        }

    return paginate(request, Gateway.objects.order_by("name"), row)


@api_view
def agents(request: HttpRequest) -> dict[str, Any]:
    qs = _gateway_filter(
        request, Agent.objects.select_related("gateway", "parent").order_by("gateway", "agent_id")
    )

    def row(a: Agent) -> dict[str, Any]:
        return {
            "id": a.agent_id,
            "gateway": a.gateway.name,
            "name": a.name,
            "emoji": a.emoji,
            "model": a.model,
            "is_default": a.is_default,
            "parent": a.parent.agent_id if a.parent else None,
        }

    return paginate(request, qs, row)


@api_view
def sessions(request: HttpRequest) -> dict[str, Any]:
    qs = AgentSession.objects.select_related("gateway").order_by("-gw_updated_at", "session_key")
    qs = _gateway_filter(request, qs)
    if agent := request.GET.get("agent"):
        qs = qs.filter(agent_key=agent)
    if status := request.GET.get("status"):
        if status not in AgentSession.Status.values:
            raise ApiError(400, f"'status' must be one of {', '.join(AgentSession.Status.values)}")
        qs = qs.filter(status=status)

    def row(s: AgentSession) -> dict[str, Any]:
        return {
            "session_key": s.session_key,
            "gateway": s.gateway.name,
            "agent": s.agent_key,
            "status": s.status,
            "has_active_run": s.has_active_run,
            "title": s.title,
            "model": s.model,
            "total_tokens": s.total_tokens,
            "updated_at": _ts(s.gw_updated_at),
            "parent_session_key": s.parent_session_key or None,
        }

    return paginate(request, qs, row)


@api_view
def config_history(request: HttpRequest) -> dict[str, Any]:
    qs = _gateway_filter(
        request, ConfigHistory.objects.select_related("gateway").order_by("-created_at", "-id")
    )

    def row(c: ConfigHistory) -> dict[str, Any]:
        return {
            "id": c.pk,
            "gateway": c.gateway.name,
            "hash": c.hash,
            "created_at": _ts(c.created_at),
            "changed_paths": c.changed_paths,
            "diff": c.diff,
        }

    return paginate(request, qs, row)


@api_view
def chat(request: HttpRequest, session_key: str) -> dict[str, Any]:
    qs = _gateway_filter(
        request, ChatHistory.objects.filter(session_key=session_key).order_by("timestamp", "id")
    )
    if after := request.GET.get("after"):
        try:
            moment = parse_datetime(after)
        except (ValueError, ValidationError):
            moment = None
        if moment is not None:
            qs = qs.filter(timestamp__gt=moment)
        elif after.isdigit():
            qs = qs.filter(pk__gt=int(after))
        else:
            raise ApiError(400, "'after' must be an ISO 8601 time or a message id (integer)")

    def row(m: ChatHistory) -> dict[str, Any]:
        return {
            "id": m.pk,
            "message_id": m.message_id,
            "role": m.role,
            "text": m.text,
            "timestamp": _ts(m.timestamp),
            "run_id": m.run_id or None,
            "usage": m.usage,
        }

    return paginate(request, qs, row)


@api_view
def batches(request: HttpRequest) -> dict[str, Any]:
    latest = {run.batch: run for run in BatchRun.objects.latest_per_batch()}
    results = []
    for spec in registry.batches():
        run = latest.get(spec.id)
        results.append(
            {
                "batch": spec.id,
                "name": spec.label,
                "last_run": None
                if run is None
                else {
                    "started_at": _ts(run.started_at),
                    "status": run.status,
                    "duration_ms": round(run.duration_ms, 1),
                    "gateway": run.target_name or None if run.scope == "gateway" else None,
                    "counts": run.counts,
                    "error": run.error or None,
                },
            }
        )
    return {"next": None, "previous": None, "results": results}


# --- Roles and the audit log (h-auth) -----------------------------------------------------


def requires(capability: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Under ``@api_view``: the caller's role (a token's is at most its user's) must allow it."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            actor = access.actor(request, source="api")
            if not actor.can(capability):
                raise PermissionDenied(roles.refusal(actor.effective_role, capability))
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


@api_view
@requires("administer")
def audit(request: HttpRequest) -> dict[str, Any]:
    """The control audit, newest first; filters: action, result, actor (label), target_type, target_id."""
    qs = AuditEntry.objects.select_related("actor")
    if result := request.GET.get("result"):
        if result not in AuditEntry.Result.values:
            raise ApiError(400, f"'result' must be one of {', '.join(AuditEntry.Result.values)}")
        qs = qs.filter(result=result)
    for param in ("action", "target_type", "target_id"):
        if value := request.GET.get(param):
            qs = qs.filter(**{param: value})
    if actor := request.GET.get("actor"):
        qs = qs.filter(actor_label=actor)

    def row(e: AuditEntry) -> dict[str, Any]:
        return {
            "id": e.pk,
            "created_at": _ts(e.created_at),
            "actor": e.actor_label,
            "user": e.actor.get_username() if e.actor else None,
            "action": e.action,
            "target": {"type": e.target_type, "id": e.target_id, "label": e.target_label},
            "reason": e.reason,
            "result": e.result,
            "message": e.message,
            "source": e.source,
            "ip_address": e.ip_address,
        }

    return paginate(request, qs, row)


@login_not_required
def not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    return JsonResponse({"error": f"no API endpoint at {request.path}"}, status=404)
