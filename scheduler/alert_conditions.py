"""The engine's alert conditions (scheduler.alert_rules), read from what the queue already keeps.

Each is one grouped query on an indexed column or a Redis read; none scans the runs table:

- ``error-rate``: failed + lost of the runs finished in the window (the ``run_finished_cover``
  index), over succeeded + failed + lost (cancelled and aborted are an operator's doing), when
  at least ``min_samples`` runs finished (default 20: 1 failure in 3 runs at night is not 33 %
  worth waking anyone);
- ``queue-length``: queued runs per priority (the ``run_ready`` partial index);
- ``memory-host``: the host's memory in use (psutil, i.e. /proc/meminfo);
- ``provider-blocked``: open ProviderBlock episodes, at once (fleet also fires it the moment it
  blocks);
- ``rate-limited``: a limiter key rate limited (backoff in force, or its streak of rate-limit
  errors not yet ended by a success) for longer than the threshold;
- ``job-failing``: a job's last N final runs all failed; raised by ``on_run_final`` the moment
  the N-th ends (scheduler/alerts.py), so the evaluator only re-checks the open ones;
- ``breaker-open``: a circuit breaker open or half-open.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from datetime import timedelta

import psutil
from django.conf import settings
from django.db.models import Count, OuterRef, Subquery
from redis.exceptions import RedisError

from . import breakers, limits, stats
from .alert_rules import Condition, Context, Finding, register_condition
from .models import AlertRule, Job, ProviderBlock, Run

FAILED = (Run.Status.FAILED, Run.Status.LOST)
COUNTED = (Run.Status.SUCCEEDED, *FAILED)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def error_rate(rule: AlertRule, ctx: Context) -> Iterable[Finding]:
    window = rule.window_seconds or 300
    since = ctx.now - timedelta(seconds=window)
    by_status = {
        row["status"]: row["n"]
        for row in stats.finished_since(since).values("status").annotate(n=Count("id")).order_by()
    }
    total = sum(by_status.values())
    failed = sum(by_status.get(s, 0) for s in FAILED)
    if total == 0 or total < rule.min_samples:
        return []
    rate = 100.0 * failed / total
    threshold = rule.threshold if rule.threshold is not None else 1.0
    if rate <= threshold:
        return []
    return [
        Finding(
            "",
            f"error rate {rate:.1f} % over the last {_duration(window)}: {failed} of {total} finished runs "
            f"failed or were lost (threshold {threshold:g} %)",
            round(rate, 3),
        )
    ]


def queue_length(rule: AlertRule, ctx: Context) -> Iterable[Finding]:
    threshold = rule.threshold if rule.threshold is not None else 1000
    rows = Run.objects.ready().values("priority").annotate(n=Count("id")).order_by()
    return [
        Finding(
            row["priority"],
            f"{row['n']:,} runs queued at priority {row['priority']} (threshold {threshold:,.0f})",
            float(row["n"]),
        )
        for row in rows
        if row["n"] > threshold
    ]


def memory_host(rule: AlertRule, ctx: Context) -> Iterable[Finding]:
    memory = psutil.virtual_memory()
    threshold = rule.threshold if rule.threshold is not None else 80.0
    if memory.percent <= threshold:
        return []
    gib = 1024**3
    return [
        Finding(
            socket.gethostname(),
            f"host memory {memory.percent:.0f} % in use ({(memory.total - memory.available) / gib:.1f} of "
            f"{memory.total / gib:.1f} GiB; threshold {threshold:g} %)",
            memory.percent,
        )
    ]


def provider_blocked(rule: AlertRule, ctx: Context) -> Iterable[Finding]:
    return [
        Finding(
            f"{b.gateway}:{b.agent}:{b.provider or '-'}",
            f"provider {b.provider or '?'} of agent {b.agent} (gateway {b.gateway}) is blocked: "
            f"{b.reason[:300]}; re-authenticate, then unblock",
        )
        for b in ProviderBlock.objects.open().order_by("started_at")
    ]


def rate_limited(rule: AlertRule, ctx: Context) -> Iterable[Finding] | None:
    threshold = rule.threshold if rule.threshold is not None else 900.0
    try:
        keys = limits.status()
    except RedisError:
        return None  # the limiter lives in Redis: cannot tell, the open alerts stay
    return [
        Finding(
            k.key,
            f"{k.key} rate limited for {_duration(k.limited_seconds)} "
            f"({k.errors} rate-limit error(s) in a row"
            + (f", blocked {k.blocked_seconds:.0f} s more" if k.blocked_seconds else "")
            + f"; threshold {_duration(threshold)})",
            k.limited_seconds,
        )
        for k in keys
        if k.limited_seconds > threshold
    ]


def breaker_open(rule: AlertRule, ctx: Context) -> Iterable[Finding] | None:
    try:
        states = breakers.states()
    except RedisError:
        return None
    return [
        Finding(
            f"{s.gateway}:{s.provider}",
            f"circuit breaker of gateway {s.gateway}, provider {s.provider} is "
            f"{s.state.replace('_', '-')} after {s.failures} consecutive failure(s)"
            + (f"; next probe in {s.retry_in:.0f} s" if s.retry_in else ""),
            float(s.failures),
        )
        for s in states
        if s.state != breakers.CLOSED
    ]


def failure_streak(job: Job, threshold: int) -> list[str]:
    """The statuses of ``job``'s last ``threshold`` counted final runs, newest first."""
    return list(
        Run.objects.filter(job=job, status__in=COUNTED)
        .order_by("-finished_at", "-id")
        .values_list("status", flat=True)[:threshold]
    )


def job_threshold(rule: AlertRule | None) -> int:
    if rule is None or rule.threshold is None:
        return settings.AGENTFLOW_JOB_FAILURE_ALERT_AFTER
    return max(1, int(rule.threshold))


def job_failing(rule: AlertRule, ctx: Context) -> Iterable[Finding]:
    """Re-checks the open alerts only (raised by scheduler.alerts.on_run_final the moment a
    streak reaches N, and resolved there by the next success): each still holds while its
    job's latest counted run failed; a deleted job's alert resolves. One query (a correlated
    subquery per open job on ``run_job``), however many jobs there are."""
    open_alerts = ctx.open.get(rule.key, {})
    if not open_alerts:
        return []
    latest = Run.objects.filter(job=OuterRef("pk"), status__in=COUNTED).order_by("-finished_at", "-id")
    failing = set(
        Job.objects.filter(name__in=list(open_alerts))
        .annotate(last=Subquery(latest.values("status")[:1]))
        .filter(last__in=FAILED)
        .values_list("name", flat=True)
    )
    return [
        Finding(name, alert.message, alert.value) for name, alert in open_alerts.items() if name in failing
    ]


def register() -> None:
    for condition in (
        Condition(
            "error-rate",
            "Error rate of finished runs",
            "%",
            error_rate,
            level=AlertRule.Level.ERROR,
            threshold=1.0,
            window_seconds=300,
            min_samples=20,
            doc="failed + lost over succeeded + failed + lost, when at least min_samples runs finished",
        ),
        Condition(
            "queue-length",
            "Queued runs of one priority",
            "runs",
            queue_length,
            threshold=1000,
        ),
        Condition("memory-host", "Host memory in use", "%", memory_host, threshold=80),
        Condition(
            "provider-blocked",
            "A provider blocked (login expired)",
            "",
            provider_blocked,
            level=AlertRule.Level.CRITICAL,
            cooldown_seconds=0,
        ),
        Condition(
            "rate-limited",
            "Time a limiter key has been rate limited",
            "s",
            rate_limited,
            threshold=900,
        ),
        Condition(
            "job-failing",
            "Final failures of one job in a row",
            "runs",
            job_failing,
            holds_at="≥",
            level=AlertRule.Level.ERROR,
            threshold=float(settings.AGENTFLOW_JOB_FAILURE_ALERT_AFTER),  # the default (3)
            cooldown_seconds=0,
        ),
        Condition("breaker-open", "A circuit breaker open", "", breaker_open, level=AlertRule.Level.ERROR),
    ):
        register_condition(condition)
