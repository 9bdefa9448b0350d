"""The emergency-stop API (``/api/v1/control/…``): status for anyone who may read, engage,
release and requeue for admins. Each write calls the one function the page, the admin and the
commands call (scheduler.stops), which checks the role and writes the audit row."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from scheduler import stops
from scheduler.models import EmergencyStop

from . import access, openapi
from .api import ApiError, api_post, api_view, json_body
from .api_ops import _fields, _str
from .openapi import Operation, obj

CONTROL = ("control",)
SCOPES = [s for s in EmergencyStop.Scope.values if s != "global"]
STOP = {"type": "object", "description": "An emergency stop (scheduler.stops.as_json)."}
SCOPE_BODY = {
    "type": "object",
    "description": 'A "reason" (required) and one scope: {"scope": "global"} or one of "gateway", "agent", '
    '"priority", "provider" naming it; release also takes {"id": <stop id>} or {"scope": "all"}.',
    "properties": {
        "reason": {"type": "string"},
        "scope": {"type": "string"},
        "id": {"type": "integer"},
        **{name: {"type": "string"} for name in SCOPES},
    },
}


def _scope(body: dict[str, Any], *, release: bool = False) -> tuple[str, str]:
    given = [name for name in ("scope", *SCOPES) if name in body]
    if len(given) > 1:
        raise ApiError(400, f"give one scope, not {', '.join(given)}", "bad_scope")
    if not given or given[0] == "scope":
        scope = _str(body, "scope", max_length=20) or "global"
        allowed = ("global", "all") if release else ("global",)
        if scope not in allowed:
            raise ApiError(
                400,
                f"'scope' must be {' or '.join(repr(a) for a in allowed)} (or name a gateway, agent, "
                f"priority or provider), not {scope!r}",
                "bad_scope",
            )
        return scope, ""
    return given[0], _str(body, given[0], max_length=100, required=True)


@openapi.operation(
    Operation(
        "The engaged emergency stops and how many runs released stops still hold.",
        obj(
            engaged={"type": "array", "items": STOP},
            held_runs={"type": "integer"},
            recently_released={"type": "array"},
        ),
        paginated=False,
        tags=CONTROL,
    )
)
@api_view
def control_status(request: HttpRequest) -> dict[str, Any]:
    return stops.status()


@openapi.operation(
    Operation(
        "Engage an emergency stop (admin): intake parks, nothing starts, running runs are aborted on their "
        "gateway and the gateways' own cron is switched off.",
        STOP,
        paginated=False,
        errors=(400, 401, 403),
        tags=CONTROL,
        method="post",
        body=SCOPE_BODY,
    )
)
@api_post
def emergency_stop(request: HttpRequest) -> dict[str, Any]:
    body = json_body(request)
    _fields(body, ("reason", "scope", *SCOPES))
    reason = _str(body, "reason", max_length=2000, required=True)
    scope, value = _scope(body)
    stop = stops.engage(access.actor(request, source="api"), scope, value, reason)
    return stops.as_json(stop)


@openapi.operation(
    Operation(
        "Release emergency stops (admin): by id, by scope, or all; nothing is replayed (see requeue) "
        'unless the body says "requeue": true (the held runs are then requeued at once).',
        obj(released={"type": "array", "items": STOP}, requeued={"type": "integer"}),
        paginated=False,
        errors=(400, 401, 403, 404),
        tags=CONTROL,
        method="post",
        body=SCOPE_BODY,
    )
)
@api_post
def emergency_release(request: HttpRequest) -> dict[str, Any]:
    body = json_body(request)
    _fields(body, ("reason", "scope", "id", "requeue", *SCOPES))
    reason = _str(body, "reason", max_length=2000, required=True)
    then_requeue = body.get("requeue", False)
    if not isinstance(then_requeue, bool):
        raise ApiError(400, "'requeue' must be true or false", "bad_requeue")
    actor = access.actor(request, source="api")
    if "id" in body:
        if not isinstance(body["id"], int) or isinstance(body["id"], bool):
            raise ApiError(400, "'id' must be a stop's id (an integer)", "bad_id")
        which: dict[str, Any] = {"stop_id": body["id"]}
    else:
        scope, value = _scope(body, release=True)
        which = {"scope": scope, "value": value}
    released, out = stops.release_and_requeue(actor, reason=reason, then_requeue=then_requeue, **which)
    answer: dict[str, Any] = {"released": [stops.as_json(s) for s in released]}
    if then_requeue:
        answer.update(requeued=out.requeued, skipped=out.skipped)
    return answer


def _runs(body: dict[str, Any], name: str) -> str | list[int]:
    value = body[name]
    if value == "all":
        return "all"
    if isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        return value
    raise ApiError(400, f"'{name}' must be \"all\" or a list of run ids", "bad_runs")


@openapi.operation(
    Operation(
        'Requeue ({"runs": "all" | [ids]}) or cancel ({"cancel": "all" | [ids]}) the runs released '
        "stops hold (admin).",
        obj(requeued={"type": "integer"}, cancelled={"type": "integer"}, skipped={"type": "array"}),
        paginated=False,
        errors=(400, 401, 403),
        tags=CONTROL,
        method="post",
        body={
            "type": "object",
            "properties": {
                "runs": {},
                "cancel": {},
                "stop": {"type": "integer"},
                "reason": {"type": "string"},
            },
        },
    )
)
@api_post
def requeue(request: HttpRequest) -> dict[str, Any]:
    body = json_body(request)
    _fields(body, ("runs", "cancel", "stop", "reason"))
    if ("runs" in body) == ("cancel" in body):
        raise ApiError(400, 'give either "runs" (to requeue) or "cancel"', "bad_runs")
    cancel = "cancel" in body
    chosen = _runs(body, "cancel" if cancel else "runs")
    stop = None
    if "stop" in body:
        stop = (
            EmergencyStop.objects.filter(pk=body["stop"]).first() if isinstance(body["stop"], int) else None
        )
        if stop is None:
            raise ApiError(404, f"no emergency stop {body['stop']!r}", "not_found")
    out = stops.requeue(
        access.actor(request, source="api"),
        chosen,
        cancel=cancel,
        stop=stop,
        reason=_str(body, "reason", max_length=2000),
    )
    return {"requeued": out.requeued, "cancelled": out.cancelled, "skipped": out.skipped}
