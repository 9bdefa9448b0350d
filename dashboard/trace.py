"""A run's trace as waterfall rows (the trace page and ``GET /api/v1/runs/<id>/trace/``).

A flow run has ``flows.Span`` rows (flows/engine.py: the flow's root span, one span per step, a
child span per agent or command run the step waited for): they are laid out as a tree in time
order. While the flow is still going its root span is not written yet (the engine records it
when the flow ends) and the step it is in has no span: both are drawn from the ``FlowRun``,
up to now. Any other run is synthesized from the run itself: the wait in the queue, then each
attempt with its error class, the run's tokens and cost on the attempt that finished it.

Every row is positioned on the trace's own time axis: ``left_pct`` / ``width_pct`` are
percentages of the whole trace, so the page places bars with CSS alone.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from django.db import models
from django.urls import reverse
from django.utils import timezone

from dashboard.params import as_id
from fleet.models import Gateway
from flows.models import FlowRun, Span
from scheduler.models import Attempt, Run

MAX_INDENT = 5
MIN_WIDTH_PCT = 0.4  # a span of a few microseconds still shows a sliver
NS_PER_MS = 1_000_000


class TraceStatus(models.TextChoices):
    """A row's state (a span's ok / error, a run's or attempt's state folded onto these)."""

    OK = "ok", "OK"
    ERROR = "error", "Error"
    RUNNING = "running", "Running"
    WAITING = "waiting", "Waiting"
    CANCELLED = "cancelled", "Cancelled"
    UNSET = "unset", "Unset"


_FROM_RUN = {
    "succeeded": TraceStatus.OK,
    "failed": TraceStatus.ERROR,
    "lost": TraceStatus.ERROR,
    "aborted": TraceStatus.ERROR,
    "cancelled": TraceStatus.CANCELLED,
    "running": TraceStatus.RUNNING,
    "waiting": TraceStatus.RUNNING,  # a flow run waiting for its step's run is still running
}


def _run_state(status: str) -> str:
    return str(_FROM_RUN.get(status, TraceStatus.WAITING))


@dataclass
class Row:
    span_id: str
    parent_span_id: str
    depth: int
    name: str
    kind: str
    status: str
    start_ns: int
    end_ns: int
    error: str = ""
    error_class: str = ""
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost: float | None = None
    model: str = ""
    session_key: str = ""
    session_url: str = ""
    child_run_id: int | None = None
    child_run_url: str = ""
    child_trace_url: str = ""
    open_ended: bool = False  # still going: it ends "now"
    attempts: int | None = None  # a step's attempts (its policy's retries)
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    # set by _place
    offset_ms: float = 0.0
    duration_ms: float = 0.0
    left_pct: float = 0.0
    width_pct: float = 0.0

    @property
    def duration_seconds(self) -> float:
        return self.duration_ms / 1000

    @property
    def offset_seconds(self) -> float:
        return self.offset_ms / 1000

    @property
    def event_names(self) -> list[str]:
        return [str(e.get("name", "")) for e in self.events if isinstance(e, dict) and e.get("name")]

    @property
    def indent(self) -> int:
        """The depth the page indents to (deeper rows stay at the last step)."""
        return min(self.depth, MAX_INDENT)

    @property
    def status_label(self) -> str:
        return str(TraceStatus(self.status).label) if self.status in TraceStatus.values else self.status

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("offset_ms", "duration_ms", "left_pct", "width_pct"):
            data[name] = round(data[name], 3)
        return data


@dataclass
class Tick:
    pct: float
    label: str


@dataclass
class Trace:
    run: Run
    source: str  # "spans" (a flow run's stored spans) or "run" (synthesized from the run)
    trace_id: str
    start_ns: int
    end_ns: int
    rows: list[Row]
    ticks: list[Tick]
    flow_run: FlowRun | None = None
    parent_run_id: int | None = None  # the flow run whose step waited for this run

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / NS_PER_MS

    @property
    def duration_seconds(self) -> float:
        return self.duration_ms / 1000

    @property
    def started_at(self) -> datetime:
        return datetime.fromtimestamp(self.start_ns / 1e9, tz=timezone.get_current_timezone())

    @property
    def tokens_in(self) -> int:
        return sum(r.tokens_in or 0 for r in self.rows)

    @property
    def tokens_out(self) -> int:
        return sum(r.tokens_out or 0 for r in self.rows)

    @property
    def cost(self) -> float:
        return round(sum(r.cost or 0 for r in self.rows), 6)

    @property
    def errors(self) -> int:
        return sum(1 for r in self.rows if r.status == TraceStatus.ERROR)

    def as_json(self) -> dict[str, Any]:
        return {
            "run": self.run.pk,
            "kind": self.run.kind,
            "status": self.run.status,
            "source": self.source,
            "trace_id": self.trace_id,
            "started_at": self.started_at.isoformat(),
            "duration_ms": round(self.duration_ms, 3),
            "flow": (
                {
                    "name": self.flow_run.flow_name,
                    "status": self.flow_run.status,
                    "position": self.flow_run.position,
                    "steps_done": self.flow_run.steps_done,
                }
                if self.flow_run is not None
                else None
            ),
            "parent_run": self.parent_run_id,
            "totals": {
                "tokens_in": self.tokens_in,
                "tokens_out": self.tokens_out,
                "cost": self.cost,
                "errors": self.errors,
            },
            "ticks": [asdict(t) for t in self.ticks],
            "rows": [r.as_json() for r in self.rows],
        }


# --- building ------------------------------------------------------------------------------------


def for_run(run: Run) -> Trace:
    """The waterfall of ``run``: its flow's spans if it is a flow run, else its own timings."""
    now = time_ns()
    flow_run = FlowRun.objects.filter(run=run).first()
    if flow_run is not None:
        rows = _flow_rows(run, flow_run, now)
        source, trace_id = "spans", flow_run.trace_id
    else:
        rows = _run_rows(run, now)
        source, trace_id = "run", ""
    _link(rows, run.gateway)
    start = min((r.start_ns for r in rows), default=now)
    end = max((r.end_ns for r in rows), default=now)
    _place(rows, start, end)
    parent = Span.objects.filter(child_run=run).values_list("run_id", flat=True).first()
    return Trace(
        run=run,
        source=source,
        trace_id=trace_id,
        start_ns=start,
        end_ns=max(end, start),
        rows=rows,
        ticks=ticks(max(end - start, 0) / NS_PER_MS),
        flow_run=flow_run,
        parent_run_id=parent,
    )


def time_ns() -> int:
    return int(timezone.now().timestamp() * 1e9)


def _ns(moment: datetime | None, default: int) -> int:
    return int(moment.timestamp() * 1e9) if moment is not None else default


def _flow_rows(run: Run, fr: FlowRun, now: int) -> list[Row]:
    spans = list(Span.objects.filter(run=run).select_related("child_run").order_by("start_ns", "id"))
    rows = [_span_row(s) for s in spans]
    ids = {r.span_id for r in rows}
    still_going = fr.status not in FlowRun.FINAL
    if fr.root_span_id not in ids:  # the engine writes the root span when the flow ends
        rows.insert(
            0,
            Row(
                span_id=fr.root_span_id,
                parent_span_id="",
                depth=0,
                name=f"flow {fr.flow_name}",
                kind="flow",
                status=_run_state(fr.status),
                error=fr.error,
                start_ns=fr.started_ns or _ns(fr.started_at, now),
                end_ns=now if still_going else _ns(fr.finished_at, now),
                open_ended=still_going,
            ),
        )
    if still_going and fr.step_span_id and fr.step_span_id not in ids and fr.step_started_ns:
        waiting = fr.waiting_run
        rows.append(
            Row(
                span_id=fr.step_span_id,
                parent_span_id=fr.root_span_id,
                depth=1,
                name=f"step {fr.position}",
                kind="step",
                status=str(TraceStatus.RUNNING),
                start_ns=fr.step_started_ns,
                end_ns=now,
                open_ended=True,
                child_run_id=waiting.pk if waiting is not None else None,
                attempts=fr.step_attempt,
                attributes={"flow.step.attempts": fr.step_attempt},
            )
        )
    return _as_tree(rows)


def _span_row(span: Span) -> Row:
    attrs = span.attributes if isinstance(span.attributes, dict) else {}
    return Row(
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        depth=0,
        name=span.name,
        kind=span.kind,
        status=span.status if span.status in TraceStatus.values else str(TraceStatus.UNSET),
        error=span.status_message,
        start_ns=span.start_ns,
        end_ns=max(span.end_ns, span.start_ns),
        tokens_in=_int(attrs.get("gen_ai.usage.input_tokens")),
        tokens_out=_int(attrs.get("gen_ai.usage.output_tokens")),
        cost=_float(attrs.get("agentflow.cost")),
        model=str(attrs.get("gen_ai.request.model") or attrs.get("gen_ai.response.model") or ""),
        session_key=str(attrs.get("agentflow.session_key") or ""),
        child_run_id=span.child_run_id,
        attempts=_int(attrs.get("flow.step.attempts")),
        attributes=attrs,
        events=span.events if isinstance(span.events, list) else [],
    )


def _as_tree(rows: list[Row]) -> list[Row]:
    """Depth-first in time order, each span under its parent; a span whose parent is missing
    goes under the root (or is a root itself when there is none)."""
    by_id = {r.span_id: r for r in rows}
    roots = [r for r in rows if not r.parent_span_id or r.parent_span_id == r.span_id]
    root_id = roots[0].span_id if roots else ""
    children: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if r in roots:
            continue
        parent = r.parent_span_id if r.parent_span_id in by_id else root_id
        if parent:
            children[parent].append(r)
        else:
            roots.append(r)
    ordered: list[Row] = []
    seen: set[int] = set()

    def walk(row: Row, depth: int) -> None:
        if id(row) in seen:  # a cycle of parent ids in stored data: each row once
            return
        seen.add(id(row))
        row.depth = depth
        ordered.append(row)
        for child in sorted(children.get(row.span_id, []), key=lambda c: c.start_ns):
            walk(child, depth + 1)

    for root in sorted(roots, key=lambda r: r.start_ns):
        walk(root, 0)
    ordered.extend(r for r in rows if id(r) not in seen)
    return ordered


def _run_rows(run: Run, now: int) -> list[Row]:
    attempts = list(run.attempt_set.order_by("number"))
    running = run.status not in Run.FINAL
    queued = _ns(run.queued_at, now)
    first_start = _ns(attempts[0].started_at, now) if attempts else _ns(run.started_at, now)
    end = now if running else _ns(run.finished_at, now)
    root = Row(
        span_id=f"run-{run.pk}",
        parent_span_id="",
        depth=0,
        name=run.job_name or run.kind,
        kind="run",
        status=_run_state(run.status),
        error=run.error,
        error_class=run.error_class,
        start_ns=queued,
        end_ns=max(end, queued),
        open_ended=running,
        attributes={"agentflow.kind": run.kind, "agentflow.run.status": run.status},
    )
    rows = [root]
    if first_start > queued or not attempts:
        rows.append(
            Row(
                span_id=f"run-{run.pk}-queued",
                parent_span_id=root.span_id,
                depth=1,
                name="queued",
                kind="wait",
                status=str(TraceStatus.WAITING if not attempts and running else TraceStatus.OK),
                start_ns=queued,
                end_ns=first_start if attempts else end,
                open_ended=not attempts and running,
            )
        )
    tokens_in, tokens_out, cost, model = usage_of(run.usage)
    last_done = next((a for a in reversed(attempts) if a.finished_at is not None), None)
    previous_end: int | None = None
    for a in attempts:
        start = _ns(a.started_at, now)
        if previous_end is not None and start > previous_end:
            rows.append(
                Row(
                    span_id=f"attempt-{a.pk}-backoff",
                    parent_span_id=root.span_id,
                    depth=1,
                    name=f"wait before attempt {a.number}",
                    kind="wait",
                    status=str(TraceStatus.OK),
                    start_ns=previous_end,
                    end_ns=start,
                )
            )
        a_end = _ns(a.finished_at, now)
        carries_usage = a is last_done
        rows.append(
            Row(
                span_id=f"attempt-{a.pk}",
                parent_span_id=root.span_id,
                depth=1,
                name=f"attempt {a.number}",
                kind="attempt",
                status=_attempt_state(a),
                error=a.error,
                error_class=a.error_class,
                start_ns=start,
                end_ns=max(a_end, start),
                open_ended=a.finished_at is None,
                tokens_in=tokens_in if carries_usage else None,
                tokens_out=tokens_out if carries_usage else None,
                cost=cost if carries_usage else None,
                model=model if carries_usage else "",
                session_key=a.session_key,
                attributes={"agentflow.attempt.id": str(a.pk), "agentflow.worker": a.worker},
            )
        )
        previous_end = a_end
    return rows


def _attempt_state(a: Attempt) -> str:
    return {
        "succeeded": TraceStatus.OK,
        "failed": TraceStatus.ERROR,
        "lost": TraceStatus.ERROR,
        "aborted": TraceStatus.ERROR,
        "running": TraceStatus.RUNNING,
    }.get(a.status, TraceStatus.UNSET)


def usage_of(usage: Any) -> tuple[int | None, int | None, float | None, str]:
    """(tokens in, tokens out, cost, model) of a run's ``usage`` (the keys fleet and flows write)."""
    if not isinstance(usage, dict):
        return None, None, None, ""
    tokens_in = _int(usage.get("input_tokens", usage.get("input", usage.get("prompt_tokens"))))
    tokens_out = _int(usage.get("output_tokens", usage.get("output", usage.get("completion_tokens"))))
    cost = usage.get("cost")
    if isinstance(cost, dict):
        cost = cost.get("total")
    return tokens_in, tokens_out, _float(cost), str(usage.get("model") or "")


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


# --- links and layout ----------------------------------------------------------------------------


def _link(rows: list[Row], own_gateway: str) -> None:
    """Session pages (a session key needs its gateway's id) and child run / trace pages. A row
    with a child run is on that run's gateway; any other row on the traced run's own."""
    child_ids = {r.child_run_id for r in rows if r.child_run_id}
    children = dict(Run.objects.filter(pk__in=child_ids).values_list("pk", "gateway"))
    sessions = dict(
        Attempt.objects.filter(run_id__in=child_ids)
        .exclude(session_key="")
        .order_by("run_id", "number")
        .values_list("run_id", "session_key")
    )  # the last attempt's key per run (later numbers overwrite earlier ones)
    names = {g for g in [own_gateway, *children.values()] if g and as_id(g) is None}
    gateway_ids = dict(Gateway.objects.filter(name__in=names).values_list("name", "pk"))
    for r in rows:
        gateway = own_gateway
        if r.child_run_id in children:
            r.child_run_url = reverse("dashboard:run-detail", args=[r.child_run_id])
            r.child_trace_url = reverse("dashboard:run-trace", args=[r.child_run_id])
            r.session_key = r.session_key or sessions.get(r.child_run_id, "")
            gateway = children[r.child_run_id]
        elif r.child_run_id:
            r.child_run_id = None  # deleted since
        if r.session_key and gateway:
            gateway_id = as_id(gateway) or gateway_ids.get(gateway)
            if gateway_id is not None:
                r.session_url = reverse("dashboard:session-detail", args=[gateway_id, r.session_key])


def _place(rows: list[Row], start: int, end: int) -> None:
    total = max(end - start, 1)
    for r in rows:
        r.offset_ms = (r.start_ns - start) / NS_PER_MS
        r.duration_ms = max(r.end_ns - r.start_ns, 0) / NS_PER_MS
        left = (r.start_ns - start) / total * 100
        width = max(r.end_ns - r.start_ns, 0) / total * 100
        left = min(max(left, 0.0), 100.0 - MIN_WIDTH_PCT)
        r.left_pct = round(left, 3)
        r.width_pct = round(min(max(width, MIN_WIDTH_PCT), 100.0 - left), 3)


NICE_STEPS = (1, 2, 2.5, 5, 10)
# Past a second the steps follow the clock (15 s, 1 min, 5 min, 1 h), not the decimal system.
CLOCK_STEPS_MS = tuple(
    s * 1000
    for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
)


def _step(raw_ms: float) -> float:
    if raw_ms >= 1000:
        return next((s for s in CLOCK_STEPS_MS if s >= raw_ms), math.ceil(raw_ms / 86_400_000) * 86_400_000)
    magnitude = 10 ** math.floor(math.log10(raw_ms))
    return next(m * magnitude for m in NICE_STEPS if m * magnitude >= raw_ms)


def ticks(total_ms: float, target: int = 5) -> list[Tick]:
    """Round-numbered ticks from 0 to ``total_ms`` (about ``target`` of them), as percentages."""
    if total_ms <= 0:
        return [Tick(0.0, "0 ms")]
    step = _step(total_ms / target)
    out = []
    n = 0
    while n * step <= total_ms * 1.0001:
        out.append(Tick(round(n * step / total_ms * 100, 3), ms_label(n * step)))
        n += 1
    return out


def ms_label(ms: float) -> str:
    """A tick's label: 0 ms, 250 ms, 1.5 s, 1 min 40 s, 2 min, 1 h 5 min."""
    if ms < 1:
        return f"{ms:.2g} ms" if ms else "0 ms"
    if ms < 1000:
        return f"{ms:g} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:g} s"
    minutes, rest = divmod(round(seconds, 3), 60)
    if minutes < 60:
        return f"{minutes:g} min {rest:g} s" if rest else f"{minutes:g} min"
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
