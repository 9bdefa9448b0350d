"""The Prometheus registry behind /metrics, built at scrape time.

Apps register collectors in ``AppConfig.ready()``; each reads the database or Redis, so every
web instance reports the same numbers (no per-process counters).
"""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest
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


def _in_allowlist(address: str, allowed: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in allowed:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:  # a malformed entry matches nothing (the settings list stays as given)
            continue
    return False


def _bearer(request: HttpRequest) -> str:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def access_problem(request: HttpRequest) -> str | None:
    """Why ``request`` may not read /metrics (None when it may).

    A scraper is let in by ``Authorization: Bearer <METRICS_TOKEN>`` or a client address in
    ``METRICS_ALLOWED_IPS`` (addresses or networks). With neither configured, production lets
    nobody in and development and tests let loopback clients in.
    """
    token: str = settings.METRICS_TOKEN
    allowed: list[str] = settings.METRICS_ALLOWED_IPS
    address = request.META.get("REMOTE_ADDR", "")
    if token and hmac.compare_digest(_bearer(request).encode(), token.encode()):
        return None
    if allowed and _in_allowlist(address, allowed):
        return None
    if token or allowed:
        return (
            "metrics are restricted: send Authorization: Bearer <AGENTFLOW_METRICS_TOKEN> "
            "or scrape from an address in AGENTFLOW_METRICS_ALLOWED_IPS"
        )
    if settings.PRODUCTION:
        return (
            "metrics are off until you choose who may read them: set AGENTFLOW_METRICS_TOKEN "
            "(scrapers send Authorization: Bearer <token>) or AGENTFLOW_METRICS_ALLOWED_IPS "
            "(comma-separated addresses or networks)"
        )
    if not _in_allowlist(address, ["127.0.0.0/8", "::1/128"]):
        return (
            "outside production, metrics answer loopback clients only: set AGENTFLOW_METRICS_TOKEN "
            "or AGENTFLOW_METRICS_ALLOWED_IPS to let others in"
        )
    return None
