"""The queue page's figures: counts, flow, limits, breakers, system and predictions.

Page-only aggregation (the API's figures live in the engine). Everything the page shows comes
from :func:`build` in a fixed number of queries, whatever the size of the runs table:

1. counts per priority × state, with the runs queued in the last 10 minutes (arrivals);
2. runs finished in the last hour per minute and priority, with their average wait
   (throughput and wait sparklines, service rate; the ``run_finished`` index);
3. the running runs, oldest first (only when the counts say some run);
4. the pauses;
5. the blocked runs grouped by gateway, agent and provider (only when some are blocked).

Rates, breakers and the system figures come from Redis and the operating system. The
predictions are straight-line estimates (least squares over the samples the page keeps in
Redis, one every :data:`SAMPLE_EVERY` seconds at most, an hour's worth) in plain words.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
from django.conf import settings
from django.db import connection
from django.db.models import (
    Avg,
    CharField,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    Max,
    Min,
    Q,
)
from django.db.models.functions import Cast, Extract, Substr, TruncMinute
from django.utils import timezone

from agentflow.lib.redis import get_redis, key
from scheduler.models import Priority, QueuePause, Run

from . import sparkline

log = logging.getLogger("agentflow.dashboard")

PRIORITIES = tuple(Priority.values)
STATES = ("queued", "scheduled", "blocked", "parked", "running", *Run.FINAL)
RATE_WINDOW = timedelta(minutes=10)
SAMPLE_EVERY = 15  # seconds between two samples kept for the trends
SAMPLES_KEPT = 240  # an hour at one sample every 15 s
RUNNING_SHOWN = 20
# The command lines of AgentFlow's processes (the Procfile's web, worker, beat, listener and watcher).
PROCESS_MARKS = (
    ("web", ("daphne", "agentflow.asgi")),
    ("worker", ("celery", "worker")),
    ("beat", ("celery", "beat")),
    ("listener", ("run_gateway_listener",)),
    ("watcher", ("run_file_watcher",)),
    ("supervisor", ("supervisord", "supervisord.conf")),
)
_SYSTEM_CACHE: dict[str, Any] = {}


@dataclass
class PriorityRow:
    priority: str
    label: str
    counts: dict[str, int]
    arrived: int = 0  # queued in the last 10 minutes
    served: int = 0  # finished in the last 10 minutes

    @property
    def waiting(self) -> int:
        return sum(self.counts.get(s, 0) for s in Run.WAITING)

    @property
    def cells(self) -> list[tuple[str, int]]:
        return [(s, self.counts.get(s, 0)) for s in STATES]


@dataclass
class Blocked:
    gateway: str
    agent: str
    provider: str
    runs: int
    since: datetime | None
    error: str


@dataclass
class Process:
    role: str
    pid: int
    rss_mb: float
    cpu_percent: float
    uptime: timedelta
    this: bool


@dataclass
class System:
    processes: list[Process]
    redis_ok: bool
    redis_error: str
    database_ok: bool
    database_ms: float

    @property
    def total_rss_mb(self) -> float:
        return round(sum(p.rss_mb for p in self.processes), 1)


@dataclass
class Prediction:
    topic: str  # "rate limit", "queue", "memory"
    level: str  # "ok", "warning", "error"
    sentence: str


@dataclass
class QueuePage:
    rows: list[PriorityRow]
    totals: list[int]
    running: list[Run]
    throughput: sparkline.Sparkline | None
    wait: sparkline.Sparkline | None
    pauses: list[QueuePause]
    rate_limits: list[Any] | None  # scheduler.limits.KeyStatus; None when the limiter is not there
    breakers: list[Any] | None  # scheduler.breakers.BreakerState
    blocked: list[Blocked]
    system: System
    predictions: list[Prediction] = field(default_factory=list)
    finished_last_hour: int = 0

    @property
    def paused_everything(self) -> bool:
        return any(p.scope == QueuePause.Scope.ALL for p in self.pauses)

    @property
    def paused_priorities(self) -> set[str]:
        return {p.value for p in self.pauses if p.scope == QueuePause.Scope.PRIORITY}


# --- the database ---------------------------------------------------------------------------------


def _counts(now: datetime) -> tuple[list[PriorityRow], float]:
    """Query 1: per priority × state, and arrivals in the last 10 minutes; how long it took."""
    started = time.perf_counter()
    rows = {p: PriorityRow(p, Priority(p).label, {}) for p in PRIORITIES}
    grouped = (
        Run.objects.values("priority", "status")
        .annotate(n=Count("id"), arrived=Count("id", filter=Q(queued_at__gte=now - RATE_WINDOW)))
        .order_by()
    )
    for item in grouped:
        row = rows.setdefault(item["priority"], PriorityRow(item["priority"], item["priority"], {}))
        row.counts[item["status"]] = item["n"]
        row.arrived += item["arrived"]
    return list(rows.values()), (time.perf_counter() - started) * 1000


def _minute_of(field: str) -> Any:
    """The minute of a datetime column, in SQL. SQLite keeps datetimes as ISO text in UTC: its
    first 16 characters are the minute, with no Python function called per row (Django's
    TruncMinute on SQLite is one, and doubles the page's time at 3,000 runs an hour)."""
    if connection.vendor == "sqlite":
        return Substr(Cast(field, CharField()), 1, 16)
    return TruncMinute(field)


def _seconds_between(start: str, end: str) -> Any:
    """``end - start`` in seconds, in SQL (julianday on SQLite, epoch on PostgreSQL)."""
    if connection.vendor == "sqlite":
        day = FloatField()
        return ExpressionWrapper(
            (
                Func(F(end), function="julianday", output_field=day)
                - Func(F(start), function="julianday", output_field=day)
            )
            * 86400.0,
            output_field=day,
        )
    return Extract(ExpressionWrapper(F(end) - F(start), output_field=DurationField()), "epoch")


def _as_minute(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite: "2026-12-01 19:35"
        return datetime.strptime(value[:16], "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    return value


def _flow(now: datetime, rows: list[PriorityRow]) -> tuple[list[tuple[datetime, float | None]], ...]:
    """Query 2: runs finished per minute over the last hour (and their average wait); fills each
    row's ``served`` (finished in the last 10 minutes)."""
    hour_ago = now - timedelta(hours=1)
    grouped = (
        Run.objects.filter(finished_at__gte=hour_ago)
        .annotate(minute=_minute_of("finished_at"))
        .values("minute", "priority")
        .annotate(n=Count("id"), wait=Avg(_seconds_between("queued_at", "started_at")))
        .order_by()
    )
    per_minute: dict[datetime, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])  # n, wait sum, waited
    by_priority = {r.priority: r for r in rows}
    recent = (now - RATE_WINDOW).replace(second=0, microsecond=0)
    for item in grouped:
        minute, n, avg = _as_minute(item["minute"]), item["n"], item["wait"]
        cell = per_minute[minute]
        cell[0] += n
        if avg is not None:
            cell[1] += float(avg) * n
            cell[2] += n
        if minute >= recent and item["priority"] in by_priority:
            by_priority[item["priority"]].served += n
    start = hour_ago.replace(second=0, microsecond=0) + timedelta(minutes=1)
    minutes = [start + timedelta(minutes=i) for i in range(60)]
    throughput = [(m, per_minute[m][0] if m in per_minute else 0.0) for m in minutes]
    waits: list[tuple[datetime, float | None]] = [
        (m, per_minute[m][1] / per_minute[m][2]) for m in minutes if m in per_minute and per_minute[m][2]
    ]
    return throughput, waits  # type: ignore[return-value]


def _blocked() -> list[Blocked]:
    """Query 5: the blocked runs, one line per gateway, agent and provider."""
    grouped = (
        Run.objects.filter(status=Run.Status.BLOCKED)
        .values("gateway", "agent", "provider")
        .annotate(n=Count("id"), since=Min("finished_at"), first=Min("queued_at"), error=Max("error"))
        .order_by("-n")[:20]
    )
    return [
        Blocked(g["gateway"], g["agent"], g["provider"], g["n"], g["since"] or g["first"], g["error"] or "")
        for g in grouped
    ]


# --- Redis: limits, breakers, samples ------------------------------------------------------------


def _limits() -> tuple[list[Any] | None, list[Any] | None]:
    """The limiter's keys and the breakers (scheduler.limits / scheduler.breakers), or None
    when that part of the engine is not installed."""
    try:
        from scheduler import limits
    except ImportError:  # pragma: no cover - the limiter is part of the engine on main
        rate_limits = None
    else:
        rate_limits = limits.status()
    try:
        from scheduler import breakers
    except ImportError:  # pragma: no cover
        breaker_states = None
    else:
        breaker_states = breakers.states()
    return rate_limits, breaker_states


def _samples_key() -> str:
    return key("queue_page", "samples")


def record_sample(system: System, rows: list[PriorityRow], rate_limits: list[Any] | None) -> None:
    """Keep one sample (memory, queue sizes, limiter rates) every SAMPLE_EVERY seconds at most."""
    redis = get_redis()
    if not redis.set(key("queue_page", "sampled"), "1", nx=True, ex=SAMPLE_EVERY):
        return
    sample = {
        "t": time.time(),
        "rss": system.total_rss_mb,
        "queued": {r.priority: r.counts.get("queued", 0) for r in rows},
        "rates": {k.key: k.rate_rpm for k in rate_limits or []},
    }
    pipe = redis.pipeline()
    pipe.lpush(_samples_key(), json.dumps(sample))
    pipe.ltrim(_samples_key(), 0, SAMPLES_KEPT - 1)
    pipe.execute()


def samples() -> list[dict[str, Any]]:
    """The kept samples, oldest first."""
    raw = get_redis().lrange(_samples_key(), 0, SAMPLES_KEPT - 1)
    out = []
    for item in reversed(raw):
        try:
            out.append(json.loads(item))
        except (TypeError, ValueError):
            continue
    return out


# --- the operating system --------------------------------------------------------------------------


def _role(cmdline: list[str]) -> str:
    text = " ".join(cmdline)
    for role, marks in PROCESS_MARKS:
        if all(mark in text for mark in marks):
            return role
    return ""


def _processes() -> list[Process]:
    """AgentFlow's processes on this host (by command line; this one always), cached 5 s."""
    cached = _SYSTEM_CACHE.get("processes")
    if cached and time.monotonic() - cached[0] < 5:
        return list(cached[1])
    me = os.getpid()
    found = []
    now = time.time()
    for proc in psutil.process_iter(["pid", "cmdline", "create_time"]):
        try:
            cmdline = proc.info["cmdline"] or []
            role = "this (web)" if proc.pid == me else _role(cmdline)
            if not role or (proc.pid != me and str(settings.BASE_DIR) not in " ".join(cmdline) + proc.cwd()):
                continue
            found.append(
                Process(
                    role=role,
                    pid=proc.pid,
                    rss_mb=round(proc.memory_info().rss / 1_048_576, 1),
                    # psutil keeps the Process object: the next call gives the CPU since this one.
                    cpu_percent=round(proc.cpu_percent(None), 1),
                    uptime=timedelta(seconds=int(now - (proc.info["create_time"] or now))),
                    this=proc.pid == me,
                )
            )
        except (psutil.Error, OSError):
            continue  # it ended meanwhile, or is not ours to read
    found.sort(key=lambda p: (not p.this, p.role, p.pid))
    _SYSTEM_CACHE["processes"] = (time.monotonic(), found)
    return found


def _redis_ok() -> tuple[bool, str]:
    try:
        get_redis().ping()
    except Exception as exc:
        return False, type(exc).__name__
    return True, ""


# --- predictions ----------------------------------------------------------------------------------


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (unix time, value) points, per minute; None with under 3 points
    or under a minute of history."""
    if len(points) < 3 or points[-1][0] - points[0][0] < 60:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 60


def _minutes(value: float) -> str:
    if value < 1:
        return "under a minute"
    if value < 90:
        return f"about {round(value)} minute{'s' if round(value) != 1 else ''}"
    return f"about {value / 60:.1f} hours"


def queue_predictions(rows: list[PriorityRow], threshold: int) -> list[Prediction]:
    """Arrival (queued per minute, last 10 min) against service (finished per minute): when
    arrivals outrun service, the minutes until the backlog passes ``threshold``."""
    out = []
    window = RATE_WINDOW.total_seconds() / 60
    for row in rows:
        backlog = row.counts.get("queued", 0)
        arrival, service = row.arrived / window, row.served / window
        name = f"The {row.priority} queue"
        if not row.arrived and not row.served and not backlog:
            continue
        if backlog >= threshold:
            out.append(Prediction("queue", "error", f"{name} holds {backlog:,} runs, past {threshold:,}."))
        elif arrival > service and (threshold - backlog) / (arrival - service) < 24 * 60:
            eta = (threshold - backlog) / (arrival - service)
            out.append(
                Prediction(
                    "queue",
                    "warning" if eta < 60 else "ok",
                    f"At this rate {name.lower()} passes {threshold:,} runs in {_minutes(eta)} "
                    f"({arrival:.1f} arriving and {service:.1f} served a minute).",
                )
            )
        elif arrival > service:
            out.append(
                Prediction(
                    "queue",
                    "ok",
                    f"{name} grows slowly ({arrival:.1f} arriving and {service:.1f} served a minute): "
                    f"more than a day before it passes {threshold:,} runs.",
                )
            )
        else:
            out.append(
                Prediction(
                    "queue",
                    "ok",
                    f"{name} keeps up: {service:.1f} runs served a minute against {arrival:.1f} arriving; "
                    f"{backlog:,} waiting.",
                )
            )
    return out


def rate_predictions(rate_limits: list[Any] | None, history: list[dict[str, Any]]) -> list[Prediction]:
    """Each budgeted key's current rate against its budget and, from the rate's trend, the
    minutes until it reaches the budget."""
    out = []
    for status in rate_limits or []:
        budget = status.budget.rpm
        if status.blocked_seconds > 0:
            out.append(
                Prediction(
                    "rate limit",
                    "error",
                    f"{status.key} is backing off after a rate limit: it unblocks in "
                    f"{_minutes(status.blocked_seconds / 60)}.",
                )
            )
            continue
        if not budget:
            continue
        share = status.rate_rpm / budget
        head = f"{status.key}: {status.rate_rpm:g} of {budget:g} requests a minute ({share:.0%})"
        if share >= 1:
            out.append(
                Prediction("rate limit", "error", f"{head}: at its budget; runs wait for the limiter.")
            )
            continue
        points = [(s["t"], float(s.get("rates", {}).get(status.key, 0))) for s in history]
        points.append((time.time(), status.rate_rpm))
        slope = slope_per_minute(points)
        if slope is not None and slope > 0:
            eta = (budget - status.rate_rpm) / slope
            level = "warning" if eta < 30 else "ok"
            out.append(
                Prediction(
                    "rate limit", level, f"{head}; at this trend it reaches the limit in {_minutes(eta)}."
                )
            )
        else:
            out.append(Prediction("rate limit", "ok", f"{head}; steady or falling, no limit in sight."))
    return out


def memory_prediction(system: System, history: list[dict[str, Any]], threshold_mb: int) -> Prediction:
    total = system.total_rss_mb
    head = f"AgentFlow's processes use {total:,.0f} MB of the {threshold_mb:,} MB alert threshold"
    if total >= threshold_mb:
        return Prediction("memory", "error", f"{head}: past it.")
    points = [(s["t"], float(s.get("rss", 0))) for s in history if s.get("rss")]
    points.append((time.time(), total))
    slope = slope_per_minute(points)
    if slope is None:
        return Prediction("memory", "ok", f"{head}; not enough history yet for a trend.")
    if slope <= 0.01:
        trend = "falling" if slope < -0.5 else "steady"
        return Prediction("memory", "ok", f"{head}; {trend} ({slope:+.1f} MB a minute).")
    eta = (threshold_mb - total) / slope
    return Prediction(
        "memory",
        "warning" if eta < 120 else "ok",
        f"{head}; growing {slope:.1f} MB a minute, it would reach the threshold in {_minutes(eta)}.",
    )


# --- the page -------------------------------------------------------------------------------------


def _count(value: float) -> str:
    return f"{value:.3g}/min"


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.0f} s"
    return f"{value / 60:.0f} min"


def build() -> QueuePage:
    now = timezone.now()
    rows, database_ms = _counts(now)
    totals = [sum(r.counts.get(s, 0) for r in rows) for s in STATES]
    throughput, waits = _flow(now, rows)
    any_running = sum(r.counts.get("running", 0) for r in rows)
    any_blocked = sum(r.counts.get("blocked", 0) for r in rows)
    running = (
        list(Run.objects.in_flight().select_related(None).order_by("started_at")[:RUNNING_SHOWN])
        if any_running
        else []
    )
    pauses = list(QueuePause.objects.all())
    blocked = _blocked() if any_blocked else []
    redis_ok, redis_error = _redis_ok()
    rate_limits, breaker_states = _limits() if redis_ok else (None, None)
    system = System(_processes(), redis_ok, redis_error, True, round(database_ms, 1))
    history = samples() if redis_ok else []
    if redis_ok:
        record_sample(system, rows, rate_limits)
    finished = int(sum(v or 0 for _, v in throughput))
    page = QueuePage(
        rows=rows,
        totals=totals,
        running=running,
        throughput=sparkline.build(
            throughput,
            fmt=_count,
            title="Runs finished per minute over the last hour",
            unit="minutes",
            floor=1,
            words=("most", "fewest"),
        )
        if finished
        else None,
        wait=sparkline.build(
            waits, fmt=_seconds, title="Average wait per minute", unit="minutes", floor=0.01
        ),
        pauses=pauses,
        rate_limits=rate_limits,
        breakers=breaker_states,
        blocked=blocked,
        system=system,
        finished_last_hour=finished,
    )
    page.predictions = (
        rate_predictions(rate_limits, history)
        + queue_predictions(rows, settings.AGENTFLOW_QUEUE_OVERFLOW_THRESHOLD)
        + [memory_prediction(system, history, settings.AGENTFLOW_MEMORY_ALERT_MB)]
    )
    return page


# --- the memory-process alert rule (scheduler.alert_rules; registered in DashboardConfig.ready) ------


def _process_label(process: Process) -> str:
    role = process.role
    if process.this:  # "this (web)" is the page's view; the evaluator runs in a worker
        try:
            role = _role(psutil.Process(process.pid).cmdline()) or "this process"
        except (psutil.Error, OSError):
            role = "this process"
    return f"{role} (pid {process.pid})"


def process_memory(rule: Any, ctx: Any) -> list[Any]:
    """AgentFlow processes on this host whose RSS is over ``threshold`` % of
    AGENTFLOW_MEMORY_ALERT_MB (the memory budget the page's memory trend is measured against)."""
    from scheduler.alert_rules import Finding

    budget = settings.AGENTFLOW_MEMORY_ALERT_MB
    threshold = rule.threshold if rule.threshold is not None else 80.0
    found = []
    for process in _processes():
        percent = 100.0 * process.rss_mb / budget
        if percent > threshold:
            label = _process_label(process)
            found.append(
                Finding(
                    label,
                    f"{label} uses {process.rss_mb:,.0f} MB, {percent:.0f} % of AGENTFLOW_MEMORY_ALERT_MB "
                    f"({budget:,} MB; threshold {threshold:g} %)",
                    round(percent, 1),
                )
            )
    return found


def register_alert_conditions() -> None:
    from scheduler.alert_rules import Condition, register_condition

    register_condition(
        Condition("memory-process", "Memory of one AgentFlow process", "%", process_memory, threshold=80)
    )
