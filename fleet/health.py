"""The /healthz report: database, Redis and every enabled gateway's last known state."""

from __future__ import annotations

from typing import Any

from django.db import connection

from agentflow.lib.redis import get_redis

from .models import Gateway


def check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def check_redis() -> str | None:
    try:
        get_redis().ping()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def gateway_summary(gateway: Gateway) -> dict[str, Any]:
    return {
        "name": gateway.name,
        "status": gateway.status,
        "latency_ms": round(gateway.latency_ms, 1) if gateway.latency_ms is not None else None,
        "version": gateway.version or None,
        "error": gateway.status_reason or None if not gateway.is_healthy else None,
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
