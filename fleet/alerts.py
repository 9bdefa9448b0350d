"""The fleet's alert conditions, registered with the engine's rules (scheduler.alert_rules) in
FleetConfig.ready(): the engine knows no gateway (ARCHITECTURE.md rule 6).

- ``gateway-latency``: per enabled gateway, the p95 (nearest rank) of the health check's call
  latency (BATCH-005's ``config.get``, HealthSample) over the window, when at least
  ``min_samples`` samples were taken in it; one query on ``health_gw_time`` per gateway;
- ``gateway-down``: an enabled gateway disconnected, refusing our token or incompatible, at once
  (a gateway never checked yet is not down).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import timedelta

from scheduler.alert_rules import Condition, Context, Finding, register_condition
from scheduler.models import AlertRule

from .models import Gateway, HealthSample

DOWN = (Gateway.Status.DISCONNECTED, Gateway.Status.AUTH_FAILED, Gateway.Status.INCOMPATIBLE)


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def gateway_latency(rule: AlertRule, ctx: Context) -> Iterable[Finding]:
    window = rule.window_seconds or 300
    threshold_ms = 1000 * (rule.threshold if rule.threshold is not None else 5.0)
    since = ctx.now - timedelta(seconds=window)
    found = []
    for gateway in Gateway.objects.enabled().only("pk", "name"):
        latencies = [
            float(v)
            for v in HealthSample.objects.filter(
                gateway=gateway, checked_at__gte=since, latency_ms__isnull=False
            )
            .order_by("-checked_at")
            .values_list("latency_ms", flat=True)[:1000]
            if v is not None
        ]
        if not latencies or len(latencies) < rule.min_samples:
            continue
        p95 = nearest_rank(latencies, 0.95)
        if p95 > threshold_ms:
            found.append(
                Finding(
                    gateway.name,
                    f"gateway {gateway.name}: call latency p95 {p95 / 1000:.1f} s over the last "
                    f"{window // 60} min ({len(latencies)} health checks; "
                    f"threshold {threshold_ms / 1000:g} s)",
                    round(p95 / 1000, 3),
                )
            )
    return found


def gateway_down(rule: AlertRule, ctx: Context) -> Iterable[Finding]:
    return [
        Finding(
            g.name,
            f"gateway {g.name} is {g.get_status_display().lower()}"
            + (f": {g.status_reason[:300]}" if g.status_reason else ""),
        )
        for g in Gateway.objects.enabled().filter(status__in=DOWN).order_by("name")
    ]


def register() -> None:
    register_condition(
        Condition(
            "gateway-latency",
            "Gateway call latency p95",
            "s",
            gateway_latency,
            threshold=5.0,
            window_seconds=300,
            min_samples=3,
        )
    )
    register_condition(
        Condition("gateway-down", "A gateway down", "", gateway_down, level=AlertRule.Level.ERROR)
    )
