"""What flows registers: the ``flow`` job kind, and the resume of a flow whose step's run ended."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from scheduler import actions, errors, signals
from scheduler.models import Attempt, Run

from . import engine, spec, tracing
from .models import FlowRun

log = logging.getLogger("agentflow.flows")

FLOW = "flow"
PARAMS = ("flow", "preset", "tracer", "tracer_args", "write")


def validate(params: Mapping[str, Any]) -> dict[str, Any]:
    """``{flow: stored name or path, preset?, tracer?, tracer_args?, write?}``; the flow must
    load and validate now (its problems are the error)."""
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise ValidationError(
            f"flow: unknown parameter(s) {', '.join(unknown)} (use {', '.join(PARAMS)})",
            code="invalid_params",
        )
    ref = params.get("flow")
    if not isinstance(ref, str) or not ref.strip():
        raise ValidationError(
            "flow: flow is required (a stored flow's name or a flow file)", code="invalid_params"
        )
    try:
        flow, _source, _path = spec.load(ref.strip())
    except spec.FlowError as exc:
        raise ValidationError(f"flow: {exc}", code="invalid_params") from None
    cleaned: dict[str, Any] = {"flow": ref.strip()}
    preset = params.get("preset") or flow.preset
    if preset not in spec.PRESETS:
        raise ValidationError(
            f"flow: unknown preset {preset!r} (one of {', '.join(spec.PRESETS)})", code="invalid_params"
        )
    cleaned["preset"] = preset
    tracer = params.get("tracer") or "none"
    args = params.get("tracer_args") or {}
    if not isinstance(args, Mapping):
        raise ValidationError("flow: tracer_args must be an object", code="invalid_params")
    try:
        tracing.check(tracer, {str(k): str(v) for k, v in args.items()})
    except ValueError as exc:
        raise ValidationError(f"flow: {exc}", code="invalid_params") from None
    cleaned["tracer"] = tracer
    if args:
        cleaned["tracer_args"] = {str(k): str(v) for k, v in args.items()}
    if params.get("write"):
        cleaned["write"] = True
    return cleaned


def outcome(fr: FlowRun) -> actions.Finished:
    report = ""
    summary = fr.context.get("summary") if isinstance(fr.context, dict) else None
    if isinstance(summary, dict):
        report = str(summary.get("report") or "")
    report = report or f"flow {fr.flow_name}: {fr.steps_done} step(s), {fr.status}"
    if fr.status == FlowRun.Status.SUCCEEDED:
        return actions.Finished("succeeded", result=report)
    if fr.status in (FlowRun.Status.ABORTED, FlowRun.Status.CANCELLED):
        return actions.Finished("aborted", errors.ABORTED, fr.error, result=report)
    return actions.Finished("failed", errors.INVALID_REQUEST, fr.error, result=report)


def start(ctx: actions.AttemptContext) -> actions.Finished | actions.Started:
    fr = FlowRun.objects.filter(run=ctx.run).first()
    if fr is None:
        try:
            fr = engine.create(ctx.run)
        except spec.FlowError as exc:
            return actions.Finished("failed", errors.INVALID_REQUEST, str(exc))
    else:
        engine.reopen(fr)  # a retry: resume at the step it ended in
    status = engine.advance(fr.pk)
    if status in FlowRun.FINAL:
        fr.refresh_from_db()
        return outcome(fr)
    return actions.Started(external_id=f"flow-run-{fr.pk}")


def complete(fr: FlowRun) -> None:
    """The flow ended outside ``start`` (a resume): settle the flow run's running attempt."""
    attempt = (
        Attempt.objects.filter(run_id=fr.run_id, status=Attempt.Status.RUNNING).order_by("-number").first()
    )
    if attempt is not None:
        from scheduler import queue

        queue.complete_attempt(attempt.pk, outcome(fr))


def cancel(ctx: actions.AttemptContext) -> None:
    """The flow run's run is cancelled or aborted: so is the run its step waits for."""
    from scheduler import audit, controls

    fr = FlowRun.objects.filter(run=ctx.run).first()
    if fr is None:
        return
    child = fr.waiting_run
    FlowRun.objects.filter(pk=fr.pk).exclude(status__in=FlowRun.FINAL).update(status=FlowRun.Status.CANCELLED)
    if child is not None and child.status not in Run.FINAL:
        try:
            controls.cancel_run(
                audit.Actor.system(f"flow run {fr.pk}"), child, reason="its flow was cancelled"
            )
        except Exception:
            log.info("flow run %s: child run %s not cancelled", fr.pk, child.pk, exc_info=True)


def reconcile(ctx: actions.AttemptContext) -> actions.Finished | None:
    """Asked about a flow run past its timeout: settled if it ended, resumed if its step's run
    ended (a lost resume), failed with the step it was in otherwise."""
    fr = FlowRun.objects.filter(run=ctx.run).first()
    if fr is None:
        return actions.Finished("failed", errors.SYSTEM, "no flow state for this run")
    if fr.status in FlowRun.FINAL:
        return outcome(fr)
    return actions.Finished("failed", errors.TIMEOUT, f"the flow ran past its timeout in step {fr.position}")


def on_run_finished(sender: Any, run: Run, **kw: Any) -> None:
    """A step's run ended: resume the flow waiting for it (in a worker)."""
    if not run.triggered_by.startswith("flow run "):
        return
    from . import tasks

    for pk in FlowRun.objects.waiting_on(run.pk).values_list("pk", flat=True):
        transaction.on_commit(partial(tasks.resume_flow.delay, pk))


def register() -> None:
    actions.register_action(
        actions.ActionSpec(
            FLOW,
            "Flow",
            start=start,
            validate=validate,
            cancel=cancel,
            reconcile=reconcile,
            description=(
                "Runs a multi-step flow (params: flow, preset, tracer, tracer_args, write; "
                "input: the context)."
            ),
        )
    )
    signals.run_finished.connect(on_run_finished, dispatch_uid="flows.resume")
