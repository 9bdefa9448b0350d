"""/healthz: public, JSON, reports database, Redis and each enabled gateway; never leaks a token."""

from __future__ import annotations

import pytest
from django.test import override_settings

from agentflow.lib.redis import get_redis
from fleet import services
from fleet.models import Gateway
from tests.support.factories import make_gateway

SECRET_TOKEN = "health-test-token-7f3a9c"  # a marker to look for in responses


@pytest.fixture
def fresh_redis_pool():
    """``get_redis`` caches its pool: drop it around tests that point REDIS_URL elsewhere."""
    get_redis.cache_clear()
    yield
    get_redis.cache_clear()


def test_healthz_answers_without_login_with_every_section(client, db, redis_client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"status", "database", "redis", "gateways"}
    assert body["database"] == {"ok": True, "error": None}
    assert body["redis"] == {"ok": True, "error": None}
    assert body["gateways"] == []
    assert body["status"] == "ok"


def test_healthz_is_never_cached(client, db, redis_client):
    response = client.get("/healthz")
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]


def test_healthz_only_answers_get(client, db, redis_client):
    assert client.post("/healthz").status_code == 405


@pytest.mark.gateway
def test_a_connected_gateway_reports_ok_with_its_latency(client, gateway_row, redis_client):
    services.probe(gateway_row)
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    [summary] = body["gateways"]
    assert summary["name"] == "test-gw"
    assert summary["status"] == "connected"
    assert summary["error"] is None
    assert summary["latency_ms"] is not None and summary["latency_ms"] >= 0
    assert summary["version"] == "2026.9.6"
    assert summary["checked_at"]
    assert gateway_row.token not in response.content.decode()


def test_a_read_only_gateway_still_counts_as_healthy(client, db, redis_client):
    make_gateway(
        "ro", status=Gateway.Status.READ_ONLY, status_reason="the connection was not granted operator.write"
    )
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["gateways"][0]["error"] is None


def test_a_disconnected_gateway_degrades_the_report_and_shows_its_error(client, db, redis_client):
    make_gateway("good", status=Gateway.Status.CONNECTED, latency_ms=12.345)
    make_gateway(
        "bad",
        status=Gateway.Status.DISCONNECTED,
        status_reason="Cannot reach the gateway: connection refused.",
    )
    response = client.get("/healthz")
    assert response.status_code == 200  # degraded is not down: the web app itself works
    body = response.json()
    assert body["status"] == "degraded"
    by_name = {g["name"]: g for g in body["gateways"]}
    assert by_name["bad"]["status"] == "disconnected"
    assert by_name["bad"]["error"] == "Cannot reach the gateway: connection refused."
    assert by_name["good"]["error"] is None
    assert by_name["good"]["latency_ms"] == 12.3


def test_an_auth_failed_gateway_degrades_the_report(client, db, redis_client):
    make_gateway(
        "locked",
        status=Gateway.Status.AUTH_FAILED,
        status_reason="Authentication failed: the gateway rejected the token",
    )
    body = client.get("/healthz").json()
    assert body["status"] == "degraded"
    assert body["gateways"][0]["error"].startswith("Authentication failed")


def test_a_disabled_gateway_is_left_out(client, db, redis_client):
    make_gateway("off", status=Gateway.Status.DISCONNECTED, status_reason="switched off", enabled=False)
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["gateways"] == []


@pytest.mark.usefixtures("fresh_redis_pool")
def test_redis_down_makes_healthz_answer_503_down(client, db):
    make_gateway("good", status=Gateway.Status.CONNECTED)
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        get_redis.cache_clear()
        response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert body["redis"]["ok"] is False
    assert "ConnectionError" in body["redis"]["error"]
    assert body["database"] == {"ok": True, "error": None}


@pytest.mark.usefixtures("fresh_redis_pool")
def test_a_redis_password_never_appears_in_the_report(client, db):
    with override_settings(REDIS_URL="redis://:redis-pass-5d1e@127.0.0.1:1/0"):
        get_redis.cache_clear()
        response = client.get("/healthz")
    assert response.status_code == 503
    assert "redis-pass-5d1e" not in response.content.decode()


def test_the_token_never_appears_in_the_report(client, db, redis_client):
    make_gateway("a", token=SECRET_TOKEN, status=Gateway.Status.CONNECTED)
    make_gateway(
        "b",
        token=SECRET_TOKEN,
        status=Gateway.Status.AUTH_FAILED,
        status_reason="Authentication failed: the gateway rejected the token",
    )
    make_gateway(
        "c", token=SECRET_TOKEN, status=Gateway.Status.DISCONNECTED, status_reason="Cannot reach the gateway"
    )
    response = client.get("/healthz")
    assert len(response.json()["gateways"]) == 3
    assert SECRET_TOKEN not in response.content.decode()


@pytest.mark.usefixtures("fresh_redis_pool")
def test_healthz_names_no_internal_url_address_or_path(client, db, settings):
    make_gateway(
        "far",
        url="ws://127.0.0.1:18999/far",
        status=Gateway.Status.DISCONNECTED,
        status_reason="Cannot reach the gateway: connect to ws://127.0.0.1:18999/far failed "
        "([Errno 111] Connect call failed ('127.0.0.1', 18999)); see /srv/agentflow/var/log.",
    )
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        get_redis.cache_clear()
        response = client.get("/healthz")
    body = response.content.decode()
    assert response.status_code == 503
    data = response.json()
    # Statuses stay: Redis is down, the gateway disconnected, and each says why in words.
    assert data["status"] == "down"
    assert data["redis"]["ok"] is False and data["redis"]["error"].startswith("ConnectionError")
    assert data["gateways"][0]["status"] == "disconnected"
    assert data["gateways"][0]["error"].startswith("Cannot reach the gateway")
    for internal in ("redis://", "127.0.0.1", "ws://", "18999", "/srv/agentflow", str(settings.DATA_DIR)):
        assert internal not in body, internal
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        assert "sqlite3" not in body
