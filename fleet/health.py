"""The /healthz report: database, Redis and every enabled gateway's last known state.

The report is public (load balancers probe it without a login), so it names no internal
address: URLs, ``host:port`` pairs, IP addresses and file paths in error texts are replaced by
placeholders (:func:`redact`); the full error stays in the logs of the process that met it.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.db import connection

from agentflow.lib.redis import get_redis

from .models import Gateway

_INTERNAL = [
    (re.compile(r"\(\s*'[^']*'\s*,\s*\d+\s*\)"), "(<address>)"),  # Python's ('host', port)
    (re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE), "<url>"),
    (re.compile(r"\[[0-9a-f:.]+\](?::\d+)?", re.IGNORECASE), "<address>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<address>"),
    (re.compile(r"\b[a-z0-9-]+(?:\.[a-z0-9-]+)*:\d{2,5}\b", re.IGNORECASE), "<address>"),
    (re.compile(r"(?<![\w<])/[\w.@~-]+(?:/[\w.@~-]*)+"), "<path>"),
]


def redact(text: str) -> str:
    """``text`` without the internal URLs, addresses and paths it may hold."""
    for value in (settings.REDIS_URL, str(settings.DATABASES["default"].get("NAME") or "")):
        if value:
            text = text.replace(value, "<internal>")
    for pattern, placeholder in _INTERNAL:
        text = pattern.sub(placeholder, text)
    return text


def check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return redact(f"{type(exc).__name__}: {exc}")
    return None


def check_redis() -> str | None:
    try:
        get_redis().ping()
    except Exception as exc:
        return redact(f"{type(exc).__name__}: {exc}")
    return None


def gateway_summary(gateway: Gateway) -> dict[str, Any]:
    error = gateway.status_reason if not gateway.is_healthy else ""
    if error and gateway.url:
        error = error.replace(gateway.url, "<url>")
    return {
        "name": gateway.name,
        "status": gateway.status,
        "latency_ms": round(gateway.latency_ms, 1) if gateway.latency_ms is not None else None,
        "version": gateway.version or None,
        "error": redact(error) or None,
        "checked_at": gateway.last_checked_at.isoformat() if gateway.last_checked_at else None,
    }


def report() -> dict[str, Any]:
    db_error = check_database()
    redis_error = check_redis()
    gateways = [] if db_error else [gateway_summary(g) for g in Gateway.objects.enabled()]
    if db_error or redis_error:
        status = "down"
    elif any(g["status"] not in Gateway.HEALTHY for g in gateways):
        status = "degraded"
    else:
        status = "ok"
    return {
        "status": status,
        "database": {"ok": db_error is None, "error": db_error},
        "redis": {"ok": redis_error is None, "error": redis_error},
        "gateways": gateways,
    }
