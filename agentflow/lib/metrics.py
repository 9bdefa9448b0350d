"""The Prometheus registry behind /metrics, built at scrape time.

Apps register collectors in ``AppConfig.ready()``; each reads the database or Redis, so every
web instance reports the same numbers (no per-process counters).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_collectors: list[Collector] = []


def register(collector: Collector) -> Collector:
    """Add a collector once (a second registration of the same class replaces the first)."""
    _collectors[:] = [c for c in _collectors if type(c) is not type(collector)]
    _collectors.append(collector)
    return collector


def render() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    for collector in _collectors:
        registry.register(collector)
    return generate_latest(registry)
