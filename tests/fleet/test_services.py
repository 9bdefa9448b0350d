"""fleet.services: connection outcomes recorded on the Gateway row, and registration."""

from __future__ import annotations

import pytest
from django.test import override_settings

from fleet import services
from fleet.models import Gateway
from openclaw import AuthError, ConnectionLostError, GatewayClient, SyncGatewayClient
from tests.support.factories import make_gateway
from tests.support.ports import closed_port

SECRET_TOKEN = "services-test-token-e2f871"  # a marker to look for in recorded reasons


# --- probe ---------------------------------------------------------------------------------------


@pytest.mark.gateway
def test_probe_records_status_version_latency_and_scopes(gateway_row):
    latency = services.probe(gateway_row)
    assert latency > 0
    gateway_row.refresh_from_db()
    assert gateway_row.status == Gateway.Status.CONNECTED
    assert gateway_row.status_reason == ""
    assert gateway_row.last_error_code == ""
    assert gateway_row.version == "2026.9.6"
    assert gateway_row.protocol == 4
    assert gateway_row.latency_ms == pytest.approx(latency)
    assert {"operator.read", "operator.write"} <= set(gateway_row.scopes)
    assert gateway_row.last_connected_at is not None
    assert gateway_row.last_checked_at is not None
    assert gateway_row.is_healthy and gateway_row.can_write


@pytest.mark.gateway
def test_probe_with_a_wrong_token_records_auth_failed_and_clears_the_latency(gateway_row):
    services.probe(gateway_row)
    Gateway.objects.filter(pk=gateway_row.pk).update(token=SECRET_TOKEN)
    gateway_row.refresh_from_db()
    with pytest.raises(AuthError):
        services.probe(gateway_row)
    gateway_row.refresh_from_db()
    assert gateway_row.status == Gateway.Status.AUTH_FAILED
    assert gateway_row.last_error_code == "AUTH_TOKEN_MISMATCH"
    assert "token" in gateway_row.status_reason
    assert SECRET_TOKEN not in gateway_row.status_reason
    assert gateway_row.latency_ms is None
    assert gateway_row.version == "2026.9.6"  # the last known version is kept


@pytest.mark.gateway
def test_probe_without_a_token_says_that_no_token_was_sent(gateway_row):
    Gateway.objects.filter(pk=gateway_row.pk).update(token="")
    gateway_row.refresh_from_db()
    with pytest.raises(AuthError):
        services.probe(gateway_row)
    gateway_row.refresh_from_db()
    assert gateway_row.status == Gateway.Status.AUTH_FAILED
    assert "token" in gateway_row.status_reason


@pytest.mark.gateway
def test_recording_a_status_never_overwrites_an_admin_edit(gateway_row):
    stale = Gateway.objects.get(pk=gateway_row.pk)
    Gateway.objects.filter(pk=gateway_row.pk).update(name="renamed", url="ws://127.0.0.1:1/")
    services.probe(stale)  # the stale instance still has the real URL and token
    fresh = Gateway.objects.get(pk=gateway_row.pk)
    assert fresh.status == Gateway.Status.CONNECTED
    assert (fresh.name, fresh.url) == ("renamed", "ws://127.0.0.1:1/")


# --- connected -----------------------------------------------------------------------------------


@pytest.mark.gateway
def test_connected_yields_a_working_client_and_records_connected(gateway_row):
    with services.connected(gateway_row) as client:
        assert isinstance(client, SyncGatewayClient)
        assert client.health()["ok"] is True
    gateway_row.refresh_from_db()
    assert gateway_row.status == Gateway.Status.CONNECTED
    assert gateway_row.version == "2026.9.6"


def test_connected_to_a_closed_port_raises_and_records_why(db):
    port = closed_port()
    gateway = make_gateway("nowhere", url=f"ws://127.0.0.1:{port}/", token=SECRET_TOKEN)
    with pytest.raises(ConnectionLostError), services.connected(gateway, connect_timeout=3):
        pytest.fail("the body must not run without a connection")
    gateway.refresh_from_db()
    assert gateway.status == Gateway.Status.DISCONNECTED
    assert gateway.last_error_code == "CONNECTION_LOST"
    assert "refused" in gateway.status_reason
    assert f"127.0.0.1:{port}" in gateway.status_reason
    assert gateway.status_reason.startswith("Cannot reach the gateway")
    assert SECRET_TOKEN not in gateway.status_reason
    assert gateway.last_checked_at is not None
    assert not gateway.is_healthy


# --- client options ------------------------------------------------------------------------------


def test_every_gateway_gets_one_device_identity_shared_by_all_clients(db, tmp_path):
    gateway = make_gateway("local", url="ws://127.0.0.1:18789/", token=SECRET_TOKEN)
    with override_settings(GATEWAY_DEVICE_DIR=tmp_path):
        client = services.async_client(gateway)
        other = services.async_client(gateway)
    assert isinstance(client, GatewayClient)
    assert client.name == "local"
    assert client.device is not None and client.device.device_id == other.device.device_id
    assert oct((tmp_path / f"gateway-{gateway.pk}.json").stat().st_mode & 0o777) == "0o600"


def test_remote_gateways_get_a_device_identity_that_survives_restarts(db, tmp_path):
    gateway = make_gateway("remote", url="wss://gw.example.test/", token=SECRET_TOKEN)
    with override_settings(GATEWAY_DEVICE_DIR=tmp_path):
        first = services.client_options(gateway)["device"]
        second = services.client_options(gateway)["device"]
    assert (tmp_path / f"gateway-{gateway.pk}.json").exists()
    assert first.device_id == second.device_id


# --- register_gateway ----------------------------------------------------------------------------


def test_register_gateway_creates_the_gateway(db):
    gateway, outcome = services.register_gateway("demo", "ws://127.0.0.1:18789/", SECRET_TOKEN)
    assert outcome == "registered"
    assert (gateway.name, gateway.url, gateway.token, gateway.enabled) == (
        "demo",
        "ws://127.0.0.1:18789/",
        SECRET_TOKEN,
        True,
    )


def test_register_gateway_twice_with_the_same_values_changes_nothing(db):
    first, _ = services.register_gateway("demo", "ws://127.0.0.1:18789/", SECRET_TOKEN)
    before = Gateway.objects.get(pk=first.pk).updated_at
    second, outcome = services.register_gateway("demo", "ws://127.0.0.1:18789/", SECRET_TOKEN)
    assert outcome == "up to date"
    assert second.pk == first.pk
    assert Gateway.objects.count() == 1
    assert Gateway.objects.get(pk=first.pk).updated_at == before


def test_register_gateway_updates_the_url_and_token_and_re_enables(db):
    first, _ = services.register_gateway("demo", "ws://127.0.0.1:18789/", SECRET_TOKEN)
    Gateway.objects.filter(pk=first.pk).update(enabled=False)
    gateway, outcome = services.register_gateway("demo", "ws://127.0.0.1:18790/", "a-new-token")
    assert outcome == "updated"
    gateway.refresh_from_db()
    assert (gateway.url, gateway.token, gateway.enabled) == ("ws://127.0.0.1:18790/", "a-new-token", True)
    assert Gateway.objects.count() == 1


def test_concurrent_first_use_agrees_on_one_device_identity(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from openclaw import DeviceIdentity

    path = tmp_path / "gateway-9.json"
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: DeviceIdentity.load_or_create(path).device_id, range(16)))
    assert len(ids) == 1
    assert DeviceIdentity.load_or_create(path).device_id in ids
    assert [p.name for p in tmp_path.iterdir()] == ["gateway-9.json"]  # no leftovers


@pytest.mark.gateway
def test_a_run_started_by_one_connection_can_be_aborted_from_another(gateway_row, tmp_path):
    import time
    import uuid

    key = f"agent:researcher:abort-{uuid.uuid4().hex[:6]}"
    with override_settings(GATEWAY_DEVICE_DIR=tmp_path):
        services.send_chat(
            gateway_row, key, "[[slow]] one two three four five six seven eight", idempotency_key=key
        )
        deadline = time.monotonic() + 30
        result = {}
        while time.monotonic() < deadline:
            result = services.abort_chat(gateway_row, key)
            if result.get("aborted"):
                break
            time.sleep(0.5)  # the run may still be preparing its workspace
    assert result.get("aborted") is True, result
