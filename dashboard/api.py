"""Read-only JSON API (``/api/v1/``) for ops scripts.

Authenticated by the login session or ``Authorization: Bearer <token>`` (tokens are issued in
the admin or by ``manage.py create_api_token`` and stored hashed; a token's role is at most its
user's, and ``/api/v1/audit/`` needs the admin role). Every error is JSON with a clear
``error`` message (see also ``dashboard.middleware``). Lists are paginated with ``limit``
(≤ 500) and ``offset`` (≤ ``MAX_OFFSET``). Each view declares its parameters and answer next to
it (``@openapi.operation``): ``/api/v1/schema/`` and the index at ``/api/v1/`` are built from them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.encoding import escape_uri_path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from fleet.models import Agent, AgentSession, ChatHistory, ConfigHistory, Gateway
from scheduler import registry, roles
from scheduler.models import AuditEntry, BatchRun

from . import access, openapi, params
from .models import ApiToken
from .openapi import Operation, Param, nullable, obj

MAX_LIMIT = 500
DEFAULT_LIMIT = 100
# OFFSET n makes the database walk n rows: past this, page with a filter or ?after= instead.
MAX_OFFSET = 100_000


# A machine-readable ``code`` next to every error's ``message`` (``error`` stays a string).
CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "method"}
MAX_BODY_BYTES = 64 * 1024  # a write endpoint's JSON body; larger is a 413
BULK_BODY_BYTES = 2 * 1024 * 1024  # a bulk submit's (POST runs/ with "runs"), under Django's 2.5 MB


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or CODES.get(status, "error")


def error_response(status: int, message: str, code: str = "") -> JsonResponse:
    return JsonResponse({"error": message, "code": code or CODES.get(status, "error")}, status=status)


def _authenticate(request: HttpRequest) -> bool:
    if request.user.is_authenticated:
        return True
    return _authenticate_token(request)


LAST_USED_RESOLUTION = timedelta(minutes=1)  # how fresh ApiToken.last_used_at is kept


def _authenticate_token(request: HttpRequest) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        return False
    token = ApiToken.objects.select_related("user").filter(token_hash=ApiToken.hash(raw.strip())).first()
    if token is None or not token.user.is_active:
        return False
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        # At most one write a minute per token: a write transaction on every request was a
        # quarter of a POST runs/'s statements (bench/bench_api_runs.py).
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    request.user = token.user
    request.api_token = token  # type: ignore[attr-defined]  # its role bounds the user's (access.actor)
    return True


UNAUTHENTICATED = "authentication required: log in or send 'Authorization: Bearer <api token>'"


def _answer(view: Callable[..., Any], request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    try:
        body = view(request, *args, **kwargs)
    except ApiError as exc:
        return error_response(exc.status, exc.message, exc.code)
    except params.BadParam as exc:
        return error_response(400, exc.message, "bad_param")
    except ValidationError as exc:  # the engine refused the input: its message and code
        code = exc.code or "invalid"
        status = 404 if code in NOT_FOUND_CODES else 400
        return error_response(status, "; ".join(exc.messages), code)
    except PermissionDenied as exc:  # a refused control (scheduler.audit.Refused) or requires()
        return error_response(403, str(exc) or "not allowed")
    if isinstance(body, JsonResponse):
        return body
    return JsonResponse(body)


NOT_FOUND_CODES = frozenset({"unknown_job", "not_found", "not_engaged"})


def api_view(view: Callable[..., Any]) -> Callable[..., JsonResponse]:
    # login_not_required: this decorator does its own auth and answers 401 in JSON, not a redirect.
    # csrf_exempt: a read-only view answers a POST 405, not a CSRF 403.
    @login_not_required
    @csrf_exempt
    @require_GET
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        if not _authenticate(request):
            return error_response(401, UNAUTHENTICATED)
        return _answer(view, request, *args, **kwargs)

    return wrapper


class _CsrfCheck(CsrfViewMiddleware):
    def _reject(self, request: HttpRequest, reason: str) -> HttpResponse:
        return error_response(403, f"CSRF check failed ({reason}): send the X-CSRFToken header", "csrf")


def _csrf_failure(request: HttpRequest) -> HttpResponse | None:
    """Django's own CSRF check for a POST authenticated by the session cookie (as DRF's
    SessionAuthentication does): a page of another site must not be able to drive the API with
    an operator's cookie. A bearer token cannot be sent by another site, so it needs none."""
    check = _CsrfCheck(lambda r: HttpResponse())
    check.process_request(request)
    return check.process_view(request, lambda r: HttpResponse(), (), {})


def too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, f"the body is {size} bytes: at most {limit}", "too_large")


def json_body(request: HttpRequest, *, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The request's JSON object (an empty body is ``{}``); ApiError 400 / 413 / 415 otherwise."""
    raw = request.body
    if not raw.strip():
        return {}
    if len(raw) > max_bytes:
        raise too_large(len(raw), max_bytes)
    content_type = request.content_type or ""
    if content_type not in ("application/json", "text/plain", ""):
        raise ApiError(415, f"send JSON (Content-Type: application/json), not {content_type}", "media_type")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}", "bad_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the body must be a JSON object, not {type(data).__name__}", "bad_json")
    return data


def api_write(method: str) -> Callable[[Callable[..., Any]], Callable[..., JsonResponse]]:
    """A write endpoint: ``method`` (POST, PATCH, DELETE) only, JSON in and out (``json_body(request)``).

    1. A bearer token is tried first; then the login session, which must pass Django's CSRF
       check (the ``X-CSRFToken`` header, as the pages' htmx requests send it).
    2. The view calls a control (scheduler.controls / scheduler.ops) with ``access.actor``:
       the control checks the role (operator) and writes the audit row; a refusal is a 403.
    """

    def decorate(view: Callable[..., Any]) -> Callable[..., JsonResponse]:
        @login_not_required
        @csrf_exempt
        @require_http_methods([method])
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            if not _authenticate_token(request):
                if not request.user.is_authenticated:
                    return error_response(401, UNAUTHENTICATED)
                refused = _csrf_failure(request)
                if refused is not None:
                    return refused  # type: ignore[return-value]
            return _answer(view, request, *args, **kwargs)

        return wrapper

    return decorate


api_post = api_write("POST")
api_patch = api_write("PATCH")
api_delete = api_write("DELETE")


def api_methods(**views: Callable[..., Any]) -> Callable[..., JsonResponse]:
    """One URL, a view per method (``runs/``: GET the list, POST a new run; ``triggers/<id>/``:
    GET, PATCH, DELETE), each already under ``@api_view`` / ``@api_write`` with its own
    declaration. Another method is a 405 naming the allowed ones."""
    allowed = ", ".join(views)

    @login_not_required
    @csrf_exempt
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        view = views.get(request.method or "")
        if view is None:
            response = error_response(
                405, f"method {request.method} is not allowed here (allowed: {allowed})", "method"
            )
            response["Allow"] = allowed
            return response
        return view(request, *args, **kwargs)

    wrapper.openapi_ops = [op for view in views.values() for op in getattr(view, "openapi_ops", [])]  # type: ignore[attr-defined]
    return wrapper


def api_get_post(get: Callable[..., Any], post: Callable[..., Any]) -> Callable[..., JsonResponse]:
    return api_methods(GET=get, POST=post)


def paginate(request: HttpRequest, qs: QuerySet, serialize: Callable[[Any], dict]) -> dict[str, Any]:
    # A limit past MAX_LIMIT is capped (and the links say so); 0 means the default.
    limit = min(params.get_int(request.GET, "limit", DEFAULT_LIMIT), MAX_LIMIT) or DEFAULT_LIMIT
    try:
        offset = params.get_int(request.GET, "offset", 0, maximum=MAX_OFFSET)
    except params.BadParam as exc:
        raise ApiError(400, f"{exc.message}: page with a filter (e.g. ?gateway=, ?after=) instead") from None
    rows = list(qs[offset : offset + limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]

    def link(new_offset: int) -> str:
        params = request.GET.copy()
        params["offset"], params["limit"] = str(new_offset), str(limit)
        # The path quoted again: a session key with "%" in it makes a valid link, not "…/100%/".
        return request.build_absolute_uri(f"{escape_uri_path(request.path)}?{params.urlencode()}")

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
    pk = params.as_id(name)  # a name first, then an id (ASCII digits within the id range)
    gateway = Gateway.objects.filter(name=name).first() or (
        Gateway.objects.filter(pk=pk).first() if pk is not None else None
    )
    if gateway is None:
        raise ApiError(404, f"no gateway named {name!r}")
    return qs.filter(**{field: gateway})


# --- the declarations /api/v1/schema/ is built from ------------------------------------------------

LIMIT = Param(
    "limit",
    f"Page size, 1 to {MAX_LIMIT} (larger is capped; 0 or absent means {DEFAULT_LIMIT}).",
    {"type": "integer", "minimum": 0, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
)
OFFSET = Param(
    "offset",
    f"Rows to skip, at most {MAX_OFFSET}; follow the 'next' link rather than computing it.",
    {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
)
GATEWAY = Param("gateway", "Only this gateway: its name, or its id.", {"type": "string"})
TS = nullable("string", format="date-time")


@openapi.operation(
    Operation(
        "The endpoints of this API, with their paths and summaries.",
        obj(
            endpoints={
                "type": "array",
                "items": obj(
                    name={"type": "string"},
                    method={"type": "string", "enum": ["GET", "POST", "PATCH", "DELETE"]},
                    path={"type": "string"},
                    url={"type": "string", "format": "uri"},
                    summary={"type": "string"},
                ),
            },
            schema={"type": "string", "format": "uri"},
        ),
        paginated=False,
        errors=(401,),
        tags=("meta",),
    )
)
@api_view
def index(request: HttpRequest) -> dict[str, Any]:
    return {
        "endpoints": [{**e, "url": request.build_absolute_uri(e["path"])} for e in openapi.index()],
        "schema": request.build_absolute_uri(reverse("api:schema")),
    }


@openapi.operation(
    Operation(
        "This description of the API (OpenAPI 3.1).",
        {"type": "object", "required": ["openapi", "paths"]},
        paginated=False,
        errors=(401,),
        tags=("meta",),
    )
)
@api_view
def schema(request: HttpRequest) -> dict[str, Any]:
    return openapi.build(server_url=request.build_absolute_uri("/").rstrip("/"))


@openapi.operation(
    Operation(
        "Gateways, by name, with their health as last checked.",
        obj(
            id={"type": "integer"},
            name={"type": "string"},
            url={"type": "string"},
            enabled={"type": "boolean"},
            status={"type": "string", "enum": list(Gateway.Status.values)},
            status_reason={"type": "string"},
            version=nullable("string"),
            latency_ms=nullable("number"),
            scopes={"type": "array", "items": {"type": "string"}},
            last_checked_at=TS,
        ),
        params=(LIMIT, OFFSET),
    )
)
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


@openapi.operation(
    Operation(
        "Agents of every gateway (or of one), with their parent in the org chart.",
        obj(
            id={"type": "string"},
            gateway={"type": "string"},
            name={"type": "string"},
            emoji={"type": "string"},
            model={"type": "string"},
            is_default={"type": "boolean"},
            parent=nullable("string"),
        ),
        params=(GATEWAY, LIMIT, OFFSET),
        errors=(400, 401, 404),
    )
)
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


@openapi.operation(
    Operation(
        "Sessions, most recently updated first; filter by gateway, agent and status.",
        obj(
            session_key={"type": "string"},
            gateway={"type": "string"},
            agent={"type": "string"},
            status={"type": "string", "enum": list(AgentSession.Status.values)},
            has_active_run={"type": "boolean"},
            title={"type": "string"},
            model={"type": "string"},
            total_tokens={"type": "integer"},
            updated_at=TS,
            parent_session_key=nullable("string"),
        ),
        params=(
            GATEWAY,
            Param("agent", "Only sessions of this agent id (e.g. main).", {"type": "string"}),
            Param(
                "status",
                "Only sessions in this status.",
                {"type": "string", "enum": list(AgentSession.Status.values)},
            ),
            LIMIT,
            OFFSET,
        ),
        errors=(400, 401, 404),
    )
)
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


@openapi.operation(
    Operation(
        "Stored versions of gateway configs (secrets redacted), newest first, with their diffs.",
        obj(
            id={"type": "integer"},
            gateway={"type": "string"},
            hash={"type": "string"},
            created_at=TS,
            changed_paths={"type": "array", "items": {"type": "string"}},
            diff={"type": "string"},
        ),
        params=(GATEWAY, LIMIT, OFFSET),
        errors=(400, 401, 404),
    )
)
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


@openapi.operation(
    Operation(
        "A session's stored chat history, oldest first; ?after= pages forward from a time or id.",
        obj(
            id={"type": "integer"},
            message_id={"type": "string"},
            role={"type": "string"},
            text={"type": "string"},
            timestamp=TS,
            run_id=nullable("string"),
            usage={},
        ),
        params=(
            Param(
                "session_key",
                "The session key, e.g. agent:main:main.",
                {"type": "string", "minLength": 1},
                "path",
            ),
            GATEWAY,
            Param(
                "after",
                "Only messages after this ISO 8601 time, or after this message id (an integer).",
                {"type": "string"},
            ),
            LIMIT,
            OFFSET,
        ),
        errors=(400, 401, 404),
    )
)
@api_view
def chat(request: HttpRequest, session_key: str) -> dict[str, Any]:
    qs = _gateway_filter(
        request, ChatHistory.objects.filter(session_key=session_key).order_by("timestamp", "id")
    )
    if after := request.GET.get("after"):
        moment = _moment(after)
        if moment is not None:
            qs = qs.filter(timestamp__gt=moment)
        elif (pk := params.as_id(after)) is not None or after == "0":
            qs = qs.filter(pk__gt=pk or 0)
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


@openapi.operation(
    Operation(
        "Every registered batch with its last run (one page: the list is short).",
        obj(
            batch={"type": "string"},
            name={"type": "string"},
            last_run={
                "oneOf": [
                    {"type": "null"},
                    obj(
                        started_at=TS,
                        status={"type": "string"},
                        duration_ms={"type": "number"},
                        gateway=nullable("string"),
                        counts={"type": "object"},
                        error=nullable("string"),
                    ),
                ]
            },
        ),
        errors=(401,),
    )
)
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


def _moment(raw: str) -> datetime | None:
    """An ISO 8601 time as an aware UTC datetime (a naive one is in the site's time zone), or
    None if ``raw`` is not one or falls outside what a datetime holds once in UTC."""
    try:
        moment = parse_datetime(raw)
        if moment is None:
            return None
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment)
        return moment.astimezone(UTC)
    except (ValueError, ValidationError, OverflowError):
        return None


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


@openapi.operation(
    Operation(
        "The control audit (who did what, why, with what result), newest first. Admin role.",
        obj(
            id={"type": "integer"},
            created_at=TS,
            actor={"type": "string"},
            user=nullable("string"),
            action={"type": "string"},
            target=obj(type={"type": "string"}, id={"type": "string"}, label={"type": "string"}),
            reason={"type": "string"},
            result={"type": "string", "enum": list(AuditEntry.Result.values)},
            message={"type": "string"},
            source={"type": "string"},
            ip_address=nullable("string"),
        ),
        params=(
            Param("action", "Only this action, e.g. chat.abort.", {"type": "string"}),
            Param("result", "Only this result.", {"type": "string", "enum": list(AuditEntry.Result.values)}),
            Param("actor", "Only this actor label.", {"type": "string"}),
            Param("target_type", "Only targets of this type, e.g. gateway.", {"type": "string"}),
            Param("target_id", "Only this target id.", {"type": "string"}),
            LIMIT,
            OFFSET,
        ),
        errors=(400, 401, 403),
        tags=("audit",),
    )
)
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
@csrf_exempt
def not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    return error_response(404, f"no API endpoint at {request.path}")
