"""Running a flow run step by step (flows/README.md, "Running").

:func:`advance` moves a :class:`FlowRun` as far as it can: local steps run at once; a step that
needs a run of another kind (an agent prompt, a command) enqueues it and the flow waits in the
``waiting`` state. In a worker ``advance`` then returns (the ``run_finished`` signal resumes the
flow in a worker: flows/hooks.py); with ``drive=True`` (``run_flow``, :mod:`flows.api`) it
starts the step's run in its own process and waits for it.

The state is saved after every step and every attempt of one, so a worker that dies mid-step
loses only that step; one lease per flow run (Redis) keeps two processes from advancing it at
once. Between steps the emergency stop ends the flow aborted at the step it was about to run
(a retry resumes there) and a pause makes it wait.
"""

from __future__ import annotations

import atexit
import logging
import time
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils import timezone

from agentflow.lib import locks
from scheduler import queue, stops, workers
from scheduler.models import Run

from . import context, spec, steps, tracing
from .models import FlowRun, Span
from .spec import END, FlowSpec, StepSpec
from .tracing import EventData, SpanData

log = logging.getLogger("agentflow.flows")

LEASE_SECONDS = 30
POLL_SECONDS = 0.2
PAUSE_RECHECK_SECONDS = 2.0
_tracers: dict[str, tracing.TracerDB] = {}  # a connection cache per process (no flow state)


def now_ns() -> int:
    return time.time_ns()


def tracer_for(fr: FlowRun) -> tracing.TracerDB:
    cache_key = f"{fr.tracer}:{sorted((fr.tracer_args or {}).items())}"
    tracer = _tracers.get(cache_key)
    if tracer is None:
        tracer = tracing.make(fr.tracer, fr.tracer_args)
        tracer.connect()
        _tracers[cache_key] = tracer
    return tracer


@atexit.register
def close_tracers() -> None:
    """Flush and close this process's tracers (at exit; ``run_flow`` when its flow has ended)."""
    for tracer in list(_tracers.values()):
        try:
            tracer.close()
        except Exception:
            log.warning("tracer %s did not close", tracer.name, exc_info=True)
    _tracers.clear()


# --- starting -------------------------------------------------------------------------------------


def create(run: Run) -> FlowRun:
    """The FlowRun of a ``flow`` run (its YAML read now: later edits of the file do not change it)."""
    params = run.params
    flow, source, _path = spec.load(params["flow"])
    ctx = _merge(flow.context, run.input if isinstance(run.input, dict) else {})
    preset = params.get("preset") or flow.preset
    ctx["flow"] = {"name": flow.name, "run_id": run.pk, "preset": preset, "write": bool(params.get("write"))}
    fr, _ = FlowRun.objects.get_or_create(
        run=run,
        defaults={
            "flow_name": flow.name,
            "source": source,
            "preset": preset,
            "tracer": params.get("tracer") or "none",
            "tracer_args": params.get("tracer_args") or {},
            "write": bool(params.get("write")),
            "context": ctx,
            "position": flow.steps[0].id,
            "trace_id": tracing.new_trace_id(),
            "root_span_id": tracing.new_span_id(),
            "started_ns": now_ns(),
        },
    )
    return fr


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in over.items():
        merged[k] = _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def reopen(fr: FlowRun) -> None:
    """A new attempt of a flow that failed or was aborted (an operator's retry): it resumes at the
    step it ended in, that step's attempts counted afresh."""
    if fr.status in (FlowRun.Status.FAILED, FlowRun.Status.ABORTED, FlowRun.Status.CANCELLED):
        fr.status, fr.step_attempt, fr.error, fr.waiting_run, fr.finished_at = (
            FlowRun.Status.RUNNING,
            0,
            "",
            None,
            None,
        )
        fr.save(update_fields=["status", "step_attempt", "error", "waiting_run", "finished_at"])


# --- advancing ------------------------------------------------------------------------------------


def advance(flow_run_id: int, *, drive: bool = False) -> str | None:
    """Move the flow run on; its status after, or None when another process holds it."""
    with locks.lease("flow-run", flow_run_id, LEASE_SECONDS) as held:
        if not held.acquired:
            return None
        fr = FlowRun.objects.select_related("run").get(pk=flow_run_id)
        if fr.status in FlowRun.FINAL:
            return fr.status
        tracer = tracer_for(fr)
        try:
            flow = spec.parse(fr.source, origin=fr.flow_name)
        except spec.FlowError as exc:
            _finish(fr, tracer, FlowRun.Status.FAILED, f"the flow no longer validates: {exc}")
            return fr.status
        try:
            return _loop(fr, flow, tracer, drive)
        finally:
            tracer.flush()


def _run_gone(fr: FlowRun) -> bool:
    """The flow's own run left ``running`` (cancelled, aborted by a stop, lost): follow it."""
    status = Run.objects.filter(pk=fr.run_id).values_list("status", flat=True).first()
    if status == Run.Status.RUNNING:
        return False
    mapped = {"cancelled": FlowRun.Status.CANCELLED, "succeeded": FlowRun.Status.SUCCEEDED}.get(
        str(status), FlowRun.Status.ABORTED
    )
    FlowRun.objects.filter(pk=fr.pk).exclude(status__in=FlowRun.FINAL).update(
        status=mapped, finished_at=timezone.now(), error=f"its run is {status}"
    )
    fr.refresh_from_db()
    return True


def _loop(fr: FlowRun, flow: FlowSpec, tracer: tracing.TracerDB, drive: bool) -> str:
    while True:
        if fr.status in FlowRun.FINAL:
            return fr.status
        if _run_gone(fr):
            return fr.status
        if fr.status == FlowRun.Status.WAITING:
            if not _wait_for_child(fr, drive):
                return fr.status
            _take_child(fr, flow, tracer)
            continue
        if fr.position == END:
            _finish(fr, tracer, FlowRun.Status.SUCCEEDED)
            return fr.status
        stop = stops.covering(fr.run)
        if stop is not None:
            _finish(
                fr,
                tracer,
                FlowRun.Status.ABORTED,
                f"emergency stop {stop.pk} engaged before step {fr.position}",
            )
            return fr.status
        if queue.covered_by_pause(fr.run):
            if not drive:
                from . import tasks

                tasks.resume_flow.apply_async((fr.pk,), countdown=PAUSE_RECHECK_SECONDS)
                return fr.status
            time.sleep(PAUSE_RECHECK_SECONDS / 2)
            continue
        _run_step(fr, flow, flow.step(fr.position), tracer)


def _env(fr: FlowRun, flow: FlowSpec, step: StepSpec) -> steps.Env:
    policy = flow.policy_of(step, fr.preset)
    return steps.Env(
        step=step,
        args=context.render(step.with_, fr.context),
        ctx=fr.context,
        timeout=policy.timeout,
        write=fr.write,
        traceparent=tracing.traceparent(fr.trace_id, fr.step_span_id or fr.root_span_id),
        flow_name=fr.flow_name,
        flow_run_id=fr.pk,
    )


def _run_step(fr: FlowRun, flow: FlowSpec, step: StepSpec, tracer: tracing.TracerDB) -> None:
    if fr.step_attempt == 0:
        visits = dict(fr.visits or {})
        visits[step.id] = visits.get(step.id, 0) + 1
        fr.visits = visits
        fr.step_started_ns, fr.step_span_id = now_ns(), tracing.new_span_id()
        if visits[step.id] > spec.MAX_VISITS:
            _finish(
                fr,
                tracer,
                FlowRun.Status.FAILED,
                f"step {step.id} entered {spec.MAX_VISITS} times: a loop with no bound",
            )
            return
    fr.step_attempt += 1
    fr.save(update_fields=["visits", "step_started_ns", "step_span_id", "step_attempt"])
    kind = steps.TYPES[step.type]
    started = time.monotonic()
    try:
        env = _env(fr, flow, step)
        result = steps.router_run(env, fr.visits) if step.type == "router" else kind.run(env)
        took = time.monotonic() - started
        if env.timeout and took > env.timeout and isinstance(result, steps.Done):
            raise steps.StepError(f"took {took:.1f} s, over its {env.timeout:g} s timeout")
    except (steps.StepError, context.ReferenceError_) as exc:
        _failed(fr, flow, step, tracer, str(exc))
        return
    except Exception as exc:  # a step type's bug: the step fails, the flow's policy decides
        log.exception("flow run %s step %s raised", fr.pk, step.id)
        _failed(fr, flow, step, tracer, f"{type(exc).__name__}: {exc}")
        return
    if isinstance(result, steps.Call):
        try:
            child = queue.enqueue(
                kind=result.kind,
                params=result.params,
                prompt=result.prompt,
                input=result.input,
                priority=fr.run.priority,
                timeout_seconds=max(1, result.timeout),
                max_attempts=1,
                trigger=Run.Trigger.SYSTEM,
                triggered_by=f"flow run {fr.run_id} step {step.id}",
            )
        except ValidationError as exc:
            _failed(fr, flow, step, tracer, "; ".join(exc.messages))
            return
        fr.waiting_run, fr.status = child, FlowRun.Status.WAITING
        fr.save(update_fields=["waiting_run", "status"])
        return
    _done(fr, flow, step, tracer, result)


def _wait_for_child(fr: FlowRun, drive: bool) -> bool:
    """True once the run the step waits for is final; in drive mode start it here and wait."""
    child = Run.objects.filter(pk=fr.waiting_run_id).first() if fr.waiting_run_id else None
    if child is None or child.status in Run.FINAL:
        return True
    if not drive:
        return False
    worker = f"run_flow:{workers.this_worker()}"
    deadline = time.monotonic() + child.timeout_seconds + 60
    while time.monotonic() < deadline:
        if child.status == Run.Status.QUEUED:
            queue.start_next(worker, scope=Q(pk=child.pk))
        child.refresh_from_db()
        if child.status in Run.FINAL:
            return True
        if _run_gone(fr):
            return False
        time.sleep(POLL_SECONDS)
    return True  # _take_child reports the run that did not finish


def _take_child(fr: FlowRun, flow: FlowSpec, tracer: tracing.TracerDB) -> None:
    step = flow.step(fr.position)
    child = Run.objects.filter(pk=fr.waiting_run_id).first() if fr.waiting_run_id else None
    kind = steps.TYPES[step.type]
    if child is None:
        _failed(fr, flow, step, tracer, "the run this step waited for is gone")
        return
    if child.status not in Run.FINAL:
        _failed(fr, flow, step, tracer, f"run {child.pk} is still {child.status} past its timeout")
        return
    env = _env(fr, flow, step)
    try:
        assert kind.finish is not None
        done = kind.finish(env, child)
    except (steps.StepError, context.ReferenceError_) as exc:
        _child_span(fr, step, tracer, child, None, str(exc))
        _failed(fr, flow, step, tracer, str(exc))
        return
    _child_span(fr, step, tracer, child, done, "")
    _done(fr, flow, step, tracer, done)


# --- outcomes -------------------------------------------------------------------------------------


def _record(
    fr: FlowRun,
    tracer: tracing.TracerDB,
    span: SpanData,
    *,
    child_run: Run | None = None,
    events: list[EventData] | None = None,
) -> None:
    Span.objects.create(
        run_id=fr.run_id,
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id or "",
        name=span.name[:200],
        kind=span.kind,
        status=span.status,
        status_message=span.status_message,
        start_ns=span.start_ns,
        end_ns=span.end_ns,
        attributes=span.attributes,
        child_run=child_run,
        events=[{"name": e.name, "time_ns": e.time_ns, "attributes": e.attributes} for e in events or []],
    )
    tracer.record_span(span)
    for event in events or []:
        tracer.record_event(event)


def _step_span(
    fr: FlowRun, step: StepSpec, status: str, message: str, attributes: dict[str, Any]
) -> SpanData:
    return SpanData(
        trace_id=fr.trace_id,
        span_id=fr.step_span_id or tracing.new_span_id(),
        parent_span_id=fr.root_span_id,
        name=f"step {step.id}",
        kind="step",
        start_ns=fr.step_started_ns or now_ns(),
        end_ns=now_ns(),
        status=status,
        status_message=message,
        attributes={"flow.step.type": step.type, "flow.step.attempts": fr.step_attempt, **attributes},
    )


def _child_span(
    fr: FlowRun, step: StepSpec, tracer: tracing.TracerDB, child: Run, done: steps.Done | None, error: str
) -> None:
    start = child.started_at or child.queued_at
    end = child.finished_at or timezone.now()
    attrs = {"agentflow.run_id": child.pk, "agentflow.run.status": child.status, "agentflow.kind": child.kind}
    if done is not None and done.child_span:
        attrs.update(done.child_span.get("attributes") or {})
    name = (
        f"agent {child.params.get('agent', '')}"
        if child.kind == "agent.prompt"
        else f"{child.kind} {child.params.get('entry', '')}"
    )
    span = SpanData(
        trace_id=fr.trace_id,
        span_id=tracing.new_span_id(),
        parent_span_id=fr.step_span_id,
        name=name.strip(),
        kind="agent" if child.kind == "agent.prompt" else "command",
        start_ns=int(start.timestamp() * 1e9),
        end_ns=int(end.timestamp() * 1e9),
        status="error" if error else "ok",
        status_message=error,
        attributes=attrs,
    )
    _record(fr, tracer, span, child_run=child)


def _apply(fr: FlowRun, step: StepSpec, done: steps.Done) -> None:
    ctx = fr.context
    if step.output and done.value is not None:
        context.put(ctx, step.output, done.value)
    if step.metadata and done.metadata is not None:
        context.put(ctx, step.metadata, done.metadata)
    for path, value in done.writes.items():
        context.put(ctx, path, value)
    for path, value in done.appends.items():
        context.append(ctx, path, value)


def _done(fr: FlowRun, flow: FlowSpec, step: StepSpec, tracer: tracing.TracerDB, done: steps.Done) -> None:
    _apply(fr, step, done)
    events = [EventData(fr.trace_id, fr.step_span_id, name, now_ns(), attrs) for name, attrs in done.events]
    _record(fr, tracer, _step_span(fr, step, "ok", "", done.attributes), events=events)
    goto = done.goto if done.goto and done.goto != "next" else ""
    _next(fr, goto or flow.following(step))


def _next(fr: FlowRun, position: str) -> None:
    fr.position, fr.step_attempt, fr.waiting_run, fr.status = position, 0, None, FlowRun.Status.RUNNING
    fr.steps_done += 1
    fr.save(update_fields=["context", "position", "step_attempt", "waiting_run", "status", "steps_done"])


def _failed(fr: FlowRun, flow: FlowSpec, step: StepSpec, tracer: tracing.TracerDB, message: str) -> None:
    policy = flow.policy_of(step, fr.preset)
    log.info("flow run %s step %s attempt %s failed: %s", fr.pk, step.id, fr.step_attempt, message)
    if fr.step_attempt < policy.max_attempts:
        tracer.record_event(
            EventData(
                fr.trace_id,
                fr.step_span_id,
                "step.retry",
                now_ns(),
                {"attempt": fr.step_attempt, "error": message},
            )
        )
        fr.waiting_run, fr.status = None, FlowRun.Status.RUNNING
        fr.save(update_fields=["waiting_run", "status"])
        if policy.delay:
            time.sleep(policy.delay)
        return
    _record(fr, tracer, _step_span(fr, step, "error", message, {}))
    error = {"step": step.id, "error": message}
    if policy.on_error == "goto":
        context.append(fr.context, "errors", error)
        _next(fr, policy.goto)
    elif policy.fail_fast or policy.on_error == "fail":
        _finish(fr, tracer, FlowRun.Status.FAILED, f"step {step.id}: {message}")
    else:
        context.append(fr.context, "errors", error)
        _next(fr, flow.following(step))


def _finish(fr: FlowRun, tracer: tracing.TracerDB, status: str, error: str = "") -> None:
    fr.status, fr.error, fr.finished_at, fr.waiting_run = status, error, timezone.now(), None
    fr.save(update_fields=["status", "error", "finished_at", "waiting_run", "context"])
    span = SpanData(
        trace_id=fr.trace_id,
        span_id=fr.root_span_id,
        name=f"flow {fr.flow_name}",
        kind="flow",
        start_ns=fr.started_ns or now_ns(),
        end_ns=now_ns(),
        status="ok" if status == "succeeded" else "error",
        status_message=error,
        attributes={
            "flow.name": fr.flow_name,
            "flow.preset": fr.preset,
            "flow.steps": fr.steps_done,
            "flow.status": status,
        },
    )
    _record(fr, tracer, span)
    log.info("flow run %s (%s) %s%s", fr.pk, fr.flow_name, status, f": {error}" if error else "")
