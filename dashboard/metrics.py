"""Prometheus exposition, built at scrape time from the database and Redis so that every
web instance reports the same numbers (no per-process counters)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db.models import Count
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .models import Agent, AgentSession, Gateway
from .redis import get_redis, key

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_collectors: list[Collector] = []


def register(collector: Collector) -> None:
    """Other apps (the scheduler's batch metrics) add their collectors here."""
    _collectors.append(collector)


class FleetCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "gateway_up", "1 if the gateway is connected (or read-only)", labels=["gateway"]
        )
        status = GaugeMetricFamily("gateway_status", "Current gateway status", labels=["gateway", "status"])
        latency = GaugeMetricFamily(
            "gateway_latency_seconds", "Last measured gateway latency", labels=["gateway"]
        )
        for gw in Gateway.objects.enabled():
            up.add_metric([gw.name], 1 if gw.is_healthy else 0)
            status.add_metric([gw.name, gw.status], 1)
            if gw.latency_ms is not None:
                latency.add_metric([gw.name], gw.latency_ms / 1000)
        yield up
        yield status
        yield latency

        agents = GaugeMetricFamily("agentflow_agents", "Agents known per gateway", labels=["gateway"])
        for row in Agent.objects.values("gateway__name").annotate(n=Count("id")):
            agents.add_metric([row["gateway__name"]], row["n"])
        yield agents

        sessions = GaugeMetricFamily("agentflow_sessions", "Sessions by status", labels=["gateway", "status"])
        for row in AgentSession.objects.values("gateway__name", "status").annotate(n=Count("id")):
            sessions.add_metric([row["gateway__name"], row["status"]], row["n"])
        yield sessions

        dropped = CounterMetricFamily(
            "agentflow_ws_dropped", "Dashboard websocket messages lost between the channel layer and a page"
        )
        # Redis down: /healthz reports it; still report everything else here.
        with contextlib.suppress(Exception):
            dropped.add_metric([], float(get_redis().get(key("metrics", "ws_dropped")) or 0))
        yield dropped


def render() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector())
    for collector in _collectors:
        registry.register(collector)
    return generate_latest(registry)
