"""The Python API: run a flow to its end in this process (``manage.py run_flow`` uses it).

    from flows import api
    result = api.run("examples/multi_agent/chat_bot/flow.yaml", {"message": "hi"}, tracer="console")
    print(result.status, result.context["summary"]["report"])

The flow is an ordinary ``flow`` run (queued, audited, visible on the pages); this process
claims it and the runs of its steps itself, so no Celery worker is needed. Agent runs are
completed by the gateway listener (``manage.py run_gateway_listener``, part of ``make run``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Q

from scheduler import queue, workers
from scheduler.models import Run

from . import engine, hooks
from .models import FlowRun


class FlowRefused(Exception):
    """The flow did not run (bad flow or parameters, an emergency stop, a pause)."""


@dataclass
class FlowResult:
    run_id: int
    flow_run_id: int | None
    status: str  # the run's: succeeded, failed, aborted, cancelled…
    error: str
    context: dict[str, Any]
    report: str
    seconds: float


def run(
    flow: str,
    context: dict[str, Any] | None = None,
    *,
    tracer: str | None = None,
    tracer_args: dict[str, str] | None = None,
    preset: str | None = None,
    write: bool = False,
    triggered_by: str = "flows.api",
    trigger: str = Run.Trigger.SYSTEM,
    priority: str | None = None,
) -> FlowResult:
    """Run ``flow`` (a stored flow's name or a flow file) with ``context``; returns when it ends."""
    params: dict[str, Any] = {"flow": flow}
    if preset:
        params["preset"] = preset
    if tracer:
        params["tracer"] = tracer
    if tracer_args:
        params["tracer_args"] = tracer_args
    if write:
        params["write"] = True
    started = time.monotonic()
    try:
        flow_run = queue.enqueue(
            kind=hooks.FLOW,
            params=params,
            input=context or {},
            priority=priority,
            trigger=trigger,
            triggered_by=triggered_by,
            timeout_seconds=_timeout(),
            max_attempts=1,
        )
    except ValidationError as exc:
        raise FlowRefused("; ".join(exc.messages)) from None
    if flow_run.status != Run.Status.QUEUED:
        raise FlowRefused(f"run {flow_run.pk} is {flow_run.status} (an emergency stop or a pause holds it)")
    worker = f"run_flow:{workers.this_worker()}"
    queue.start_next(worker, scope=Q(pk=flow_run.pk))  # a worker may have taken it first: fine
    return drive(flow_run.pk, started)


def _timeout() -> int:
    from django.conf import settings

    return int(settings.AGENTFLOW_FLOW_TIMEOUT)


def drive(run_id: int, started: float | None = None) -> FlowResult:
    """Advance the flow run of ``run_id`` here until its run is final."""
    started = started if started is not None else time.monotonic()
    while True:
        run = Run.objects.get(pk=run_id)
        fr = FlowRun.objects.filter(run_id=run_id).first()
        if run.status in Run.FINAL:
            break
        if fr is not None and run.status == Run.Status.RUNNING:
            status = engine.advance(fr.pk, drive=True)
            if status in FlowRun.FINAL:
                hooks.complete(FlowRun.objects.get(pk=fr.pk))
                continue
        if run.status == Run.Status.QUEUED:
            queue.start_next(f"run_flow:{workers.this_worker()}", scope=Q(pk=run_id))
        time.sleep(engine.POLL_SECONDS)
    fr = FlowRun.objects.filter(run_id=run_id).first()
    ctx = fr.context if fr is not None else {}
    summary = ctx.get("summary") if isinstance(ctx, dict) else None
    report = str(summary.get("report", "")) if isinstance(summary, dict) else ""
    return FlowResult(
        run_id=run_id,
        flow_run_id=fr.pk if fr else None,
        status=run.status,
        error=run.error or (fr.error if fr else ""),
        context=ctx,
        report=report or run.result,
        seconds=time.monotonic() - started,
    )
