"""The step types (flows/README.md, "Step types").

A step's ``run(env)`` returns :class:`Done` (its result now) or :class:`Call` (a run of another
kind to enqueue: an agent prompt, a command); the engine enqueues it, waits without holding a
worker, and hands the finished run to the step's ``finish``. A failure raises :class:`StepError`
and the step's policy decides (retry, goto, continue, fail).
"""

from __future__ import annotations

import difflib
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings

from . import context

if TYPE_CHECKING:
    from scheduler.models import Run

    from .spec import StepSpec


class StepError(Exception):
    """The step failed (the message goes to the span, the run's error and ``ctx.errors``)."""


@dataclass
class Done:
    value: Any = None
    metadata: dict[str, Any] | None = None
    goto: str = ""  # a router's choice
    attributes: dict[str, Any] = field(default_factory=dict)  # on the step's span
    writes: dict[str, Any] = field(default_factory=dict)  # more ctx paths to set (summary, set)
    appends: dict[str, Any] = field(default_factory=dict)
    child_span: dict[str, Any] | None = None  # name, kind, attributes of the child run's span
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@dataclass
class Call:
    kind: str  # "agent.prompt", "command"
    params: dict[str, Any]
    prompt: str = ""
    input: Any = None
    timeout: int = 120
    span_name: str = ""
    span_kind: str = "agent"


@dataclass
class Env:
    step: StepSpec
    args: dict[str, Any]  # ``with``, rendered from the context
    ctx: dict[str, Any]
    timeout: float | None
    write: bool = False
    traceparent: str = ""
    flow_name: str = ""
    flow_run_id: int | None = None


# --- agent ----------------------------------------------------------------------------------------


def _history_text(history: Any, limit: int) -> str:
    if not isinstance(history, list) or not history:
        return ""
    lines = []
    for item in history[-limit:] if limit > 0 else []:
        if isinstance(item, Mapping):
            lines.append(f"{item.get('role', 'user')}: {context.as_text(item.get('text', ''))}")
        else:
            lines.append(context.as_text(item))
    return "Conversation so far:\n" + "\n".join(lines) if lines else ""


def agent_run(env: Env) -> Call:
    prompt = context.as_text(env.args.get("prompt", "")).strip()
    if not prompt:
        raise StepError("agent: the prompt is empty")
    limit = int(env.args.get("history_limit", 6) or 0)
    history = _history_text(env.args.get("history"), limit)
    if history:
        prompt = f"{prompt}\n\n{history}"
    params: dict[str, Any] = {"agent": str(env.args.get("agent") or "main")}
    gateway = env.args.get("gateway") or env.ctx.get("gateway")
    if gateway not in (None, ""):
        params["gateway"] = gateway
    for name in ("model", "provider"):
        if env.args.get(name):
            params[name] = str(env.args[name])
    if env.traceparent:
        params["traceparent"] = env.traceparent
    return Call(
        "agent.prompt",
        params,
        prompt=prompt,
        timeout=int(env.timeout or 120),
        span_name=f"agent {params['agent']}",
        span_kind="agent",
    )


def first_json(text: str) -> Any:
    """The first JSON object (or array) in ``text`` (a model's reply often wraps it in prose)."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[{\[]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        return value
    raise StepError(f"agent: the reply has no JSON object ({text[:120]!r})")


# The gateway listener settles an agent run from its terminal event, then reads its usage from
# chat.history in the background (fleet/agent_runs.py on_terminal_event): wait this long for it,
# or the step's metadata and span would have no tokens.
USAGE_WAIT_SECONDS = 2.0


def _usage_of(run: Run) -> dict[str, Any]:
    deadline = time.monotonic() + USAGE_WAIT_SECONDS
    while not run.usage and time.monotonic() < deadline:
        time.sleep(0.05)
        run.refresh_from_db(fields=["usage"])
    return dict(run.usage or {})


def agent_finish(env: Env, run: Run) -> Done:
    if run.status != "succeeded":
        raise StepError(f"agent run {run.pk} {run.status}: {run.error or 'no reply'}")
    text = run.result
    value = first_json(text) if env.args.get("parse") == "json" else text
    usage = _usage_of(run)
    attempt = run.attempt_set.order_by("-number").first()
    model = usage.get("model") or run.params.get("model") or ""
    metadata = {
        "run_id": run.pk,
        "session_key": attempt.session_key if attempt else "",
        "usage": usage,
        "model": model,
        "reasoning": usage.get("reasoning", ""),
    }
    tokens_in = usage.get("input") or usage.get("input_tokens") or usage.get("prompt_tokens")
    tokens_out = usage.get("output") or usage.get("output_tokens") or usage.get("completion_tokens")
    attrs: dict[str, Any] = {
        "gen_ai.agent.name": run.params.get("agent", ""),
        "gen_ai.operation.name": "chat",
    }
    if model:
        attrs["gen_ai.request.model"] = attrs["gen_ai.response.model"] = model
    if tokens_in is not None:
        attrs["gen_ai.usage.input_tokens"] = tokens_in
    if tokens_out is not None:
        attrs["gen_ai.usage.output_tokens"] = tokens_out
    if usage.get("cost") is not None:
        attrs["agentflow.cost"] = usage.get("cost")
    if metadata["session_key"]:
        attrs["agentflow.session_key"] = metadata["session_key"]
    return Done(value, metadata=metadata, child_span={"attributes": attrs})


# --- router ---------------------------------------------------------------------------------------

CONDITIONS = ("equals", "in", "gte", "gt", "lte", "lt", "contains", "truthy")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def matches(value: Any, when: Mapping[str, Any]) -> bool:
    for name, expected in when.items():
        if name == "equals":
            ok = value == expected or (
                isinstance(value, str) and str(expected).upper() == value.strip().upper()
            )
        elif name == "in":
            ok = value in (expected or [])
        elif name == "contains":
            ok = isinstance(value, str | list) and expected in value
        elif name == "truthy":
            ok = bool(value) == bool(expected)
        else:
            a, b = _number(value), _number(expected)
            ok = (
                a is not None
                and b is not None
                and {"gte": a >= b, "gt": a > b, "lte": a <= b, "lt": a < b}[name]
            )
        if not ok:
            return False
    return True


def router_run(env: Env, visits: Mapping[str, int] | None = None) -> Done:
    value = env.args.get("value")
    goto = str(env.args.get("default") or "")
    for route in env.args.get("routes") or []:
        if matches(value, route.get("when") or {}):
            goto = str(route.get("goto") or "")
            break
    bound = env.args.get("max_visits")
    if goto and bound and visits is not None and visits.get(goto, 0) >= int(bound):
        exhausted = env.args.get("exhausted")
        if not exhausted:
            raise StepError(f"router: {goto} was entered {visits.get(goto)} times (max_visits {bound})")
        return Done({"value": value, "goto": str(exhausted), "exhausted": goto}, goto=str(exhausted))
    return Done({"value": value, "goto": goto or "next"}, goto=goto)


# --- workspace inspector --------------------------------------------------------------------------

SKIP_DIRS = {".git", "__pycache__", ".venv", "node_modules", ".pytest_cache", ".mypy_cache"}


def _workspace_root(value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise StepError("workspace_inspector: root is required")
    root = (Path(value) if Path(value).is_absolute() else Path(settings.BASE_DIR) / value).resolve()
    allowed = [Path(r).resolve() for r in settings.AGENTFLOW_FLOWS_ROOTS]
    if not any(root == a or a in root.parents for a in allowed):
        raise StepError(f"workspace_inspector: {value} is outside AGENTFLOW_FLOWS_ROOTS")
    if not root.is_dir():
        raise StepError(f"workspace_inspector: {value} is not a directory")
    return root


def inspector_run(env: Env) -> Done:
    root = _workspace_root(env.args.get("root"))
    extensions = {
        e if e.startswith(".") else f".{e}"
        for e in env.args.get("allowed_extensions") or [".py", ".txt", ".md"]
    }
    preview = int(env.args.get("preview_lines", 20))
    cap = int(env.args.get("max_bytes", 128 * 1024))
    structure, excluded, denied, files = [], [], [], {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if any(part in SKIP_DIRS for part in path.relative_to(root).parts) or not path.is_file():
            continue
        if path.suffix not in extensions:
            excluded.append({"path": relative, "reason": f"extension {path.suffix or '(none)'} not allowed"})
            continue
        try:
            size = path.stat().st_size
            if size > cap:
                excluded.append({"path": relative, "reason": f"{size} bytes, over the {cap}-byte cap"})
                continue
            raw = path.read_bytes()
        except PermissionError:
            denied.append(relative)
            continue
        if b"\0" in raw[:8192]:
            excluded.append({"path": relative, "reason": "binary"})
            continue
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            excluded.append({"path": relative, "reason": "binary (not UTF-8)"})
            continue
        lines = text.splitlines()
        structure.append(
            {
                "path": relative,
                "size": size,
                "lines": len(lines),
                "head": lines[:preview],
                "tail": lines[-preview:] if len(lines) > preview else [],
            }
        )
        files[relative] = text
    value = {
        "root": str(root),
        "structure": structure,
        "files": files,
        "structure_excluded": excluded,
        "permission_denied": denied,
    }
    return Done(value, attributes={"files": len(files), "excluded": len(excluded)})


# --- patch ----------------------------------------------------------------------------------------

_HUNK = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def _diff_path(line: str) -> str:
    path = line[4:].split("\t")[0].strip()
    return path[2:] if path.startswith(("a/", "b/")) else path


def parse_diff(text: str) -> list[tuple[str, str, list[tuple[int, list[str]]]]]:
    """``[(old path, new path, [(old start, hunk lines)])]`` of a unified diff (fences stripped)."""
    lines = [ln for ln in text.replace("\r\n", "\n").split("\n") if not ln.startswith("```")]
    patches: list[tuple[str, str, list[tuple[int, list[str]]]]] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            old, new = _diff_path(lines[i]), _diff_path(lines[i + 1])
            hunks: list[tuple[int, list[str]]] = []
            i += 2
            while i < len(lines) and lines[i].startswith("@@"):
                match = _HUNK.match(lines[i])
                if match is None:
                    raise StepError(f"patch: bad hunk header {lines[i]!r}")
                start, body = int(match.group(1)), []
                i += 1
                while (
                    i < len(lines)
                    and lines[i][:1] in (" ", "+", "-", "\\")
                    and not lines[i].startswith("--- ")
                ):
                    body.append(lines[i])
                    i += 1
                while i < len(lines) and lines[i] == "" and i + 1 < len(lines) and lines[i + 1][:1] == " ":
                    body.append(" ")  # an empty context line whose space was lost
                    i += 1
                hunks.append((start, body))
            patches.append((old, new, hunks))
        else:
            i += 1
    if not patches:
        raise StepError("patch: no unified diff found (--- / +++ / @@ lines)")
    return patches


def apply_hunks(original: str, hunks: list[tuple[int, list[str]]], path: str) -> str:
    lines = original.split("\n")
    offset = 0
    for start, body in hunks:
        old = [ln[1:] for ln in body if ln[:1] in (" ", "-")]
        new = [ln[1:] for ln in body if ln[:1] in (" ", "+")]
        at = max(0, start - 1 + offset)
        candidates = [at] + [at + d for r in range(1, 50) for d in (r, -r)]
        for pos in candidates:
            if 0 <= pos <= len(lines) - len(old) and lines[pos : pos + len(old)] == old:
                lines[pos : pos + len(old)] = new
                offset += len(new) - len(old)
                break
        else:
            raise StepError(f"patch: a hunk at line {start} of {path} does not apply (the file differs)")
    return "\n".join(lines)


def _safe(path: str, allowed: list[str]) -> str | None:
    parts = Path(path).parts
    if not path or path.startswith("/") or ".." in parts or "\\" in path:
        return f"patch: path {path!r} is refused (absolute or with ..)"
    if allowed and not any(path == a.rstrip("/") or path.startswith(a.rstrip("/") + "/") for a in allowed):
        return f"patch: path {path!r} is outside allowed_paths ({', '.join(allowed)})"
    return None


def patch_run(env: Env) -> Done:
    diff = context.as_text(env.args.get("diff"))
    files = env.args.get("files")
    if files is None:
        files = context.get(env.ctx, "workspace.files", {})
    if not isinstance(files, Mapping):
        raise StepError("patch: files must be a {path: text} map")
    allowed = [str(a) for a in env.args.get("allowed_paths") or []]
    results: dict[str, dict[str, str]] = {}
    for old, new, hunks in parse_diff(diff):
        path = new if new != "/dev/null" else old
        problem = _safe(path, allowed)
        if problem:
            raise StepError(problem)
        original = files.get(path, "") if old != "/dev/null" else ""
        if old != "/dev/null" and path not in files:
            raise StepError(f"patch: {path} is not in the workspace")
        results[path] = {"original": original, "patched": apply_hunks(original, hunks, path)}
    patched = {**files, **{p: r["patched"] for p, r in results.items()}}
    written: list[str] = []
    if env.write:
        root = _workspace_root(env.args.get("root") or context.get(env.ctx, "workspace.root", ""))
        for path, result in results.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(result["patched"])
            written.append(path)
    value = {"applied": sorted(results), "files": results, "written": written}
    target = "workspace.files" if env.args.get("files") is None else ""
    writes = {target: patched} if target else {}
    diffstat = sum(
        1
        for r in results.values()
        for ln in difflib.unified_diff(r["original"].splitlines(), r["patched"].splitlines(), lineterm="")
        if ln[:1] in "+-" and not ln.startswith(("+++", "---"))
    )
    return Done(value, writes=writes, attributes={"files": len(results), "changed_lines": diffstat})


# --- test executor --------------------------------------------------------------------------------


def tests_run(env: Env) -> Call:
    files = env.args.get("files")
    if files is None:
        files = context.get(env.ctx, "workspace.files", {})
    args = env.args.get("args") or []
    if not isinstance(args, list):
        raise StepError("test_executor: args must be a list")
    entry = str(env.args.get("entry") or "pytest")
    timeout = int(env.args.get("timeout") or env.timeout or 120)
    return Call(
        "command",
        {"entry": entry, "args": [str(a) for a in args], "files": dict(files), "report": True},
        timeout=timeout + 30,
        span_name=f"command {entry}",
        span_kind="command",
    )


def tests_finish(env: Env, run: Run) -> Done:
    if run.status != "succeeded":
        raise StepError(f"command run {run.pk} {run.status}: {run.error or 'no result'}")
    try:
        report = json.loads(run.result)
    except ValueError:
        raise StepError(f"command run {run.pk}: no report ({run.result[:120]!r})") from None
    report["passed"] = report.get("returncode") == 0
    return Done(report, child_span={"attributes": {"process.exit.code": report.get("returncode")}})


# --- HTTP handoff ---------------------------------------------------------------------------------


def handoff_run(env: Env) -> Done:
    url = env.args.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise StepError(f"http_handoff: url must be http(s), not {url!r}")
    retry = env.args.get("retry") or {}
    attempts = max(1, int(retry.get("max_attempts", 3)))
    delay = float(retry.get("delay", 0.5))
    body = json.dumps(env.args.get("payload"), ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "AgentFlow-flows"}
    headers.update({str(k): str(v) for k, v in (env.args.get("headers") or {}).items()})
    problem = ""
    events: list[tuple[str, dict[str, Any]]] = []
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=env.timeout or 10) as response:  # noqa: S310
                text = response.read(64 * 1024).decode(errors="replace")
                return Done(
                    {"status": response.status, "body": text, "attempts": attempt},
                    attributes={"http.response.status_code": response.status},
                    events=events,
                )
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            problem = str(getattr(exc, "reason", exc))
        events.append(("handoff.retry", {"attempt": attempt, "error": problem}))
        if attempt < attempts:
            time.sleep(delay * attempt)
    raise StepError(f"http_handoff: {url} failed {attempts} time(s), last: {problem}")


# --- FAQ ------------------------------------------------------------------------------------------

_STOP = {
    "the",
    "and",
    "for",
    "you",
    "your",
    "how",
    "can",
    "what",
    "does",
    "with",
    "are",
    "is",
    "do",
    "my",
    "a",
    "an",
    "to",
    "of",
    "in",
    "i",
}


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP and len(w) > 1}


def faq_run(env: Env) -> Done:
    ref = env.args.get("knowledge_base")
    if not isinstance(ref, str):
        raise StepError("faq: knowledge_base (a JSON file) is required")
    path = (Path(ref) if Path(ref).is_absolute() else Path(settings.BASE_DIR) / ref).resolve()
    if not any(path.is_relative_to(Path(r).resolve()) for r in settings.AGENTFLOW_FLOWS_ROOTS):
        raise StepError(f"faq: {ref} is outside AGENTFLOW_FLOWS_ROOTS")
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StepError(f"faq: cannot read {ref}: {exc}") from None
    question = _words(context.as_text(env.args.get("question")))
    best: tuple[float, Mapping[str, Any] | None] = (0.0, None)
    for entry in entries if isinstance(entries, list) else []:
        keywords = {k.lower() for k in entry.get("keywords", [])}
        known = keywords | _words(str(entry.get("question", "")))
        if not question or not known:
            continue
        hits = question & known
        score = (len(hits) + len(question & keywords)) / (len(question) + min(len(keywords), 2))
        if score > best[0]:
            best = (min(1.0, score), entry)
    score, entry = best
    if entry is None:
        return Done({"id": None, "answer": "", "confidence": 0.0}, attributes={"confidence": 0.0})
    value = {"id": entry.get("id"), "answer": entry.get("answer", ""), "confidence": round(score, 3)}
    return Done(value, attributes={"confidence": value["confidence"], "faq.id": str(entry.get("id"))})


# --- set, audit, summary --------------------------------------------------------------------------


def set_run(env: Env) -> Done:
    values = env.args.get("values") or {}
    appends = env.args.get("append") or {}
    return Done(None, writes=dict(values), appends=dict(appends))


def audit_run(env: Env) -> Done:
    from scheduler import audit

    record = env.args.get("record")
    action = str(env.args.get("action") or "flow.audit")
    audit.record(
        action,
        audit.Actor.system(f"flow {env.flow_name}", source="flow"),
        audit.Target("flow_run", str(env.flow_run_id or ""), f"{env.flow_name} step {env.step.id}"),
        message=context.as_text(record)[:20000],
    )
    return Done({"recorded": True, "action": action}, events=[("audit", {"action": action})])


def _fallback(value: Any, fallback: str) -> Any:
    return value if value not in (None, "", [], {}) else fallback


def summary_run(env: Env) -> Done:
    fallback = str(env.args.get("fallback") or "not available (an earlier step gave no information)")
    title = _fallback(env.args.get("title"), f"{env.flow_name}: summary")
    changes = _fallback(env.args.get("changes"), fallback)
    tests = _fallback(env.args.get("tests"), fallback)
    next_actions = _fallback(env.args.get("next_actions"), fallback)
    if isinstance(tests, Mapping) and "returncode" in tests:
        tests = {
            "passed": tests.get("returncode") == 0,
            "returncode": tests.get("returncode"),
            "output": context.as_text(tests.get("stdout", ""))[-2000:],
        }
    report_lines = [str(title), "", "Changes:"]
    report_lines += (
        [f"  - {c}" for c in changes] if isinstance(changes, list) else [f"  {context.as_text(changes)}"]
    )
    if isinstance(tests, Mapping):
        report_lines += [
            "",
            f"Tests: {'passed' if tests.get('passed') else 'FAILED'} (exit {tests.get('returncode')})",
        ]
    else:
        report_lines += ["", f"Tests: {context.as_text(tests)}"]
    report_lines += ["", "Next actions:"]
    report_lines += (
        [f"  - {a}" for a in next_actions]
        if isinstance(next_actions, list)
        else [f"  {context.as_text(next_actions)}"]
    )
    errors = env.ctx.get("errors") or []
    if errors:
        report_lines += ["", "Errors continued past:"] + [
            f"  - {e.get('step')}: {e.get('error')}" for e in errors
        ]
    data = {"title": title, "changes": changes, "tests": tests, "next_actions": next_actions}
    report = "\n".join(report_lines)
    return Done({"report": report, "json": data}, writes={"summary.report": report, "summary.json": data})


# --- the table --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepType:
    run: Callable[..., Done | Call]
    finish: Callable[[Env, Run], Done] | None = None
    required: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()


TYPES: dict[str, StepType] = {
    "agent": StepType(
        agent_run,
        agent_finish,
        ("prompt",),
        ("prompt", "agent", "gateway", "parse", "history", "history_limit", "model", "provider"),
    ),
    "router": StepType(
        router_run, None, ("value",), ("value", "routes", "default", "max_visits", "exhausted")
    ),
    "workspace_inspector": StepType(
        inspector_run, None, ("root",), ("root", "allowed_extensions", "preview_lines", "max_bytes")
    ),
    "patch": StepType(patch_run, None, ("diff",), ("diff", "files", "allowed_paths", "root")),
    "test_executor": StepType(tests_run, tests_finish, (), ("entry", "args", "files", "timeout")),
    "http_handoff": StepType(handoff_run, None, ("url",), ("url", "payload", "headers", "retry")),
    "faq": StepType(faq_run, None, ("knowledge_base", "question"), ("knowledge_base", "question")),
    "set": StepType(set_run, None, (), ("values", "append")),
    "audit": StepType(audit_run, None, (), ("record", "action")),
    "summary": StepType(summary_run, None, (), ("title", "changes", "tests", "next_actions", "fallback")),
}


def check(step: StepSpec) -> list[str]:
    """Problems with a step's ``with`` that need no context (keys, required inputs, routes)."""
    kind = TYPES[step.type]
    problems = [
        f"unknown input {k!r} for {step.type} (use {', '.join(kind.keys)})"
        for k in sorted(set(step.with_) - set(kind.keys))
    ]
    problems += [f"{step.type} needs {k!r}" for k in kind.required if k not in step.with_]
    if step.type == "agent" and step.with_.get("parse", "text") not in ("text", "json"):
        problems.append("parse must be text or json")
    if step.type == "router":
        for route in step.with_.get("routes") or []:
            if (
                not isinstance(route, dict)
                or not route.get("goto")
                or not isinstance(route.get("when", {}), dict)
            ):
                problems.append("each route is {when: {condition: value}, goto: step}")
            elif set(route.get("when", {})) - set(CONDITIONS):
                problems.append(f"unknown condition in {route['when']} (use {', '.join(CONDITIONS)})")
    return problems
