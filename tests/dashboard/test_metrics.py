"""/metrics: Prometheus text built from the database at scrape time, optionally IP-restricted."""

from __future__ import annotations

import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from fleet import services
from fleet.models import AgentSession, Gateway
from tests.support.factories import make_agent, make_gateway, make_session

SECRET_TOKEN = "metrics-test-token-c41b2e"  # a marker to look for in responses


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_answers_without_login_in_prometheus_text(client, db):
    make_gateway("alpha", status=Gateway.Status.CONNECTED, latency_ms=250.0)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    body = response.content.decode()
    assert 'gateway_up{gateway="alpha"} 1.0' in body
    assert 'gateway_latency_seconds{gateway="alpha"} 0.25' in body
    assert "# TYPE gateway_up gauge" in body


@pytest.mark.gateway
def test_a_probed_gateway_reports_up_and_its_measured_latency(client, gateway_row):
    latency_ms = services.probe(gateway_row)
    body = client.get("/metrics").content.decode()
    values = samples(body)
    assert values[("gateway_up", (("gateway", "test-gw"),))] == 1.0
    assert values[("gateway_status", (("gateway", "test-gw"), ("status", "connected")))] == 1.0
    assert values[("gateway_latency_seconds", (("gateway", "test-gw"),))] == pytest.approx(latency_ms / 1000)
    assert gateway_row.token not in body


def test_an_unhealthy_gateway_reports_down_without_a_latency(client, db):
    make_gateway("broken", status=Gateway.Status.DISCONNECTED, status_reason="connection refused")
    make_gateway("ro", status=Gateway.Status.READ_ONLY)
    values = samples(client.get("/metrics").content.decode())
    assert values[("gateway_up", (("gateway", "broken"),))] == 0.0
    assert values[("gateway_up", (("gateway", "ro"),))] == 1.0
    assert values[("gateway_status", (("gateway", "broken"), ("status", "disconnected")))] == 1.0
    assert ("gateway_latency_seconds", (("gateway", "broken"),)) not in values


def test_disabled_gateways_are_not_exported(client, db):
    make_gateway("off", status=Gateway.Status.CONNECTED, enabled=False)
    body = client.get("/metrics").content.decode()
    assert 'gateway="off"' not in body


def test_agents_and_sessions_are_counted_per_gateway(client, db):
    gw = make_gateway("alpha", status=Gateway.Status.CONNECTED)
    main = make_agent(gw, "main")
    make_agent(gw, "writer")
    make_session(gw, "s1", main, status=AgentSession.Status.ACTIVE)
    make_session(gw, "s2", main, status=AgentSession.Status.IDLE)
    make_session(gw, "s3", main, status=AgentSession.Status.IDLE)
    values = samples(client.get("/metrics").content.decode())
    assert values[("agentflow_agents", (("gateway", "alpha"),))] == 2.0
    assert values[("agentflow_sessions", (("gateway", "alpha"), ("status", "active")))] == 1.0
    assert values[("agentflow_sessions", (("gateway", "alpha"), ("status", "idle")))] == 2.0


@override_settings(METRICS_ALLOWED_IPS=["10.0.0.5"])
def test_metrics_restricted_to_other_addresses_answers_403(client, db):
    make_gateway("alpha", status=Gateway.Status.CONNECTED)
    response = client.get("/metrics", REMOTE_ADDR="192.0.2.7")
    assert response.status_code == 403
    body = response.content.decode()
    assert "gateway_up" not in body
    assert "AGENTFLOW_METRICS_ALLOWED_IPS" in body


@override_settings(METRICS_ALLOWED_IPS=["10.0.0.5", "127.0.0.1"])
def test_metrics_restricted_to_the_scraper_address_answers(client, db):
    make_gateway("alpha", status=Gateway.Status.CONNECTED)
    response = client.get("/metrics", REMOTE_ADDR="10.0.0.5")
    assert response.status_code == 200
    assert 'gateway_up{gateway="alpha"}' in response.content.decode()


def test_metrics_only_answers_get(client, db):
    assert client.post("/metrics").status_code == 405


def test_the_token_never_appears_in_the_metrics(client, db):
    make_gateway("a", token=SECRET_TOKEN, status=Gateway.Status.CONNECTED, latency_ms=5.0)
    make_gateway(
        "b", token=SECRET_TOKEN, status=Gateway.Status.AUTH_FAILED, status_reason="Authentication failed"
    )
    body = client.get("/metrics").content.decode()
    assert 'gateway="a"' in body and 'gateway="b"' in body
    assert SECRET_TOKEN not in body


# --- Who may scrape ---------------------------------------------------------------------------

METRICS_TOKEN = "scrape-token-9d0c7e1b5a"


@override_settings(PRODUCTION=True, METRICS_TOKEN="", METRICS_ALLOWED_IPS=[])
def test_production_with_nothing_configured_answers_403_saying_how_to_enable(client, db):
    make_gateway("alpha", status=Gateway.Status.CONNECTED)
    response = client.get("/metrics")  # even from loopback
    assert response.status_code == 403
    body = response.content.decode()
    assert "gateway_up" not in body
    assert "AGENTFLOW_METRICS_TOKEN" in body and "AGENTFLOW_METRICS_ALLOWED_IPS" in body


@override_settings(PRODUCTION=True, METRICS_TOKEN=METRICS_TOKEN, METRICS_ALLOWED_IPS=[])
def test_production_answers_a_scraper_with_the_bearer_token(client, db):
    make_gateway("alpha", status=Gateway.Status.CONNECTED)
    ok = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, REMOTE_ADDR="192.0.2.7")
    assert ok.status_code == 200
    assert 'gateway_up{gateway="alpha"}' in ok.content.decode()
    for header in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {METRICS_TOKEN}"}):
        denied = client.get("/metrics", headers=header, REMOTE_ADDR="192.0.2.7")
        assert denied.status_code == 403, header
        assert "gateway_up" not in denied.content.decode()
        assert METRICS_TOKEN not in denied.content.decode()


@override_settings(PRODUCTION=True, METRICS_TOKEN="", METRICS_ALLOWED_IPS=["10.1.0.0/16", "192.0.2.9"])
def test_production_answers_addresses_and_networks_of_the_allowlist(client, db):
    assert client.get("/metrics", REMOTE_ADDR="10.1.42.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.9").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.2.0.1").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403


@override_settings(PRODUCTION=False, METRICS_TOKEN="", METRICS_ALLOWED_IPS=[])
def test_outside_production_metrics_stay_open_on_loopback_only(client, db):
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 403


# --- Series exist before the first event ----------------------------------------------------


def test_counters_with_known_labels_are_exported_at_zero_on_a_fresh_install(client, db, redis_prefix):
    from scheduler import registry

    make_gateway("fresh", status=Gateway.Status.CONNECTED)
    values = samples(client.get("/metrics").content.decode())
    batches = registry.batch_ids()
    assert len(batches) >= 5
    for batch in batches:
        assert values[("batch_error_count_total", (("batch", batch),))] == 0.0
        for status in ("ok", "error", "skipped", "lost"):
            assert values[("batch_execution_count_total", (("batch", batch), ("status", status)))] == 0.0
        assert ("batch_execution_count_total", (("batch", batch), ("status", "running"))) not in values
        assert values[("batch_execution_duration_seconds_count", (("batch", batch),))] == 0.0
    for status in Gateway.Status.values:
        expected = 1.0 if status == "connected" else 0.0
        assert values[("gateway_status", (("gateway", "fresh"), ("status", status)))] == expected
    for status in AgentSession.Status.values:
        assert values[("agentflow_sessions", (("gateway", "fresh"), ("status", status)))] == 0.0
    assert values[("agentflow_agents", (("gateway", "fresh"),))] == 0.0


def test_a_recorded_error_counts_on_top_of_the_zero_series(client, db, redis_prefix):
    from scheduler import metrics as batch_metrics

    batch_metrics.record("BATCH-002", "error", 0.2)
    values = samples(client.get("/metrics").content.decode())
    assert values[("batch_error_count_total", (("batch", "BATCH-002"),))] == 1.0
    assert values[("batch_error_count_total", (("batch", "BATCH-001"),))] == 0.0
    assert values[("batch_execution_count_total", (("batch", "BATCH-002"), ("status", "error")))] == 1.0
