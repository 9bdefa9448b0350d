"""The job section of automation as code: ``[[automation.schedule.jobs]]`` entries ↔ ``Job`` rows.

It lives in fleet because a job's ``agent`` names a gateway's agent: ``"main"`` when one gateway
is registered, ``"gateway/agent"`` when several are (the gateway by name). Such a job is of kind
``agent.prompt`` with params ``{"gateway": <id>, "agent": <id>}``, validated by the action's own
``validate``. A job of another kind is written ``kind = "noop"`` with ``params = {...}``.

Fields owned here: ``name``, ``agent``, ``prompt``, ``kind``, ``params``, ``priority``,
``enabled``, ``timeout`` (seconds), ``max_attempts``, ``concurrency``, ``tags``. The schedule
fields (``cron``, ``every``, ``at``, ``timezone``…) of the same entries belong to the schedule
section. System jobs (the batches) are neither exported nor removed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.template import TemplateSyntaxError
from django.utils.text import slugify

from scheduler import actions
from scheduler.automation import Change, ConfigSection, PlanContext, register_config
from scheduler.models import Job, Priority
from scheduler.queue import render_prompt

from .agent_runs import KIND as AGENT_PROMPT
from .models import Gateway

KEY = "schedule.jobs"
FIELDS = frozenset(
    {
        "agent",
        "prompt",
        "kind",
        "params",
        "priority",
        "enabled",
        "timeout",
        "max_attempts",
        "concurrency",
        "tags",
    }
)
DEFAULTS: dict[str, Any] = {
    "prompt": "",
    "priority": Priority.NORMAL,
    "enabled": True,
    "timeout": 600,
    "max_attempts": 3,
    "concurrency": None,
    "tags": [],
}


def _gateway_names() -> dict[int, str]:
    return dict(Gateway.objects.order_by("name").values_list("pk", "name"))


def _agent_of(params: Mapping[str, Any], names: Mapping[int, str]) -> str:
    value = params.get("gateway")
    gateway = names.get(value, str(value)) if isinstance(value, int) else str(value)
    agent = str(params.get("agent") or "")
    return agent if len(names) == 1 else f"{gateway}/{agent}"


def _entry(job: Job, names: Mapping[int, str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": job.name}
    params = dict(job.params or {})
    if job.kind == AGENT_PROMPT:
        entry["agent"] = _agent_of(params, names)
        extra = {k: v for k, v in params.items() if k not in ("gateway", "agent", "provider")}
        if extra:
            entry["params"] = extra
    else:
        entry["kind"] = job.kind
        if params:
            entry["params"] = params
    entry["prompt"] = job.prompt_template
    entry["priority"] = job.priority
    entry["enabled"] = job.enabled
    entry["timeout"] = job.timeout_seconds
    entry["max_attempts"] = job.max_attempts
    if job.concurrency_limit is not None:
        entry["concurrency"] = job.concurrency_limit
    if job.tags:
        entry["tags"] = list(job.tags)
    return entry


def export() -> list[dict[str, Any]]:
    names = _gateway_names()
    return [_entry(job, names) for job in Job.objects.filter(system=False).order_by("name")]


def _whole(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _desired(entry: Mapping[str, Any], index: int, ctx: PlanContext, names: Mapping[int, str]) -> dict | None:
    """The job row's fields the entry asks for, or None (its errors reported on ``ctx``)."""
    before = len(ctx.errors)
    name = str(entry.get("name", ""))

    def error(field: str, message: str) -> None:
        ctx.error(KEY, index, field, message)

    if slugify(name) != name or len(name) > 100:
        error("name", f"{name!r} is not a job name (letters, digits, - and _; at most 100 characters)")
    params = entry.get("params", {})
    if not isinstance(params, dict):
        error("params", "must be a table")
        params = {}
    kind = entry.get("kind")
    agent = entry.get("agent")
    if agent is not None and kind not in (None, AGENT_PROMPT):
        error("kind", f"a job with an agent is of kind {AGENT_PROMPT}; leave kind out")
    if agent is None and kind is None:
        error(
            "agent",
            'required (an agent id, "gateway/agent" when several gateways are registered), '
            "or a kind with its params",
        )
    cleaned: dict[str, Any] = {}
    if agent is not None:
        kind = AGENT_PROMPT
        if not isinstance(agent, str) or not agent.strip():
            error("agent", "must be an agent id")
        else:
            gateway, _, agent_id = agent.strip().rpartition("/")
            if not gateway:
                if len(names) == 1:
                    gateway = next(iter(names.values()))
                elif not names:
                    error("agent", "no gateway is registered")
                else:
                    error(
                        "agent",
                        f"several gateways are registered ({', '.join(names.values())}): "
                        f'write "gateway/{agent_id}"',
                    )
            if gateway:
                try:
                    cleaned = actions.validate_params(kind, {**params, "gateway": gateway, "agent": agent_id})
                except ValidationError as exc:
                    error("agent", "; ".join(exc.messages))
    elif isinstance(kind, str):
        try:
            cleaned = actions.validate_params(kind, params)
        except ValidationError as exc:
            error("kind" if exc.code == "unknown_kind" else "params", "; ".join(exc.messages))
    elif kind is not None:
        error("kind", "must be a string (a registered action)")
    values = {field: entry.get(field, default) for field, default in DEFAULTS.items()}
    if not isinstance(values["prompt"], str):
        error("prompt", "must be a string")
    else:
        try:
            render_prompt(values["prompt"], {})
        except (ValidationError, TemplateSyntaxError) as exc:
            error("prompt", "; ".join(getattr(exc, "messages", [str(exc)])))
    if values["priority"] not in Priority.values:
        error("priority", f"{values['priority']!r} is not one of {', '.join(Priority.values)}")
    if not isinstance(values["enabled"], bool):
        error("enabled", "must be true or false")
    if not _whole(values["timeout"], 1):
        error("timeout", "must be a whole number of seconds, at least 1")
    if not _whole(values["max_attempts"], 1) or (
        _whole(values["max_attempts"], 1) and values["max_attempts"] > 100
    ):
        error("max_attempts", "must be a whole number from 1 to 100")
    if values["concurrency"] is not None and not _whole(values["concurrency"], 1):
        error("concurrency", "must be a whole number, at least 1")
    tags = values["tags"]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        error("tags", "must be a list of strings")
    if name in ctx.job_names and Job.objects.filter(name=name, system=True).exists():
        error("name", f"{name!r} is a system job (a batch): it is not configured here")
    if len(ctx.errors) > before:
        return None
    return {
        "kind": kind,
        "params": cleaned,
        "prompt_template": values["prompt"],
        "priority": values["priority"],
        "enabled": values["enabled"],
        "timeout_seconds": values["timeout"],
        "max_attempts": values["max_attempts"],
        "concurrency_limit": values["concurrency"],
        "tags": list(tags),
    }


SHOWN = {
    "prompt_template": "prompt",
    "timeout_seconds": "timeout",
    "concurrency_limit": "concurrency",
}


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return text if len(text) <= 60 else text[:57] + '…"'


def _diff(job: Job, desired: Mapping[str, Any]) -> list[str]:
    return [
        f"{SHOWN.get(field, field)} {_short(getattr(job, field))} → {_short(value)}"
        for field, value in desired.items()
        if getattr(job, field) != value
    ]


def _plan_all(entries: Sequence[Mapping[str, Any]], ctx: PlanContext) -> tuple[list[Change], dict[str, dict]]:
    names = _gateway_names()
    existing = {job.name: job for job in Job.objects.filter(system=False)}
    changes: list[Change] = []
    wanted: dict[str, dict] = {}
    for index, entry in enumerate(entries):
        desired = _desired(entry, index, ctx, names)
        if desired is None:
            continue
        name = str(entry["name"])
        wanted[name] = desired
        job = existing.get(name)
        if job is None:
            target = entry.get("agent") or desired["kind"]
            changes.append(Change("create", "job", name, f"{target}, {desired['priority']}"))
        else:
            diff = _diff(job, desired)
            if diff:
                changes.append(Change("change", "job", name, "; ".join(diff)))
    if ctx.prune:
        for name in sorted(set(existing) - set(wanted)):
            changes.append(Change("remove", "job", name, f"{existing[name].kind}, not in the file"))
    return changes, wanted


def plan(entries: Sequence[Mapping[str, Any]], ctx: PlanContext) -> list[Change]:
    return _plan_all(entries, ctx)[0]


def apply(entries: Sequence[Mapping[str, Any]], ctx: PlanContext) -> None:
    changes, wanted = _plan_all(entries, ctx)
    for change in changes:
        if change.action == "remove":
            Job.objects.filter(name=change.name, system=False).delete()
        else:
            Job.objects.update_or_create(name=change.name, defaults=wanted[change.name])


SECTION = ConfigSection(name="jobs", key=KEY, order=10, export=export, plan=plan, apply=apply, fields=FIELDS)


def register() -> None:
    register_config(SECTION)
