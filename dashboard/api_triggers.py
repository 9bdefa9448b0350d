"""The triggers API (``/api/v1/``, issue 11): schedules (list, create, read, change, delete, and
a preview of a definition without saving it), webhook endpoints and their delivery log (read, and
redeliver), file watches (read).

Thin views, as in :mod:`dashboard.api_ops`: the body's types are checked here; the definition is
read and validated by :mod:`scheduler.triggers.schedule` (``parse_fields`` and ``Schedule.clean``,
the parser and the check the config import and the admin use), in the words of automation.toml
(``cron``; ``every`` with ``at``; ``at`` alone for a one-off time; ``timezone``; the policies).
Every write is a control: the operator role is checked and an audit row written there
(``schedule.create`` / ``change`` / ``enable`` / ``disable`` / ``pause`` / ``resume`` / ``delete``,
``webhook.redeliver``). An endpoint's secret, or anything made from it, is never answered.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.utils import timezone

from scheduler.models import Job, Schedule, ScheduleFire, Watch
from scheduler.triggers import schedule
from webhooks import intake
from webhooks.models import Delivery, Endpoint

from . import access, openapi, params
from .api import (
    LIMIT,
    OFFSET,
    TS,
    ApiError,
    _moment,
    _ts,
    api_delete,
    api_methods,
    api_patch,
    api_post,
    api_view,
    json_body,
    paginate,
)
from .api_ops import _fields, _int, _str
from .openapi import Operation, Param, nullable, obj

TRIGGERS = ("triggers",)
PREVIEW_COUNT = 10
RECENT_FIRES = 10
SINCE = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}  # the log page's

TRIGGER_ID = Param("trigger_id", "The schedule trigger's id.", {"type": "integer", "minimum": 1}, "path")
DELIVERY_ID = Param("delivery_id", "The delivery's id.", {"type": "integer", "minimum": 1}, "path")
JOB_FILTER = Param("job", "Only those of this job (its name).", {"type": "string"})
ENABLED_FILTER = Param(
    "enabled", "true / 1: only enabled ones; false / 0: only disabled ones.", {"type": "string"}
)


# --- query filters ----------------------------------------------------------------------------------


def _flag(request: HttpRequest, name: str) -> bool | None:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return None
    value = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}.get(raw.lower())
    if value is None:
        raise ApiError(400, f"'{name}' must be true or false (1 or 0), not {raw[:40]!r}", "bad_param")
    return value


def _filter_job_enabled(request: HttpRequest, qs: QuerySet, job_field: str = "job__name") -> QuerySet:
    if job := request.GET.get("job"):
        qs = qs.filter(**{job_field: job})
    if (enabled := _flag(request, "enabled")) is not None:
        qs = qs.filter(enabled=enabled)
    return qs


# --- schedules: JSON ------------------------------------------------------------------------------------


def _local(s: Schedule, moment: datetime | None) -> str | None:
    """A time in the trigger's zone (ISO 8601 with its offset)."""
    if moment is None:
        return None
    try:
        return moment.astimezone(schedule.zone(s.timezone)).isoformat()
    except (ValueError, LookupError):  # a zone that no longer exists (stored before a tzdata update)
        return moment.isoformat()


def _at(s: Schedule) -> str | None:
    """``at`` as automation.toml writes it: an interval's time of day, or the one-off time."""
    if s.kind == Schedule.Kind.INTERVAL:
        return f"{s.at_time:%H:%M}" if s.at_time else None
    if s.kind == Schedule.Kind.AT:
        return _local(s, s.at_datetime)
    return None


def trigger_json(request: HttpRequest, s: Schedule) -> dict[str, Any]:
    """A schedule trigger as the API answers it (``s`` from :func:`_triggers`: with its last fire)."""
    last_due = getattr(s, "last_due", None)
    return {
        "id": s.pk,
        "job": s.job.name,
        "name": s.name,
        "label": s.label,
        "kind": s.kind,
        "cron": s.cron if s.kind == Schedule.Kind.CRON else None,
        "every": schedule.format_every(s.every_seconds)
        if s.kind == Schedule.Kind.INTERVAL and s.every_seconds
        else None,
        "every_seconds": s.every_seconds if s.kind == Schedule.Kind.INTERVAL else None,
        "at": _at(s),
        "expression": schedule.expression(s),
        "timezone": s.timezone,
        "sentence": schedule.describe(s),
        "enabled": s.enabled,
        "state": s.state,
        "paused_at": _ts(s.paused_at),
        "paused_reason": s.paused_reason,
        "consecutive_failures": s.consecutive_failures,
        "policies": {
            "overlap": s.overlap,
            "catch_up": s.catch_up,
            "catch_up_window": s.catch_up_window_seconds,
            "jitter": s.jitter_seconds,
            "pause_after_failures": s.pause_after_failures,
        },
        "next_due_at": _local(s, s.next_due_at),
        "next_fire_at": _local(s, s.fire_at),
        "last_fire": None
        if last_due is None
        else {
            "due_at": _local(s, last_due),
            "outcome": s.last_outcome,  # type: ignore[attr-defined]
            "run_id": s.last_run_pk,  # type: ignore[attr-defined]
            "run_status": s.last_run_status,  # type: ignore[attr-defined]
        },
        "last_fired_at": _ts(s.last_fire_at),
        "last_run_id": s.last_run_id,
        "created_at": _ts(s.created_at),
        "updated_at": _ts(s.updated_at),
        "url": request.build_absolute_uri(reverse("api:trigger", args=[s.pk])),
    }


def _triggers() -> QuerySet[Schedule]:
    return Schedule.objects.select_related("job").with_last_fire().order_by("job__name", "name", "pk")


def _trigger(trigger_id: int) -> Schedule:
    s = _triggers().filter(pk=trigger_id).first()
    if s is None:
        raise ApiError(404, f"no trigger {trigger_id}")
    return s


def _detail_json(request: HttpRequest, s: Schedule) -> dict[str, Any]:
    fires = s.fires.order_by("-due_at")[:RECENT_FIRES]
    return {
        **trigger_json(request, s),
        "next_fires": [_local(s, t) for t in schedule.preview(s, PREVIEW_COUNT)],
        "recent_fires": [
            {
                "due_at": _local(s, f.due_at),
                "fired_at": _ts(f.fired_at),
                "outcome": f.outcome,
                "run_id": f.run_id,
                "detail": f.detail,
            }
            for f in fires
        ],
    }


# --- schedules: the body ------------------------------------------------------------------------------

INT_MAX = 2**63 - 1


def _duration(body: dict[str, Any], name: str) -> int | str:
    """Seconds (a whole number) or a duration such as 30s, 10m, 1h (read by the config parser)."""
    value = body[name]
    if isinstance(value, int) and not isinstance(value, bool):
        checked = _int(body, name, minimum=0, maximum=INT_MAX)
        return checked if checked is not None else 0
    if isinstance(value, str):
        return _str(body, name, max_length=40)
    raise ApiError(
        400, f"'{name}' must be seconds (a whole number) or a duration such as 30s, 10m", "bad_field"
    )


def _bool(body: dict[str, Any], name: str) -> bool:
    if not isinstance(body[name], bool):
        raise ApiError(400, f"'{name}' must be true or false", "bad_field")
    return body[name]


def _definition_body(body: dict[str, Any]) -> dict[str, Any]:
    """The body's trigger fields, their types checked (their meaning is the parser's)."""
    out: dict[str, Any] = {}
    lengths = {
        "name": 100,
        "cron": 200,
        "every": 100,
        "at": 64,
        "timezone": 64,
        "overlap": 20,
        "catch_up": 20,
    }
    for name, top in lengths.items():
        if name in body:
            out[name] = _str(body, name, max_length=top)
    for name in ("catch_up_window", "jitter"):
        if name in body:
            out[name] = _duration(body, name)
    if "pause_after_failures" in body:
        out["pause_after_failures"] = _int(body, "pause_after_failures", minimum=0, maximum=1000)
        if out["pause_after_failures"] is None:
            raise ApiError(400, "'pause_after_failures' must be a whole number from 0 to 1000", "bad_field")
    return out


WRITE_PROPERTIES: dict[str, Any] = {
    "name": {"type": "string", "description": "Unique within the job (default: schedule, schedule-2, …)."},
    "cron": {"type": "string", "description": 'Five fields, e.g. "0 9 * * 1-5".'},
    "every": {"type": "string", "description": '30s, 30m, 2h, 1d (with at), "every Monday 00:00".'},
    "at": {"type": "string", "description": "With every: a time of day (HH:MM); alone: a one-off ISO time."},
    "timezone": {"type": "string", "description": "An IANA zone (default UTC)."},
    "overlap": {"type": "string", "enum": list(Schedule.Overlap.values)},
    "catch_up": {"type": "string", "enum": list(Schedule.CatchUp.values)},
    "catch_up_window": {"type": ["integer", "string"], "description": "Seconds, or 10m, 1h."},
    "jitter": {"type": ["integer", "string"], "description": "Seconds, or 30s, 5m."},
    "pause_after_failures": {"type": "integer", "minimum": 0, "maximum": 1000},
    "enabled": {"type": "boolean"},
}
CREATE_BODY = {
    "type": "object",
    "description": 'A job and a definition: {"job": "report", "cron": "0 9 * * 1-5", "timezone": '
    '"Europe/Berlin"}, or "every" (with "at"), or "at" alone; optional name, policies and enabled.',
    "required": ["job"],
    "properties": {"job": {"type": "string"}, **WRITE_PROPERTIES},
    "additionalProperties": False,
}
CHANGE_BODY = {
    "type": "object",
    "description": "The fields to change; a definition is given whole (cron, or every with at, or at). "
    '"enabled" enables (lifting a pause) or disables; "paused" pauses or resumes; "reason" is audited.',
    "properties": {**WRITE_PROPERTIES, "paused": {"type": "boolean"}, "reason": {"type": "string"}},
    "additionalProperties": False,
}
CREATE_FIELDS = ("job", *schedule.WRITE_FIELDS, "enabled")
CHANGE_FIELDS = (*schedule.WRITE_FIELDS, "enabled", "paused", "reason")


# --- schedules: schemas -----------------------------------------------------------------------------------

NULLABLE_STR = nullable("string")
TRIGGER = obj(
    id={"type": "integer"},
    job={"type": "string"},
    name={"type": "string"},
    label={"type": "string"},
    kind={"type": "string", "enum": list(Schedule.Kind.values)},
    cron=NULLABLE_STR,
    every=NULLABLE_STR,
    every_seconds=nullable("integer"),
    at=NULLABLE_STR,
    expression={"type": "string"},
    timezone={"type": "string"},
    sentence={"type": "string"},
    enabled={"type": "boolean"},
    state={"type": "string", "enum": list(Schedule.State.values)},
    paused_at=TS,
    paused_reason={"type": "string"},
    consecutive_failures={"type": "integer"},
    policies=obj(
        overlap={"type": "string", "enum": list(Schedule.Overlap.values)},
        catch_up={"type": "string", "enum": list(Schedule.CatchUp.values)},
        catch_up_window={"type": "integer", "description": "seconds"},
        jitter={"type": "integer", "description": "seconds"},
        pause_after_failures={"type": "integer"},
    ),
    next_due_at=TS,
    next_fire_at=TS,
    last_fire={
        "oneOf": [
            {"type": "null"},
            obj(
                due_at={"type": "string", "format": "date-time"},
                outcome={"type": "string", "enum": list(ScheduleFire.Outcome.values)},
                run_id=nullable("integer"),
                run_status=NULLABLE_STR,
            ),
        ]
    },
    last_fired_at=TS,
    last_run_id=nullable("integer"),
    created_at=TS,
    updated_at=TS,
    url={"type": "string", "format": "uri"},
)
TIMES = {"type": "array", "items": {"type": "string", "format": "date-time"}}
TRIGGER_DETAIL = {
    **TRIGGER,
    "required": [*TRIGGER["required"], "next_fires", "recent_fires"],
    "properties": {
        **TRIGGER["properties"],
        "next_fires": TIMES,
        "recent_fires": {
            "type": "array",
            "items": obj(
                due_at={"type": "string", "format": "date-time"},
                fired_at=TS,
                outcome={"type": "string", "enum": list(ScheduleFire.Outcome.values)},
                run_id=nullable("integer"),
                detail={"type": "string"},
            ),
        },
    },
}
TRIGGER_ERRORS = (400, 401, 403, 404, 413, 415)


# --- schedules: views -------------------------------------------------------------------------------------


@openapi.operation(
    Operation(
        "Schedule triggers (cron, interval, one-off) with their sentence, policies, next and last fire.",
        TRIGGER,
        params=(JOB_FILTER, ENABLED_FILTER, LIMIT, OFFSET),
        tags=TRIGGERS,
    )
)
@api_view
def triggers_list(request: HttpRequest) -> dict[str, Any]:
    return paginate(request, _filter_job_enabled(request, _triggers()), lambda s: trigger_json(request, s))


@openapi.operation(
    Operation(
        "Create a schedule trigger for a job (operator); an invalid cron, zone or interval is a 400 saying "
        "what is wrong.",
        TRIGGER_DETAIL,
        paginated=False,
        errors=TRIGGER_ERRORS,
        tags=TRIGGERS,
        method="post",
        success=(201,),
        body=CREATE_BODY,
    )
)
@api_post
def triggers_create(request: HttpRequest) -> JsonResponse:
    body = json_body(request)
    _fields(body, CREATE_FIELDS)
    name = _str(body, "job", max_length=100, required=True)
    job = Job.objects.filter(name=name).first()
    if job is None:
        raise ApiError(400, f"no job named {name!r}", "unknown_job")
    fields = _definition_body(body)
    if "enabled" in body:
        fields["enabled"] = _bool(body, "enabled")
    s = schedule.create_schedule(access.actor(request, source="api"), job, fields)
    return JsonResponse(_detail_json(request, _trigger(s.pk)), status=201)


triggers = api_methods(GET=triggers_list, POST=triggers_create)


@openapi.operation(
    Operation(
        "The next 10 fire times and the sentence of a definition, without saving it (400 when invalid).",
        obj(
            kind={"type": "string", "enum": list(Schedule.Kind.values)},
            expression={"type": "string"},
            timezone={"type": "string"},
            sentence={"type": "string"},
            next_fires=TIMES,
        ),
        params=tuple(
            Param(name, WRITE_PROPERTIES[name]["description"], {"type": "string"})
            for name in ("cron", "every", "at", "timezone")
        ),
        paginated=False,
        tags=TRIGGERS,
        one_of=schedule.DEFINITION_WORDS,
    )
)
@api_view
def trigger_preview(request: HttpRequest) -> dict[str, Any]:
    part = {k: request.GET[k] for k in ("cron", "every", "at", "timezone") if k in request.GET}
    for name, value in part.items():
        if len(value) > 200:
            raise ApiError(400, f"'{name}' is longer than 200 characters", "bad_param")
    s = Schedule(**schedule.parse_fields(part, "preview"))
    schedule.check(s, exclude=["job"])
    return {
        "kind": s.kind,
        "expression": schedule.expression(s),
        "timezone": s.timezone,
        "sentence": schedule.describe(s),
        "next_fires": [_local(s, t) for t in schedule.preview(s, PREVIEW_COUNT)],
    }


@openapi.operation(
    Operation(
        "One schedule trigger with its next 10 fire times and its last 10 fires.",
        TRIGGER_DETAIL,
        params=(TRIGGER_ID,),
        paginated=False,
        errors=(401, 404),
        tags=TRIGGERS,
    )
)
@api_view
def trigger_detail(request: HttpRequest, trigger_id: int) -> dict[str, Any]:
    return _detail_json(request, _trigger(trigger_id))


@openapi.operation(
    Operation(
        "Change a trigger (operator): its fields, enabled (enable / disable), paused (pause / resume).",
        TRIGGER_DETAIL,
        params=(TRIGGER_ID,),
        paginated=False,
        errors=TRIGGER_ERRORS,
        tags=TRIGGERS,
        method="patch",
        body=CHANGE_BODY,
    )
)
@api_patch
def trigger_change(request: HttpRequest, trigger_id: int) -> dict[str, Any]:
    body = json_body(request)
    _fields(body, CHANGE_FIELDS)
    fields = _definition_body(body)
    enabled = _bool(body, "enabled") if "enabled" in body else None
    paused = _bool(body, "paused") if "paused" in body else None
    reason = _str(body, "reason", max_length=2000)
    if not fields and enabled is None and paused is None:
        allowed = ", ".join(f for f in CHANGE_FIELDS if f != "reason")
        raise ApiError(400, f"nothing to change: give one of {allowed}", "bad_field")
    s = _trigger(trigger_id)
    actor = access.actor(request, source="api")
    if fields:
        s = schedule.change_schedule(actor, s, fields)
    if enabled is not None:
        s = schedule.set_enabled(actor, s, enabled, reason)
    if paused is not None:
        s = schedule.set_paused(actor, s, paused, reason)
    return _detail_json(request, _trigger(s.pk))


@openapi.operation(
    Operation(
        "Delete a trigger and its fire history (operator; the runs it made stay).",
        obj(deleted={"type": "integer"}, label={"type": "string"}),
        params=(TRIGGER_ID,),
        paginated=False,
        errors=(400, 401, 403, 404, 413, 415),
        tags=TRIGGERS,
        method="delete",
        body={
            "type": "object",
            "properties": {"reason": {"type": "string"}},
            "additionalProperties": False,
        },
    )
)
@api_delete
def trigger_delete(request: HttpRequest, trigger_id: int) -> dict[str, Any]:
    body = json_body(request)
    _fields(body, ("reason",))
    s = _trigger(trigger_id)
    label = s.label
    schedule.delete_schedule(access.actor(request, source="api"), s, _str(body, "reason", max_length=2000))
    return {"deleted": trigger_id, "label": label}


trigger = api_methods(GET=trigger_detail, PATCH=trigger_change, DELETE=trigger_delete)


# --- webhooks ----------------------------------------------------------------------------------------------

ENDPOINT = obj(
    id={"type": "integer"},
    slug={"type": "string"},
    provider={"type": "string"},
    events={"type": "array", "items": {"type": "string"}},
    filters={"type": "object"},
    branch={"type": "string"},
    job={"type": "string"},
    url={"type": "string"},
    input_template={"type": "object"},
    enabled={"type": "boolean"},
    rate_limit_per_minute={"type": "integer"},
    max_body_bytes={"type": "integer"},
    last_delivery={
        "oneOf": [
            {"type": "null"},
            obj(received_at={"type": "string", "format": "date-time"}, verdict={"type": "string"}),
        ]
    },
    created_at=TS,
    updated_at=TS,
)


def endpoint_json(e: Endpoint) -> dict[str, Any]:
    """An endpoint without its secret: nothing of the secret, its rotation or its source is here."""
    last_at = getattr(e, "last_at", None)
    return {
        "id": e.pk,
        "slug": e.slug,
        "provider": e.provider,
        "events": e.events,
        "filters": e.filters,
        "branch": e.branch,
        "job": e.job.name,
        "url": e.url,
        "input_template": e.input_template,
        "enabled": e.enabled,
        "rate_limit_per_minute": e.rate_limit_per_minute,
        "max_body_bytes": e.body_cap,
        "last_delivery": None
        if last_at is None
        else {"received_at": _ts(last_at), "verdict": e.last_verdict},  # type: ignore[attr-defined]
        "created_at": _ts(e.created_at),
        "updated_at": _ts(e.updated_at),
    }


@openapi.operation(
    Operation(
        "Webhook endpoints: slug, provider, events, filters, job, URL, enabled, last delivery; never a "
        "secret.",
        ENDPOINT,
        params=(JOB_FILTER, ENABLED_FILTER, LIMIT, OFFSET),
        tags=TRIGGERS,
    )
)
@api_view
def webhooks(request: HttpRequest) -> dict[str, Any]:
    qs = Endpoint.objects.select_related("job").with_last_delivery().order_by("slug")
    return paginate(request, _filter_job_enabled(request, qs), endpoint_json)


DELIVERY_PROPERTIES: dict[str, Any] = {
    "id": {"type": "integer"},
    "endpoint": {"type": "string"},
    "endpoint_id": {"type": "integer"},
    "received_at": TS,
    "delivery_id": {"type": "string"},
    "event": {"type": "string"},
    "verdict": {"type": "string", "enum": list(Delivery.Verdict.values)},
    "status_code": {"type": "integer"},
    "reason": {"type": "string"},
    "headers": {
        "type": "object",
        "description": "As stored: signatures, credentials and cookies masked.",
        "additionalProperties": {"type": "string"},
    },
    "body_bytes": {"type": "integer"},
    "body_truncated": {"type": "boolean"},
    "retry": {"type": "integer"},
    "run_id": nullable("integer"),
    "run_status": NULLABLE_STR,
    "redelivery_of": nullable("integer"),
    "duration_ms": nullable("number"),
    "url": {"type": "string", "format": "uri"},
}
DELIVERY = obj(**DELIVERY_PROPERTIES)
DELIVERY_DETAIL = obj(**DELIVERY_PROPERTIES, body={"type": "string"})


def delivery_json(request: HttpRequest, d: Delivery, *, body: bool = False) -> dict[str, Any]:
    row = {
        "id": d.pk,
        "endpoint": d.endpoint.slug,
        "endpoint_id": d.endpoint_id,
        "received_at": _ts(d.received_at),
        "delivery_id": d.delivery_id,
        "event": d.event,
        "verdict": d.verdict,
        "status_code": d.status_code,
        "reason": d.reason,
        "headers": d.headers,  # masked when stored (webhooks.intake.mask_headers)
        "body_bytes": d.body_bytes,
        "body_truncated": d.body_truncated,
        "retry": d.retry,
        "run_id": d.run_id,
        "run_status": d.run.status if d.run_id and d.run else None,
        "redelivery_of": d.redelivery_of_id,
        "duration_ms": d.duration_ms,
        "url": request.build_absolute_uri(reverse("api:webhook-delivery", args=[d.pk])),
    }
    if body:
        row["body"] = d.body
    return row


def _since(request: HttpRequest) -> datetime | None:
    raw = request.GET.get("since", "")
    if not raw:
        return None
    if raw in SINCE:
        return timezone.now() - SINCE[raw]
    moment = _moment(raw)
    if moment is None:
        raise ApiError(
            400,
            f"'since' must be an ISO 8601 time or one of {', '.join(SINCE)}, not {raw[:40]!r}",
            "bad_param",
        )
    return moment


def _endpoint_param(raw: str) -> int:
    """An endpoint by slug, or by id."""
    found = Endpoint.objects.filter(slug=raw).values_list("pk", flat=True).first()
    if found is None and (pk := params.as_id(raw)) is not None:
        found = Endpoint.objects.filter(pk=pk).values_list("pk", flat=True).first()
    if found is None:
        raise ApiError(404, f"no webhook endpoint {raw[:100]!r}")
    return found


@openapi.operation(
    Operation(
        "The webhook delivery log, newest first: verdict, masked headers, run; filter by endpoint, "
        "verdict, time.",
        DELIVERY,
        params=(
            Param("endpoint", "Only this endpoint: its slug, or its id.", {"type": "string"}),
            Param("verdict", "Only this verdict.", {"type": "string", "enum": list(Delivery.Verdict.values)}),
            Param("since", "Received at or after: an ISO 8601 time, or 1h, 24h, 7d.", {"type": "string"}),
            LIMIT,
            OFFSET,
        ),
        errors=(400, 401, 404),
        tags=TRIGGERS,
    )
)
@api_view
def webhook_deliveries(request: HttpRequest) -> dict[str, Any]:
    raw = request.GET.get("endpoint", "")
    verdict = request.GET.get("verdict", "")
    if verdict and verdict not in Delivery.Verdict.values:
        raise ApiError(400, f"'verdict' must be one of {', '.join(Delivery.Verdict.values)}", "bad_param")
    qs = Delivery.objects.log(_endpoint_param(raw) if raw else None, verdict, _since(request))
    return paginate(request, qs, lambda d: delivery_json(request, d))


def _delivery(delivery_id: int) -> Delivery:
    d = Delivery.objects.select_related("endpoint__job", "run").filter(pk=delivery_id).first()
    if d is None:
        raise ApiError(404, f"no delivery {delivery_id}")
    return d


@openapi.operation(
    Operation(
        "One delivery with its stored body (capped as stored) and masked headers.",
        DELIVERY_DETAIL,
        params=(DELIVERY_ID,),
        paginated=False,
        errors=(401, 404),
        tags=TRIGGERS,
    )
)
@api_view
def webhook_delivery(request: HttpRequest, delivery_id: int) -> dict[str, Any]:
    return delivery_json(request, _delivery(delivery_id), body=True)


@openapi.operation(
    Operation(
        "Redeliver a verified delivery (operator): a new delivery and a new run, as the log page's button.",
        DELIVERY,
        params=(DELIVERY_ID,),
        paginated=False,
        errors=(400, 401, 403, 404, 413, 415),
        tags=TRIGGERS,
        method="post",
        success=(201,),
        body={"type": "object", "additionalProperties": False},
    )
)
@api_post
def webhook_redeliver(request: HttpRequest, delivery_id: int) -> JsonResponse:
    _fields(json_body(request), ())
    again = intake.redeliver(access.actor(request, source="api"), _delivery(delivery_id))
    return JsonResponse(delivery_json(request, _delivery(again.pk)), status=201)


# --- file watches ------------------------------------------------------------------------------------------

WATCH = obj(
    id={"type": "integer"},
    name={"type": "string"},
    directory={"type": "string"},
    patterns={"type": "array", "items": {"type": "string"}},
    events={"type": "array", "items": {"type": "string"}},
    recursive={"type": "boolean"},
    debounce_ms={"type": "integer"},
    job={"type": "string"},
    move_to={"type": "string"},
    enabled={"type": "boolean"},
    state={"type": "string", "enum": list(Watch.State.values)},
    state_detail={"type": "string"},
    problem={"type": "boolean", "description": "The directory is missing, unreadable or outside the roots."},
    state_changed_at=TS,
    last_event_at=TS,
    runs_made={"type": "integer"},
    created_at=TS,
)


def watch_json(w: Watch) -> dict[str, Any]:
    return {
        "id": w.pk,
        "name": w.name,
        "directory": w.directory,
        "patterns": w.patterns,
        "events": w.events,
        "recursive": w.recursive,
        "debounce_ms": w.debounce_ms,
        "job": w.job.name,
        "move_to": w.move_to,
        "enabled": w.enabled,
        "state": w.state,
        "state_detail": w.state_detail,
        "problem": w.has_problem,
        "state_changed_at": _ts(w.state_changed_at),
        "last_event_at": _ts(w.last_event_at),
        "runs_made": w.runs_made,
        "created_at": _ts(w.created_at),
    }


@openapi.operation(
    Operation(
        "File watches: directory, patterns, events, job, state (watching, or the directory's problem).",
        WATCH,
        params=(JOB_FILTER, ENABLED_FILTER, LIMIT, OFFSET),
        tags=TRIGGERS,
    )
)
@api_view
def watches(request: HttpRequest) -> dict[str, Any]:
    qs = Watch.objects.select_related("job").order_by("name")
    return paginate(request, _filter_job_enabled(request, qs), watch_json)
