"""The trace API: ``GET /api/v1/runs/<id>/trace/``, a run's waterfall as JSON (the rows the trace
page draws; ``dashboard.trace`` builds them)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from scheduler.models import Run

from . import openapi, trace
from .api import ApiError, api_view
from .openapi import Operation, Param, nullable, obj

RUN_ID = Param("run_id", "The run's id.", {"type": "integer", "minimum": 1}, "path")

ROW = obj(
    span_id={"type": "string"},
    parent_span_id={"type": "string"},
    depth={"type": "integer", "minimum": 0},
    name={"type": "string"},
    kind={"type": "string", "description": "flow, step, agent, command; run, wait, attempt"},
    status={"type": "string", "enum": list(trace.TraceStatus.values)},
    start_ns={"type": "integer"},
    end_ns={"type": "integer"},
    offset_ms={"type": "number", "description": "From the trace's start."},
    duration_ms={"type": "number"},
    left_pct={"type": "number", "minimum": 0, "maximum": 100},
    width_pct={"type": "number", "minimum": 0, "maximum": 100},
    error={"type": "string"},
    error_class={"type": "string"},
    tokens_in=nullable("integer"),
    tokens_out=nullable("integer"),
    cost=nullable("number"),
    model={"type": "string"},
    session_key={"type": "string"},
    session_url={"type": "string", "description": "The session's page, or empty."},
    child_run_id=nullable("integer"),
    child_run_url={"type": "string"},
    child_trace_url={"type": "string"},
    open_ended={"type": "boolean", "description": "Still going: it ends now."},
    attributes={"type": "object"},
    events={"type": "array", "items": {"type": "object"}},
)
TRACE = obj(
    run={"type": "integer"},
    kind={"type": "string"},
    status={"type": "string", "enum": list(Run.Status.values)},
    source={"type": "string", "enum": ["spans", "run"]},
    trace_id={"type": "string"},
    started_at={"type": "string", "format": "date-time"},
    duration_ms={"type": "number"},
    flow={
        "oneOf": [
            {"type": "null"},
            obj(
                name={"type": "string"},
                status={"type": "string"},
                position={"type": "string"},
                steps_done={"type": "integer"},
            ),
        ]
    },
    parent_run=nullable("integer"),
    totals=obj(
        tokens_in={"type": "integer"},
        tokens_out={"type": "integer"},
        cost={"type": "number"},
        errors={"type": "integer"},
    ),
    ticks={"type": "array", "items": obj(pct={"type": "number"}, label={"type": "string"})},
    rows={"type": "array", "items": ROW},
)


@openapi.operation(
    Operation(
        "A run's trace waterfall: a flow run's spans (flow, steps, agent and command runs) or, for "
        "any other run, its queue wait and attempts; durations, status, tokens, cost and links.",
        TRACE,
        params=(RUN_ID,),
        paginated=False,
        errors=(401, 404),
        tags=("ops",),
    )
)
@api_view
def run_trace(request: HttpRequest, run_id: int) -> dict[str, Any]:
    run = Run.objects.filter(pk=run_id).first()
    if run is None:
        raise ApiError(404, f"no run {run_id}")
    return trace.for_run(run).as_json()
