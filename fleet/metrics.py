"""The fleet's Prometheus metrics (gateways, agents, sessions), read from the database at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .models import Agent, AgentSession, Gateway


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
