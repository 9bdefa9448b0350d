"""A flow file, parsed and validated before anything runs (flows/README.md, "A flow file")."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings

from . import context

END = "end"
STEP_TYPES = (
    "agent",
    "router",
    "workspace_inspector",
    "patch",
    "test_executor",
    "http_handoff",
    "faq",
    "set",
    "audit",
    "summary",
)
STEP_KEYS = {"id", "type", "with", "output", "metadata", "policy", "next", "description"}
FLOW_KEYS = {"name", "description", "preset", "context", "policy", "steps"}
POLICY_KEYS = {"retry", "timeout", "fail_fast", "on_error"}
ID = re.compile(r"[a-z0-9_]{1,60}")
HUMAN_STEP = "human_support"
MAX_VISITS = 25  # any step entered more often than this fails the flow (a loop with no bound)

PRESETS: dict[str, dict[str, Any]] = {
    "dev": {
        "fail_fast": False,
        "retry": {"max_attempts": 2, "delay": 0.2},
        "timeout": None,
        "on_error": "continue",
    },
    "staging": {
        "fail_fast": False,
        "retry": {"max_attempts": 3, "delay": 1.0},
        "timeout": 30,
        "on_error": f"goto {HUMAN_STEP}",
    },
    "prod": {
        "fail_fast": True,
        "retry": {"max_attempts": 1, "delay": 0.0},
        "timeout": 5,
        "on_error": f"goto {HUMAN_STEP}",
    },
}


class FlowError(ValueError):
    """A flow that cannot run, with every problem found (one per line)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class Policy:
    max_attempts: int = 1
    delay: float = 0.0
    timeout: float | None = None
    fail_fast: bool = False
    on_error: str = "continue"  # "continue" or "goto"
    goto: str = ""


@dataclass
class StepSpec:
    id: str
    type: str
    with_: dict[str, Any] = field(default_factory=dict)
    output: str = ""
    metadata: str = ""
    policy: dict[str, Any] = field(default_factory=dict)
    next: str = ""  # "" = the following step


@dataclass
class FlowSpec:
    name: str
    steps: list[StepSpec]
    description: str = ""
    preset: str = "dev"
    context: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)

    def step(self, step_id: str) -> StepSpec:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def has(self, step_id: str) -> bool:
        return any(s.id == step_id for s in self.steps)

    def following(self, step: StepSpec) -> str:
        """Where a step goes when it does not say: its ``next``, else the one listed after it."""
        if step.next:
            return step.next
        index = self.steps.index(step)
        return self.steps[index + 1].id if index + 1 < len(self.steps) else END

    def policy_of(self, step: StepSpec, preset: str | None = None) -> Policy:
        merged: dict[str, Any] = {}
        for layer in (PRESETS[preset or self.preset], self.policy, step.policy):
            for name, value in layer.items():
                if name == "retry" and isinstance(value, dict):
                    merged["retry"] = {**merged.get("retry", {}), **value}
                else:
                    merged[name] = value
        retry = merged.get("retry") or {}
        on_error = str(merged.get("on_error") or "continue")
        goto = on_error[5:].strip() if on_error.startswith("goto ") else ""
        if goto and not self.has(goto):  # a preset's human-support step the flow does not have
            goto = ""
        return Policy(
            max_attempts=max(1, int(retry.get("max_attempts", 1))),
            delay=max(0.0, float(retry.get("delay", 0.0))),
            timeout=float(merged["timeout"]) if merged.get("timeout") else None,
            fail_fast=bool(merged.get("fail_fast")),
            on_error="goto" if goto else ("continue" if on_error == "continue" else "fail"),
            goto=goto,
        )

    def edges(self, step: StepSpec) -> list[str]:
        targets = [self.following(step)]
        if step.type == "router":
            for route in step.with_.get("routes") or []:
                if isinstance(route, dict) and route.get("goto"):
                    targets.append(str(route["goto"]))
            for name in ("default", "exhausted"):
                if step.with_.get(name):
                    targets.append(str(step.with_[name]))
        on_error = str(step.policy.get("on_error") or self.policy.get("on_error") or "")
        if on_error.startswith("goto "):
            targets.append(on_error[5:].strip())
        return targets


def _check_policy(where: str, policy: Any, problems: list[str]) -> None:
    if not isinstance(policy, dict):
        problems.append(f"{where}: policy must be a mapping")
        return
    for name in sorted(set(policy) - POLICY_KEYS):
        problems.append(f"{where}: unknown policy key {name!r} (use {', '.join(sorted(POLICY_KEYS))})")
    retry = policy.get("retry")
    if retry is not None:
        if not isinstance(retry, dict) or set(retry) - {"max_attempts", "delay"}:
            problems.append(f"{where}: retry must be {{max_attempts, delay}}")
        else:
            attempts, delay = retry.get("max_attempts", 1), retry.get("delay", 0)
            if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 20:
                problems.append(f"{where}: retry.max_attempts must be a whole number from 1 to 20")
            if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= 3600:
                problems.append(f"{where}: retry.delay must be seconds from 0 to 3600")
    timeout = policy.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        problems.append(f"{where}: timeout must be a positive number of seconds")
    on_error = policy.get("on_error")
    if on_error is not None and not (
        on_error == "continue" or (isinstance(on_error, str) and on_error.startswith("goto "))
    ):
        problems.append(f"{where}: on_error must be 'continue' or 'goto <step>', not {on_error!r}")


def parse(source: str, *, origin: str = "flow") -> FlowSpec:
    """The flow in ``source`` (YAML text); :class:`FlowError` listing every problem."""
    try:
        data = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise FlowError([f"{origin}: not valid YAML ({exc})"]) from None
    if not isinstance(data, dict):
        raise FlowError([f"{origin}: a flow is a mapping with name and steps"])
    problems: list[str] = []
    for name in sorted(set(data) - FLOW_KEYS):
        problems.append(f"{origin}: unknown key {name!r} (use {', '.join(sorted(FLOW_KEYS))})")
    name = data.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", name):
        problems.append(f"{origin}: name must be a slug (letters, digits, _ and -)")
        name = "flow"
    preset = data.get("preset", "dev")
    if preset not in PRESETS:
        problems.append(f"{name}: unknown preset {preset!r} (one of {', '.join(PRESETS)})")
        preset = "dev"
    ctx = data.get("context") or {}
    if not isinstance(ctx, dict):
        problems.append(f"{name}: context must be a mapping")
        ctx = {}
    policy = data.get("policy") or {}
    _check_policy(name, policy, problems)
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise FlowError([*problems, f"{name}: steps must be a non-empty list"])
    steps: list[StepSpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_steps, 1):
        where = f"{name} step {index}"
        if not isinstance(raw, dict):
            problems.append(f"{where}: a step is a mapping with id and type")
            continue
        step_id = raw.get("id")
        if not isinstance(step_id, str) or not ID.fullmatch(step_id):
            problems.append(f"{where}: id must match [a-z0-9_]+")
            step_id = f"step{index}"
        where = f"{name} step {step_id!r}"
        if step_id in seen:
            problems.append(f"{where}: duplicate id")
        seen.add(step_id)
        for key_ in sorted(set(raw) - STEP_KEYS):
            problems.append(f"{where}: unknown key {key_!r} (use {', '.join(sorted(STEP_KEYS))})")
        kind = raw.get("type")
        if kind not in STEP_TYPES:
            problems.append(f"{where}: unknown type {kind!r} (one of {', '.join(STEP_TYPES)})")
        with_ = raw.get("with") or {}
        if not isinstance(with_, dict):
            problems.append(f"{where}: with must be a mapping")
            with_ = {}
        for text in _strings(with_):
            problems += [f"{where}: {p}" for p in context.check_template(text)]
        for key_ in ("output", "metadata"):
            value = raw.get(key_) or ""
            if value and (not isinstance(value, str) or context.check_path(value)):
                problems.append(f"{where}: {key_} must be a ctx path like support.answer")
        step_policy = raw.get("policy") or {}
        _check_policy(where, step_policy, problems)
        steps.append(
            StepSpec(
                id=step_id,
                type=str(kind),
                with_=with_,
                output=str(raw.get("output") or ""),
                metadata=str(raw.get("metadata") or ""),
                policy=step_policy if isinstance(step_policy, dict) else {},
                next=str(raw.get("next") or ""),
            )
        )
    flow = FlowSpec(
        name=name,
        steps=steps,
        description=str(data.get("description") or ""),
        preset=preset,
        context=ctx,
        policy=policy if isinstance(policy, dict) else {},
    )
    if not problems:
        problems += _check_graph(flow)
    if not problems:
        from . import steps as step_types  # the step types check their own inputs

        for step in flow.steps:
            problems += [f"{name} step {step.id!r}: {p}" for p in step_types.check(step)]
    if problems:
        raise FlowError(problems)
    return flow


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _check_graph(flow: FlowSpec) -> list[str]:
    problems = []
    ids = {s.id for s in flow.steps}
    for step in flow.steps:
        for target in flow.edges(step):
            if target != END and target not in ids:
                if target == HUMAN_STEP and target not in ids:
                    continue
                problems.append(f"{flow.name} step {step.id!r}: goes to {target!r}, which is not a step")
    if problems:
        return problems
    # Every step reachable from the first must be able to reach the end.
    graph = {s.id: [t for t in flow.edges(s) if t == END or t in ids] for s in flow.steps}
    reachable, todo = set(), [flow.steps[0].id]
    while todo:
        node = todo.pop()
        if node in reachable or node == END:
            continue
        reachable.add(node)
        todo += graph[node]
    exits = {END}
    changed = True
    while changed:
        changed = False
        for node, targets in graph.items():
            if node not in exits and any(t in exits for t in targets):
                exits.add(node)
                changed = True
    stuck = sorted(reachable - exits)
    if stuck:
        problems.append(
            f"{flow.name}: steps {', '.join(stuck)} loop with no way out (add a router exit or next: end)"
        )
    return problems


def load(ref: str) -> tuple[FlowSpec, str, str]:
    """A flow by stored name or by file path (under the project or the data directory):
    ``(spec, source, path)``."""
    from .models import Flow

    stored = Flow.objects.filter(name=ref).first() if re.fullmatch(r"[A-Za-z0-9_-]+", ref) else None
    if stored is not None:
        return parse(stored.source, origin=stored.name), stored.source, stored.path
    path = resolve_path(ref)
    try:
        source = path.read_text()
    except OSError as exc:
        raise FlowError([f"cannot read flow {ref!r}: {exc.strerror or exc}"]) from None
    return parse(source, origin=str(ref)), source, str(path)


def roots() -> list[Path]:
    return [Path(r).resolve() for r in settings.AGENTFLOW_FLOWS_ROOTS]


def resolve_path(ref: str) -> Path:
    """``ref`` as a file under one of AGENTFLOW_FLOWS_ROOTS (relative paths: the project's)."""
    base = Path(settings.BASE_DIR)
    path = (Path(ref) if Path(ref).is_absolute() else base / ref).resolve()
    if not any(path == root or root in path.parents for root in roots()):
        raise FlowError([f"{ref!r} is outside the flow roots ({', '.join(map(str, roots()))})"])
    return path
