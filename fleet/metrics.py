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
        gateways = list(Gateway.objects.enabled())
        for gw in gateways:
            up.add_metric([gw.name], 1 if gw.is_healthy else 0)
            # Every status, 1 for the current one: a rule on status="auth_failed" has a series
            # before the first failure.
            for value in Gateway.Status.values:
                status.add_metric([gw.name, value], 1 if gw.status == value else 0)
            if gw.latency_ms is not None:
                latency.add_metric([gw.name], gw.latency_ms / 1000)
        yield up
        yield status
        yield latency

        agent_counts = {gw.name: 0 for gw in gateways}
        for row in Agent.objects.values("gateway__name").annotate(n=Count("id")):
            agent_counts[row["gateway__name"]] = row["n"]
        agents = GaugeMetricFamily("agentflow_agents", "Agents known per gateway", labels=["gateway"])
        for name, n in agent_counts.items():
            agents.add_metric([name], n)
        yield agents

        session_counts = {(gw.name, s): 0 for gw in gateways for s in AgentSession.Status.values}
        for row in AgentSession.objects.values("gateway__name", "status").annotate(n=Count("id")):
            session_counts[(row["gateway__name"], row["status"])] = row["n"]
        sessions = GaugeMetricFamily("agentflow_sessions", "Sessions by status", labels=["gateway", "status"])
        for (name, value), n in session_counts.items():
            sessions.add_metric([name, value], n)
        yield sessions
