"""The queue's figures for the ops API, the commands and the pages: counts per priority and
state, waits, throughput, usage, errors and percentiles. Computed in the database over bounded
windows (``minutes``, at most a day), so a table of 100,000 runs answers in a few milliseconds:
waiting runs are few (partial indexes), finished ones are read through ``run_finished``.

Percentiles are nearest-rank (the ⌈p·n⌉-th smallest), one ``ORDER BY … LIMIT 1 OFFSET k``
query each, so SQLite and PostgreSQL answer the same numbers.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from django.db.models import (
    Avg,
    Count,
    F,
    FloatField,
    Func,
    Min,
    Q,
    QuerySet,
    Sum,
)
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast
from django.utils import timezone

from . import breakers, limits
from .models import Priority, QueuePause, Run

MAX_MINUTES = 24 * 60
PERCENTILES = (0.5, 0.95, 0.99)


class Seconds(Func):
    """``end - start`` in seconds (a float), computed by the database itself. Django's portable
    ``F(end) - F(start)`` is a Python function call per row on SQLite (``django_timestamp_diff``):
    100,000 rows took half a second; ``julianday`` and ``EXTRACT(EPOCH …)`` are native."""

    output_field = FloatField()
    arity = 2

    def __init__(self, end: str, start: str) -> None:
        super().__init__(F(end), F(start))

    # Standard SQL (PostgreSQL): the interval's seconds, as a double rather than a numeric.
    template = "EXTRACT(EPOCH FROM (%(expressions)s))::double precision"
    arg_joiner = " - "

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(
            compiler,
            connection,
            template="((julianday(%(expressions)s)) * 86400.0)",
            arg_joiner=") - julianday(",
            **extra,
        )


WAIT = Seconds("started_at", "queued_at")
RUN_TIME = Seconds("finished_at", "started_at")


def _secs(value: timedelta | float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    return round(float(value), 3)


def _since(minutes: int, now: datetime | None = None) -> datetime:
    if not 1 <= minutes <= MAX_MINUTES:
        raise ValueError(f"minutes must be from 1 to {MAX_MINUTES}")
    return (now or timezone.now()) - timedelta(minutes=minutes)


def finished_since(since: datetime) -> QuerySet[Run]:
    # Bounded on both sides: SQLite's planner estimates a closed range as narrow and searches
    # run_finished_cover; with ">= since" alone it scanned another index in GROUP BY order.
    return Run.objects.filter(finished_at__gte=since, finished_at__lte=timezone.now() + timedelta(days=1))


def queue_status(minutes: int = 60) -> dict[str, Any]:
    """Per priority: counts of every waiting / running state (the whole table) and of the
    final states finished in the window, the oldest wait of a queued run, throughput (runs
    finished per minute in the window) and the average wait of runs started in it."""
    now = timezone.now()
    since = _since(minutes, now)
    counts: dict[str, dict[str, int]] = {p: {s: 0 for s in Run.Status.values} for p in Priority.values}
    for row in (
        Run.objects.filter(status__in=Run.NOT_FINAL)
        .values("priority", "status")
        .annotate(n=Count("id"))
        .order_by()
    ):
        counts.setdefault(row["priority"], {})[row["status"]] = row["n"]
    finished: dict[str, int] = {}
    for row in finished_since(since).values("priority", "status").annotate(n=Count("id")).order_by():
        counts.setdefault(row["priority"], {})[row["status"]] = row["n"]
        finished[row["priority"]] = finished.get(row["priority"], 0) + row["n"]
    oldest = {
        row["priority"]: row["oldest"]
        for row in Run.objects.ready().values("priority").annotate(oldest=Min("queued_at")).order_by()
    }
    waits = {
        row["priority"]: row["wait"]
        for row in Run.objects.filter(started_at__gte=since, started_at__isnull=False)
        .values("priority")
        .annotate(wait=Avg(WAIT))
        .order_by()
    }
    priorities = {}
    for p in counts:
        priorities[p] = {
            "counts": counts[p],
            "oldest_wait": _secs(now - oldest[p]) if p in oldest else None,
            "throughput_per_minute": round(finished.get(p, 0) / minutes, 3),
            "average_wait": _secs(waits.get(p)),
        }
    return {
        "window_minutes": minutes,
        "priorities": priorities,
        "pauses": [
            {
                "scope": q.scope,
                "value": q.value,
                "who": q.who,
                "reason": q.reason,
                "since": q.since.isoformat(),
            }
            for q in QueuePause.objects.all()
        ],
    }


def _number(path: tuple[str, ...]) -> Any:
    expr: Any = "usage"
    for part in path[:-1]:
        expr = KeyTransform(part, expr)
    return Cast(KeyTextTransform(path[-1], expr), FloatField())


def usage(minutes: int = 60) -> dict[str, Any]:
    """Requests per minute (runs started), tokens and cost (from the runs' usage as the gateway
    reports it: input, output, totalTokens, cost.total), success rate and average run time of
    the runs finished in the window."""
    since = _since(minutes)
    started = Run.objects.filter(started_at__gte=since).count()
    done = finished_since(since).aggregate(
        n=Count("id"),
        ok=Count("id", filter=Q(status=Run.Status.SUCCEEDED)),
        input=Sum(_number(("input",))),
        output=Sum(_number(("output",))),
        total=Sum(_number(("totalTokens",))),
        cost=Sum(_number(("cost", "total"))),
        run_time=Avg(RUN_TIME, filter=Q(started_at__isnull=False)),
    )
    return {
        "window_minutes": minutes,
        "requests_per_minute": round(started / minutes, 3),
        "finished": done["n"],
        "succeeded": done["ok"],
        "success_rate": round(done["ok"] / done["n"], 4) if done["n"] else None,
        "tokens": {
            "input": int(done["input"] or 0),
            "output": int(done["output"] or 0),
            "total": int(done["total"] or 0),
        },
        "cost": round(float(done["cost"] or 0), 6),
        "average_response_time": _secs(done["run_time"]),
    }


def error_counts(minutes: int = 60) -> dict[str, Any]:
    """Failed attempts of runs in the window by error class and by job (ad-hoc runs by kind),
    counted on the runs' final or latest error."""
    since = _since(minutes)
    qs = Run.objects.filter(Q(finished_at__gte=since) | Q(status__in=Run.NOT_FINAL, queued_at__gte=since))
    qs = qs.exclude(error_class="")
    by_class = {r["error_class"]: r["n"] for r in qs.values("error_class").annotate(n=Count("id")).order_by()}
    by_job: dict[str, dict[str, int]] = {}
    for r in qs.values("job_name", "kind", "error_class").annotate(n=Count("id")).order_by():
        name = r["job_name"] or f"({r['kind']})"
        by_job.setdefault(name, {})[r["error_class"]] = r["n"]
    return {
        "window_minutes": minutes,
        "total": sum(by_class.values()),
        "by_class": by_class,
        "by_job": by_job,
    }


def percentiles(qs: QuerySet[Run], expr: Any, ps: tuple[float, ...] = PERCENTILES) -> dict[str, float | None]:
    """Nearest-rank percentiles of ``expr`` over ``qs`` (rows where it is null left out)."""
    annotated = qs.annotate(_v=expr).filter(_v__isnull=False)
    n = annotated.count()
    out: dict[str, float | None] = {}
    for p in ps:
        label = f"p{round(p * 100):d}"
        if n == 0:
            out[label] = None
            continue
        k = max(0, math.ceil(p * n) - 1)
        out[label] = _secs(annotated.order_by("_v").values_list("_v", flat=True)[k])
    out["count"] = n
    return out


def performance(minutes: int = 60) -> dict[str, Any]:
    """p50 / p95 / p99 of the wait (queued → started) of runs started in the window and of the
    run time (started → finished) of runs finished in it."""
    since = _since(minutes)
    return {
        "window_minutes": minutes,
        "wait": percentiles(Run.objects.filter(started_at__gte=since), WAIT),
        "run_time": percentiles(finished_since(since).filter(started_at__isnull=False), RUN_TIME),
    }


def session_status() -> dict[str, Any]:
    """Per agent and provider: ok, rate limited (until when) or blocked (with the reason), from
    the shared limiter's keys, the breakers and the engine's blocked runs."""
    now = timezone.now()
    entries: list[dict[str, Any]] = []
    for key in limits.status():
        limited = key.blocked_seconds > 0
        entries.append(
            {
                "type": "rate_limit",
                "key": key.key,
                "state": "rate_limited" if limited else "ok",
                "until": (now + timedelta(seconds=key.blocked_seconds)).isoformat() if limited else None,
                "reason": f"{key.errors} rate-limit error(s) in a row" if limited else "",
                "rate_rpm": key.rate_rpm,
                "budget_rpm": key.budget.rpm if key.source else None,
            }
        )
    for breaker in breakers.states():
        is_open = breaker.state != "closed"
        entries.append(
            {
                "type": "breaker",
                "key": f"gateway:{breaker.gateway} provider:{breaker.provider}",
                "state": breaker.state,
                "until": (now + timedelta(seconds=breaker.retry_in)).isoformat() if is_open else None,
                "reason": f"{breaker.failures} consecutive failure(s)" if is_open else "",
            }
        )
    blocked = (
        Run.objects.filter(status=Run.Status.BLOCKED)
        .values("gateway", "agent", "provider")
        .annotate(n=Count("id"), since=Min("finished_at"))
        .order_by()
    )
    for row in blocked:
        reason = (
            Run.objects.filter(status=Run.Status.BLOCKED, gateway=row["gateway"], agent=row["agent"])
            .order_by("-id")
            .values_list("error", flat=True)
            .first()
        )
        entries.append(
            {
                "type": "blocked",
                "key": f"gateway:{row['gateway']} agent:{row['agent']} provider:{row['provider'] or '?'}",
                "state": "blocked",
                "until": None,
                "reason": reason or "provider session expired",
                "blocked_runs": row["n"],
            }
        )
    return {"entries": entries, "limiter_configured": bool(limits.configured())}
