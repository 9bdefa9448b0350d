"""What the executor registers: the ``command`` job kind, its stop hook and its Automation status."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from scheduler import actions, automation, errors, stops

from . import runner
from .entries import Refused, entries
from .models import DisabledEntry

COMMAND = "command"


def _validate(params: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - {"entry", "args", "files", "report"})
    if unknown:
        raise ValidationError(f"command: unknown parameter(s) {', '.join(unknown)}", code="invalid_params")
    name = params.get("entry")
    known = entries()
    if not isinstance(name, str) or name not in known:
        raise ValidationError(
            f"command: entry must be one of {', '.join(sorted(known))}, not {name!r}", code="invalid_params"
        )
    args = params.get("args", [])
    try:
        known[name].build(args)
    except Refused as exc:
        raise ValidationError(f"command: {exc}", code="invalid_params") from None
    cleaned: dict[str, Any] = {"entry": name, "args": list(args)}
    if params.get("files"):
        try:
            cleaned["files"] = runner.check_files(params["files"])
        except Refused as exc:
            raise ValidationError(f"command: {exc}", code="invalid_params") from None
    if params.get("report"):
        cleaned["report"] = True
    return cleaned


def _start(ctx: actions.AttemptContext) -> actions.Finished:
    try:
        result = runner.run(
            ctx.params["entry"],
            list(ctx.params.get("args", [])),
            asked_by=f"run {ctx.run.pk} attempt {ctx.attempt_id}",
            run_id=ctx.run.pk,
            files=ctx.params.get("files") or None,
        )
    except Refused as exc:
        return actions.Finished("failed", errors.INVALID_REQUEST, str(exc))
    if ctx.params.get("report") and not result.timed_out:
        # The exit code is data (a failing test run is a result for whoever asked, e.g. a flow).
        report = {"returncode": result.exit_code, "stdout": result.stdout, "stderr": result.stderr,
                  "killed": result.killed}  # fmt: skip
        return actions.Finished("succeeded", result=json.dumps(report))
    if result.timed_out:
        return actions.Finished("failed", errors.TIMEOUT, "timed out", result=result.stdout)
    if result.exit_code:
        return actions.Finished(
            "failed",
            errors.INVALID_REQUEST,
            f"exit {result.exit_code}: {result.stderr[-2000:]}",
            result=result.stdout,
        )
    return actions.Finished("succeeded", result=result.stdout)


def _engage(stop: Any, in_flight: Sequence[Any]) -> stops.HookResult:
    killed = runner.kill_live(f"emergency stop {stop.pk}")
    return stops.HookResult(notes=[f"executor: killed {killed} live process group(s)"])


def _release(stop: Any, state: Mapping[str, Any], still: Sequence[Any]) -> stops.HookResult:
    return stops.HookResult()


def status_rows() -> list[dict[str, str]]:
    enabled = settings.AGENTFLOW_EXECUTOR_ENABLED
    sandbox = settings.AGENTFLOW_EXECUTOR_SANDBOX
    if sandbox == "none":
        warning = "WARNING: AGENTFLOW_EXECUTOR_SANDBOX=none, commands run unsandboxed"
    else:
        problem = runner.sandbox_problem()
        warning = f"WARNING: {problem}; the executor refuses to run" if problem else "bubblewrap works"
    disabled = set(DisabledEntry.objects.values_list("name", flat=True))
    return [
        {
            "entry": name,
            "state": "disabled by the admin" if name in disabled else ("on" if enabled else "executor off"),
            "network": "yes" if entry.network else "no",
            "sandbox": warning,
        }
        for name, entry in sorted(entries().items())
    ]


def register() -> None:
    actions.register_action(
        actions.ActionSpec(
            COMMAND,
            "Command",
            start=_start,
            validate=_validate,
            description="Runs one allowlisted command in the sandbox (params: entry, args).",
        )
    )
    stops.register_hook(stops.StopHook("executor", _engage, _release))
    automation.register_status(
        automation.StatusSection(
            key="executor",
            title="Command executor",
            order=30,
            columns=(("entry", "Entry"), ("state", "State"), ("network", "Network"), ("sandbox", "Sandbox")),
            rows=status_rows,
            empty="No allowlisted command.",
        )
    )
