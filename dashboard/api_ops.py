"""The ops API of the execution queue (``/api/v1/``): health, queue status and pause / resume,
stats, session status, runs, jobs and alerts. Thin views: they parse the input strictly, call one
function of ``scheduler`` (stats, ops, controls) and answer its JSON. Every write goes through a
control that checks the operator role and writes an audit row (a refusal is a 403).

``POST runs/`` answers 201 with the new run, or 200 with the unfinished run that already holds
its ``dedupe_key`` (nothing new is queued). With ``{"runs": [...]}`` it queues them all in one
transaction (``ops.submit_many``) or none, and answers 201 with ``{"runs": [...], "created": [...]}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db.models import F
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from fleet import health
from fleet.models import Gateway
from scheduler import controls, ops, stats
from scheduler.models import Alert, Job, Priority, QueuePause, Run, severity_rank
from scheduler.runjson import alert_json, job_json, run_json

from . import access, openapi, params
from .api import (
    BULK_BODY_BYTES,
    LIMIT,
    MAX_BODY_BYTES,
    OFFSET,
    TS,
    ApiError,
    _moment,
    api_get_post,
    api_post,
    api_view,
    json_body,
    paginate,
    too_large,
)
from .openapi import Operation, Param, nullable, obj

MINUTES = Param(
    "minutes",
    f"The window: the last N minutes, 1 to {stats.MAX_MINUTES} (default 60).",
    {"type": "integer", "minimum": 1, "maximum": stats.MAX_MINUTES, "default": 60},
)
RUN_ID = Param("run_id", "The run's id.", {"type": "integer", "minimum": 1}, "path")
PRIORITIES = list(Priority.values)
SCOPES = [s for s in QueuePause.Scope.values if s != "all"]


def _minutes(request: HttpRequest) -> int:
    return params.get_int(request.GET, "minutes", 60, minimum=1, maximum=stats.MAX_MINUTES)


# --- the body's fields -----------------------------------------------------------------------------


def _fields(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(
            400, f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(allowed)})", "bad_field"
        )


def _str(body: dict[str, Any], name: str, *, max_length: int = 200, required: bool = False) -> str:
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, f"'{name}' is required", "bad_field")
        return ""
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a string", "bad_field")
    if "\x00" in value:
        raise ApiError(400, f"'{name}' must not contain NUL characters", "bad_field")
    if len(value) > max_length:
        raise ApiError(400, f"'{name}' is longer than {max_length} characters", "bad_field")
    return value


def _int(body: dict[str, Any], name: str, *, minimum: int = 1, maximum: int = 86_400 * 7) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ApiError(400, f"'{name}' must be a whole number from {minimum} to {maximum}", "bad_field")
    return value


def _priority(raw: str, name: str = "priority") -> str | None:
    if not raw:
        return None
    if raw not in PRIORITIES:
        raise ApiError(400, f"'{name}' must be one of {', '.join(PRIORITIES)}, not {raw!r}", "bad_priority")
    return raw


def _when(body: dict[str, Any], name: str) -> datetime | None:
    raw = _str(body, name, max_length=64)
    if not raw:
        return None
    moment = _moment(raw)
    if moment is None:
        raise ApiError(400, f"'{name}' must be an ISO 8601 time, e.g. 2026-01-01T12:00:00Z", "bad_time")
    return moment


def _run(run_id: int) -> Run:
    run = Run.objects.prefetch_related("attempt_set").filter(pk=run_id).first()
    if run is None:
        raise ApiError(404, f"no run {run_id}")
    return run


def _run_json(request: HttpRequest, run: Run, attempts: list | None = None) -> dict[str, Any]:
    url = request.build_absolute_uri(reverse("api:run-result", args=[run.pk])) if run.result else None
    return run_json(run, result_url=url, attempts=attempts)


# --- schemas ------------------------------------------------------------------------------------------

_COUNTS = {"type": "object", "additionalProperties": {"type": "integer"}}
NUM = nullable("number")
RUN = obj(
    id={"type": "integer"},
    job=nullable("string"),
    kind={"type": "string"},
    status={"type": "string", "enum": list(Run.Status.values)},
    priority={"type": "string", "enum": PRIORITIES},
    trigger={"type": "string"},
    triggered_by={"type": "string"},
    gateway=nullable("string"),
    agent=nullable("string"),
    dedupe_key=nullable("string"),
    attempts={"type": "integer"},
    max_attempts={"type": "integer"},
    timeout={"type": "integer"},
    timings=obj(queued_at=TS, run_after=TS, started_at=TS, finished_at=TS, wait_time=NUM, execution_time=NUM),
    result=nullable("string"),
    result_truncated={"type": "boolean"},
    result_url=nullable("string", format="uri"),
    session_key=nullable("string"),
    usage={"type": "object"},
    error_class=nullable("string"),
    error=nullable("string"),
    attempt_list={"type": "array", "items": {"type": "object"}},
)
JOB = obj(
    name={"type": "string"},
    kind={"type": "string"},
    params={"type": "object"},
    prompt_template={"type": "string"},
    priority={"type": "string", "enum": PRIORITIES},
    timeout={"type": "integer"},
    max_attempts={"type": "integer"},
    on_error={"type": "string"},
    on_error_job=nullable("string"),
    concurrency_limit=nullable("integer"),
    enabled={"type": "boolean"},
    tags={"type": "array", "items": {"type": "string"}},
    created_at=TS,
    updated_at=TS,
)
SCOPE_BODY = {
    "type": "object",
    "description": 'One of {"scope": "all"}, {"priority": …}, {"gateway": …}, {"agent": …}, {"job": …}, '
    'optionally with "reason".',
    "properties": {
        "scope": {"type": "string", "enum": ["all"]},
        "priority": {"type": "string", "enum": PRIORITIES},
        "gateway": {"type": "string"},
        "agent": {"type": "string"},
        "job": {"type": "string"},
        "reason": {"type": "string"},
    },
    "additionalProperties": False,
}
REASON_BODY = {
    "type": "object",
    "properties": {"reason": {"type": "string"}},
    "additionalProperties": False,
}
OPS = ("ops",)


# --- health -------------------------------------------------------------------------------------------


@openapi.operation(
    Operation(
        "Health of the database, Redis and each gateway (no authentication; 503 when down).",
        {"type": "object", "required": ["status", "database", "redis", "gateways"]},
        paginated=False,
        errors=(),
        public=True,
        tags=OPS,
    )
)
@login_not_required
@csrf_exempt
@never_cache
@require_GET
def health_view(request: HttpRequest) -> JsonResponse:
    report = health.report()
    return JsonResponse(report, status=503 if report["status"] == "down" else 200)


# --- queue ----------------------------------------------------------------------------------------------


@openapi.operation(
    Operation(
        "Per priority and state: counts, oldest wait, throughput and average wait; the pauses.",
        obj(
            window_minutes={"type": "integer"},
            priorities={
                "type": "object",
                "additionalProperties": obj(
                    counts=_COUNTS,
                    oldest_wait=NUM,
                    throughput_per_minute={"type": "number"},
                    average_wait=NUM,
                ),
            },
            pauses={"type": "array", "items": {"type": "object"}},
        ),
        params=(MINUTES,),
        paginated=False,
        tags=OPS,
    )
)
@api_view
def queue_status(request: HttpRequest) -> dict[str, Any]:
    return stats.queue_status(_minutes(request))


def _scope(body: dict[str, Any]) -> tuple[str, str, str]:
    _fields(body, ("scope", "priority", "gateway", "agent", "job", "reason"))
    reason = _str(body, "reason", max_length=2000)
    given = [name for name in ("scope", *SCOPES) if name in body]
    if len(given) != 1:
        raise ApiError(
            400,
            'give exactly one scope: {"scope": "all"} or one of "priority", "gateway", "agent", "job"',
            "bad_scope",
        )
    name = given[0]
    value = _str(body, name, max_length=100, required=True)
    if name == "scope":
        if value != "all":
            raise ApiError(
                400,
                f"'scope' must be 'all' (or name a priority, gateway, agent or job), not {value!r}",
                "bad_scope",
            )
        return "all", "", reason
    if name == "priority":
        _priority(value)
    return name, value, reason


@openapi.operation(
    Operation(
        "Pause a scope: its queued runs are parked until resumed (operator).",
        obj(scope={"type": "string"}, value={"type": "string"}, parked={"type": "integer"}),
        paginated=False,
        errors=(400, 401, 403),
        tags=OPS,
        method="post",
        body=SCOPE_BODY,
    )
)
@api_post
def queue_pause(request: HttpRequest) -> dict[str, Any]:
    scope, value, reason = _scope(json_body(request))
    row = controls.pause(access.actor(request, source="api"), scope, value, reason)
    covered = Run.objects.filter(status=Run.Status.PARKED)
    return {"scope": row.scope, "value": row.value, "parked": covered.count()}


@openapi.operation(
    Operation(
        "Resume a paused scope: its parked runs return to the queue in order (operator).",
        obj(scope={"type": "string"}, value={"type": "string"}, released={"type": "integer"}),
        paginated=False,
        errors=(400, 401, 403),
        tags=OPS,
        method="post",
        body=SCOPE_BODY,
    )
)
@api_post
def queue_resume(request: HttpRequest) -> dict[str, Any]:
    scope, value, reason = _scope(json_body(request))
    released = controls.resume(access.actor(request, source="api"), scope, value, reason)
    return {"scope": scope, "value": value, "released": released}


# --- stats ------------------------------------------------------------------------------------------------


@openapi.operation(
    Operation(
        "Requests per minute, tokens, cost, success rate and average response time in the window.",
        obj(
            window_minutes={"type": "integer"},
            requests_per_minute={"type": "number"},
            finished={"type": "integer"},
            succeeded={"type": "integer"},
            success_rate=NUM,
            tokens=obj(input={"type": "integer"}, output={"type": "integer"}, total={"type": "integer"}),
            cost={"type": "number"},
            average_response_time=NUM,
        ),
        params=(MINUTES,),
        paginated=False,
        tags=OPS,
    )
)
@api_view
def stats_usage(request: HttpRequest) -> dict[str, Any]:
    return stats.usage(_minutes(request))


@openapi.operation(
    Operation(
        "Errors of the window's runs by error class and by job.",
        obj(
            window_minutes={"type": "integer"},
            total={"type": "integer"},
            by_class=_COUNTS,
            by_job={"type": "object", "additionalProperties": _COUNTS},
        ),
        params=(MINUTES,),
        paginated=False,
        tags=OPS,
    )
)
@api_view
def stats_errors(request: HttpRequest) -> dict[str, Any]:
    return stats.error_counts(_minutes(request))


_PCT = obj(p50=NUM, p95=NUM, p99=NUM, count={"type": "integer"})


@openapi.operation(
    Operation(
        "p50 / p95 / p99 of the wait and of the run time in the window (seconds).",
        obj(window_minutes={"type": "integer"}, wait=_PCT, run_time=_PCT),
        params=(MINUTES,),
        paginated=False,
        tags=OPS,
    )
)
@api_view
def stats_performance(request: HttpRequest) -> dict[str, Any]:
    return stats.performance(_minutes(request))


@openapi.operation(
    Operation(
        "Per gateway, provider and agent: ok, rate limited until, breaker state, blocked with reason.",
        obj(entries={"type": "array", "items": {"type": "object"}}, limiter_configured={"type": "boolean"}),
        paginated=False,
        tags=OPS,
    )
)
@api_view
def session_status(request: HttpRequest) -> dict[str, Any]:
    return stats.session_status()


# --- runs ---------------------------------------------------------------------------------------------------

RUN_FIELDS = (
    "job",
    "agent",
    "prompt",
    "gateway",
    "priority",
    "timeout",
    "run_after",
    "dedupe_key",
    "input",
    "params",
)


@openapi.operation(
    Operation(
        "Runs, newest first; filter by status, job and priority.",
        RUN,
        params=(
            Param("status", "Only runs in this state.", {"type": "string", "enum": list(Run.Status.values)}),
            Param("job", "Only runs of this job (its name).", {"type": "string"}),
            Param("priority", "Only runs of this priority.", {"type": "string", "enum": PRIORITIES}),
            LIMIT,
            OFFSET,
        ),
        tags=OPS,
    )
)
@api_view
def runs_list(request: HttpRequest) -> dict[str, Any]:
    qs = Run.objects.prefetch_related("attempt_set").order_by("-id")
    if status := request.GET.get("status"):
        if status not in Run.Status.values:
            raise ApiError(400, f"'status' must be one of {', '.join(Run.Status.values)}", "bad_param")
        qs = qs.filter(status=status)
    if priority := _priority(request.GET.get("priority", "")):
        qs = qs.filter(priority=priority)
    if job := request.GET.get("job"):
        qs = qs.filter(job_name=job)
    return paginate(request, qs, lambda run: _run_json(request, run))


def _gateway_param(raw: str) -> str:
    """The agent's gateway as the agent kind takes it (an id), by name or id; when only one
    gateway is registered it may be left out."""
    if not raw:
        only = list(Gateway.objects.values_list("pk", flat=True)[:2])
        if len(only) == 1:
            return str(only[0])
        if not only:
            raise ApiError(400, "no gateway is registered", "no_gateway")
        names = ", ".join(Gateway.objects.order_by("name").values_list("name", flat=True)[:20])
        raise ApiError(400, f"'gateway' is required when several are registered ({names})", "bad_field")
    gateway = Gateway.objects.filter(name=raw).first()
    if gateway is None and (pk := params.as_id(raw)) is not None:
        gateway = Gateway.objects.filter(pk=pk).first()
    if gateway is None:
        raise ApiError(404, f"no gateway named {raw!r}")
    return str(gateway.pk)


RUN_BODY = {
    "type": "object",
    "description": '{"job": name} or {"agent": id, "prompt": text, "gateway": name}; '
    "optional priority, timeout (seconds), run_after (ISO time), dedupe_key, input, params.",
    "properties": {
        "job": {"type": "string"},
        "agent": {"type": "string"},
        "prompt": {"type": "string"},
        "gateway": {"type": "string"},
        "priority": {"type": "string", "enum": PRIORITIES},
        "timeout": {"type": "integer", "minimum": 1},
        "run_after": {"type": "string", "format": "date-time"},
        "dedupe_key": {"type": "string", "maxLength": 200},
        "input": {},
        "params": {"type": "object"},
    },
    "additionalProperties": False,
}
BULK_BODY = {
    "type": "object",
    "description": '{"runs": [one run\'s body, …]}: at most AGENTFLOW_API_BULK_MAX (1,000) runs, queued in '
    "one transaction or none (the first bad item named by its index: item 3: …); one audit row.",
    "required": ["runs"],
    "properties": {"runs": {"type": "array", "items": RUN_BODY, "minItems": 1}},
    "additionalProperties": False,
}
BULK_RESULT = obj(
    runs={"type": "array", "items": RUN},
    created={"type": "array", "items": {"type": "boolean"}},
)


@openapi.operation(
    Operation(
        "Queue a run of a job or an ad-hoc agent prompt (operator); 201, or 200 for a dedupe_key held. "
        'Or many: {"runs": […]} answers 201 with {"runs": […], "created": […]} in the same order '
        "(a held dedupe_key: that run, created false).",
        {"oneOf": [RUN, BULK_RESULT]},
        paginated=False,
        errors=(400, 401, 403, 404, 413, 415),
        tags=OPS,
        method="post",
        success=(201, 200),
        body={"oneOf": [RUN_BODY, BULK_BODY]},
    )
)
@api_post
def runs_create(request: HttpRequest) -> JsonResponse:
    body = json_body(request, max_bytes=BULK_BODY_BYTES)
    if "runs" in body:
        return _runs_create_many(request, body)
    if len(request.body) > MAX_BODY_BYTES:
        raise too_large(len(request.body), MAX_BODY_BYTES)
    run, created = ops.submit(access.actor(request, source="api"), **_submission(body))
    if not created:  # the unfinished run holding the dedupe key, as it is now
        return JsonResponse(_run_json(request, _run(run.pk)), status=200)
    # The run as queued, from the object just saved (not read back: it has no attempt yet); a
    # worker may start it before this answer is sent: GET runs/<id>/ shows it then.
    return JsonResponse(_run_json(request, run, attempts=[]), status=201)


def _submission(body: dict[str, Any]) -> dict[str, Any]:
    """One run's body as ``ops.submit``'s keyword arguments (ApiError 400 / 404 otherwise)."""
    _fields(body, RUN_FIELDS)
    job, agent = _str(body, "job", max_length=100), _str(body, "agent", max_length=100)
    if bool(job) == bool(agent):
        raise ApiError(400, 'give either "job" (a job name) or "agent" with "prompt"', "bad_field")
    extra = body.get("params")
    if extra is not None and not isinstance(extra, dict):
        raise ApiError(400, "'params' must be a JSON object", "bad_field")
    run_params: dict[str, Any] = dict(extra or {})
    prompt: str | None = None
    kind = None
    if agent:
        prompt = _str(body, "prompt", max_length=100_000, required=True)
        run_params.update(agent=agent, gateway=_gateway_param(_str(body, "gateway", max_length=100)))
        kind = ops.AGENT_PROMPT
    elif "prompt" in body or "gateway" in body:
        raise ApiError(400, '"prompt" and "gateway" go with "agent", not with "job"', "bad_field")
    return {
        "job": job or None,
        "kind": kind,
        "params": run_params,
        "input": body.get("input"),
        "prompt": prompt,
        "priority": _priority(_str(body, "priority", max_length=20)),
        "timeout": _int(body, "timeout"),
        "run_after": _when(body, "run_after"),
        "dedupe_key": _str(body, "dedupe_key", max_length=200),
    }


def _runs_create_many(request: HttpRequest, body: dict[str, Any]) -> JsonResponse:
    """``{"runs": [one run's body, …]}``: all queued in one transaction, or none (the first bad
    item's index in the error: ``item 3: …``)."""
    _fields(body, ("runs",))
    items = body["runs"]
    if not isinstance(items, list) or not items:
        raise ApiError(400, "'runs' must be a non-empty list of run bodies", "bad_field")
    limit = settings.AGENTFLOW_API_BULK_MAX
    if len(items) > limit:
        raise ApiError(
            413, f"{len(items)} runs in one request: at most {limit} (AGENTFLOW_API_BULK_MAX)", "too_many"
        )
    submissions = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise ApiError(
                    400, f"a run body must be a JSON object, not {type(item).__name__}", "bad_field"
                )
            submissions.append(_submission(item))
        except ApiError as exc:
            raise ApiError(exc.status, f"item {index}: {exc.message}", exc.code) from None
    results = ops.submit_many(access.actor(request, source="api"), submissions)
    fetched = {
        r.pk: r for r in Run.objects.prefetch_related("attempt_set").filter(pk__in={r.pk for r, _ in results})
    }
    return JsonResponse(
        {
            "runs": [_run_json(request, fetched[run.pk]) for run, _ in results],
            "created": [created for _, created in results],
        },
        status=201,
    )


runs = api_get_post(runs_list, runs_create)


@openapi.operation(
    Operation(
        "One run with its attempts, timings, result, usage and error.",
        RUN,
        params=(RUN_ID,),
        paginated=False,
        errors=(401, 404),
        tags=OPS,
    )
)
@api_view
def run_detail(request: HttpRequest, run_id: int) -> dict[str, Any]:
    return _run_json(request, _run(run_id))


@openapi.operation(
    Operation(
        "A run's whole stored result (the run's JSON shows it capped).",
        obj(id={"type": "integer"}, result={"type": "string"}, truncated_when_stored={"type": "boolean"}),
        params=(RUN_ID,),
        paginated=False,
        errors=(401, 404),
        tags=OPS,
    )
)
@api_view
def run_result(request: HttpRequest, run_id: int) -> dict[str, Any]:
    run = _run(run_id)
    return {"id": run.pk, "result": run.result, "truncated_when_stored": run.result_truncated}


def _run_control(name: str) -> Any:
    control = {"cancel": controls.cancel_run, "retry": controls.retry_run}[name]

    @openapi.operation(
        Operation(
            f"{name.capitalize()} a run (operator); 400 when its state does not allow it.",
            RUN,
            params=(RUN_ID,),
            paginated=False,
            errors=(400, 401, 403, 404),
            tags=OPS,
            method="post",
            body=REASON_BODY,
        )
    )
    @api_post
    def view(request: HttpRequest, run_id: int) -> dict[str, Any]:
        body = json_body(request)
        _fields(body, ("reason",))
        run = control(
            access.actor(request, source="api"), _run(run_id), _str(body, "reason", max_length=2000)
        )
        return _run_json(request, _run(run.pk))

    view.__name__ = view.__qualname__ = f"run_{name}"
    return view


run_cancel = _run_control("cancel")
run_retry = _run_control("retry")


# --- jobs ------------------------------------------------------------------------------------------------


@openapi.operation(Operation("Job definitions, by name.", JOB, params=(LIMIT, OFFSET), tags=OPS))
@api_view
def jobs_list(request: HttpRequest) -> dict[str, Any]:
    return paginate(request, Job.objects.select_related("on_error_job").order_by("name"), job_json)


@openapi.operation(
    Operation(
        "Create a job (operator); its params are validated by its kind.",
        JOB,
        paginated=False,
        errors=(400, 401, 403, 404, 413, 415),
        tags=OPS,
        method="post",
        success=(201,),
        body={
            "type": "object",
            "required": ["name", "kind"],
            "properties": {
                "name": {"type": "string"},
                "kind": {"type": "string"},
                "params": {"type": "object"},
                "prompt_template": {"type": "string"},
                "priority": {"type": "string", "enum": PRIORITIES},
                "timeout": {"type": "integer", "minimum": 1},
                "max_attempts": {"type": "integer", "minimum": 1},
                "on_error": {"type": "string", "enum": list(Job.OnError.values)},
                "on_error_job": {"type": "string"},
                "concurrency_limit": {"type": ["integer", "null"], "minimum": 1},
                "enabled": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "additionalProperties": False,
        },
    )
)
@api_post
def jobs_create(request: HttpRequest) -> JsonResponse:
    body = json_body(request)
    _fields(body, ops.JOB_FIELDS)
    fields: dict[str, Any] = {"name": _str(body, "name", max_length=100, required=True)}
    fields["kind"] = _str(body, "kind", max_length=60, required=True)
    for name in ("prompt_template", "on_error_job"):
        if name in body:
            fields[name] = _str(body, name, max_length=100_000 if name == "prompt_template" else 100)
    if "priority" in body:
        fields["priority"] = _priority(_str(body, "priority", max_length=20)) or Priority.NORMAL
    if "on_error" in body:
        on_error = _str(body, "on_error", max_length=20)
        if on_error not in Job.OnError.values:
            raise ApiError(400, f"'on_error' must be one of {', '.join(Job.OnError.values)}", "bad_field")
        fields["on_error"] = on_error
    for name, top in (("timeout", 86_400 * 7), ("max_attempts", 100), ("concurrency_limit", 10_000)):
        if body.get(name) is not None:
            fields[name] = _int(body, name, maximum=top)
    if "params" in body:
        if not isinstance(body["params"], dict):
            raise ApiError(400, "'params' must be a JSON object", "bad_field")
        fields["params"] = body["params"]
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise ApiError(400, "'enabled' must be true or false", "bad_field")
        fields["enabled"] = body["enabled"]
    if "tags" in body:
        tags = body["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) and len(t) <= 100 for t in tags):
            raise ApiError(400, "'tags' must be a list of strings", "bad_field")
        fields["tags"] = tags
    job = ops.create_job(access.actor(request, source="api"), fields)
    return JsonResponse(job_json(job), status=201)


jobs = api_get_post(jobs_list, jobs_create)


@openapi.operation(
    Operation(
        "One job definition.",
        JOB,
        params=(Param("name", "The job's name.", {"type": "string", "minLength": 1}, "path"),),
        paginated=False,
        errors=(401, 404),
        tags=OPS,
    )
)
@api_view
def job_detail(request: HttpRequest, name: str) -> dict[str, Any]:
    job = Job.objects.select_related("on_error_job").filter(name=name).first()
    if job is None:
        raise ApiError(404, f"no job named {name!r}")
    return job_json(job)


# --- alerts -----------------------------------------------------------------------------------------


@openapi.operation(
    Operation(
        "Alerts, open ones first (by level), then the history, newest first; filter by open, level, rule.",
        obj(
            id={"type": "integer"},
            level={"type": "string", "enum": list(Alert.Level.values)},
            rule=nullable("string"),
            subject={"type": "string"},
            source={"type": "string"},
            message={"type": "string"},
            value=NUM,
            open={"type": "boolean"},
            first_seen=TS,
            last_seen=TS,
            count={"type": "integer"},
            reopened={"type": "integer"},
            resolved_at=TS,
        ),
        params=(
            Param(
                "open", "1: only open alerts; 0: only resolved ones.", {"type": "string", "enum": ["0", "1"]}
            ),
            Param(
                "level", "Only alerts of this level.", {"type": "string", "enum": list(Alert.Level.values)}
            ),
            Param("rule", "Only alerts of this rule (its key, e.g. error-rate).", {"type": "string"}),
            LIMIT,
            OFFSET,
        ),
        tags=OPS,
    )
)
@api_view
def alerts_list(request: HttpRequest) -> dict[str, Any]:
    qs = Alert.objects.all()
    if (flag := request.GET.get("open")) is not None:
        if flag not in ("0", "1"):
            raise ApiError(400, "'open' must be 1 (open alerts) or 0 (resolved ones)", "bad_param")
        qs = qs.filter(resolved_at__isnull=flag == "1")
    if level := request.GET.get("level"):
        if level not in Alert.Level.values:
            raise ApiError(400, f"'level' must be one of {', '.join(Alert.Level.values)}", "bad_param")
        qs = qs.filter(level=level)
    if rule := request.GET.get("rule"):
        qs = qs.filter(rule=rule)
    # Open first (severest first), then the resolved ones, newest first.
    qs = qs.order_by(F("resolved_at").desc(nulls_first=True), severity_rank(), "-created_at", "-id")
    return paginate(request, qs, alert_json)
