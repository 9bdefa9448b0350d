"""Management commands used by ``make run``, deploy scripts and operators."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from fleet.models import Gateway
from tests.support.factories import make_gateway
from tests.support.ports import closed_port

SECRET_TOKEN = "command-test-token-9d04aa"  # markers to look for in output
OTHER_TOKEN = "command-test-token-other-31c7"


def run(*args, **options) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue() + err.getvalue()


@pytest.fixture
def clean_env(monkeypatch):
    for name in (
        "AGENTFLOW_ADMIN_USER",
        "AGENTFLOW_ADMIN_PASSWORD",
        "AGENTFLOW_GATEWAY_URL",
        "AGENTFLOW_GATEWAY_TOKEN",
        "AGENTFLOW_GATEWAY_NAME",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# --- ensure_admin --------------------------------------------------------------------------------


def test_ensure_admin_creates_the_superuser_from_the_environment(db, clean_env):
    clean_env.setenv("AGENTFLOW_ADMIN_USER", "ops")
    clean_env.setenv("AGENTFLOW_ADMIN_PASSWORD", "a-long-chosen-password")
    output = run("ensure_admin")
    user = get_user_model().objects.get(username="ops")
    assert user.is_superuser and user.is_staff and user.is_active
    assert user.check_password("a-long-chosen-password")
    assert "a-long-chosen-password" not in output
    assert "Created admin user 'ops'" in output


def test_ensure_admin_without_a_password_prints_a_generated_one_only_once(db, clean_env):
    first = run("ensure_admin")
    match = re.search(r"Created admin user 'admin' with password: (\S+)", first)
    assert match, first
    password = match.group(1)
    user = get_user_model().objects.get(username="admin")
    assert user.is_superuser
    assert user.check_password(password)

    second = run("ensure_admin")
    assert password not in second
    assert "exists" in second
    user.refresh_from_db()
    assert user.check_password(password)  # left alone


def test_ensure_admin_updates_the_password_when_the_environment_changes_it(db, clean_env):
    clean_env.setenv("AGENTFLOW_ADMIN_PASSWORD", "first-chosen-password")
    run("ensure_admin")
    clean_env.setenv("AGENTFLOW_ADMIN_PASSWORD", "second-chosen-password")
    output = run("ensure_admin")
    assert "password updated" in output
    assert "second-chosen-password" not in output
    assert get_user_model().objects.get(username="admin").check_password("second-chosen-password")
    assert get_user_model().objects.count() == 1


# --- register_gateway ----------------------------------------------------------------------------


def test_register_gateway_creates_then_is_idempotent_then_updates(db, clean_env):
    clean_env.setenv("AGENTFLOW_GATEWAY_TOKEN", SECRET_TOKEN)
    first = run("register_gateway", "--name", "demo", "--url", "ws://127.0.0.1:18789/")
    assert "registered" in first
    gateway = Gateway.objects.get(name="demo")
    assert (gateway.url, gateway.token, gateway.enabled) == ("ws://127.0.0.1:18789/", SECRET_TOKEN, True)

    again = run("register_gateway", "--name", "demo", "--url", "ws://127.0.0.1:18789/")
    assert "up to date" in again
    assert Gateway.objects.count() == 1

    clean_env.setenv("AGENTFLOW_GATEWAY_TOKEN", OTHER_TOKEN)
    Gateway.objects.filter(pk=gateway.pk).update(enabled=False)
    run("register_gateway", "--name", "demo", "--url", "ws://127.0.0.1:18790/")
    gateway.refresh_from_db()
    assert (gateway.url, gateway.token, gateway.enabled) == ("ws://127.0.0.1:18790/", OTHER_TOKEN, True)
    assert Gateway.objects.count() == 1
    for output in (first, again):
        assert SECRET_TOKEN not in output and OTHER_TOKEN not in output


def test_register_gateway_takes_its_defaults_from_the_environment(db, clean_env):
    clean_env.setenv("AGENTFLOW_GATEWAY_NAME", "from-env")
    clean_env.setenv("AGENTFLOW_GATEWAY_URL", "wss://gw.example.test/")
    clean_env.setenv("AGENTFLOW_GATEWAY_TOKEN", SECRET_TOKEN)
    output = run("register_gateway")
    gateway = Gateway.objects.get(name="from-env")
    assert gateway.url == "wss://gw.example.test/"
    assert gateway.token == SECRET_TOKEN
    assert SECRET_TOKEN not in output


def test_register_gateway_reads_the_token_from_a_file(db, clean_env, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(f"{SECRET_TOKEN}\n")
    output = run(
        "register_gateway",
        "--name",
        "filed",
        "--url",
        "ws://127.0.0.1:18789/",
        "--token-file",
        str(token_file),
    )
    assert Gateway.objects.get(name="filed").token == SECRET_TOKEN
    assert SECRET_TOKEN not in output


@pytest.mark.parametrize("bad_url", ["http://127.0.0.1:18789/", "127.0.0.1:18789"])
def test_register_gateway_refuses_a_url_that_is_not_a_websocket_url(db, clean_env, bad_url):
    clean_env.setenv("AGENTFLOW_GATEWAY_TOKEN", SECRET_TOKEN)
    with pytest.raises(CommandError, match="ws:// or wss://") as info:
        run("register_gateway", "--name", "demo", "--url", bad_url)
    assert SECRET_TOKEN not in str(info.value)
    assert not Gateway.objects.exists()


def test_register_gateway_refuses_a_missing_url(db, clean_env):
    clean_env.setenv("AGENTFLOW_GATEWAY_TOKEN", SECRET_TOKEN)
    with pytest.raises(CommandError, match="No gateway URL"):
        run("register_gateway", "--name", "demo")
    assert not Gateway.objects.exists()


def test_register_gateway_refuses_a_missing_token(db, clean_env):
    with pytest.raises(CommandError, match="No gateway token"):
        run("register_gateway", "--name", "demo", "--url", "ws://127.0.0.1:18789/")
    assert not Gateway.objects.exists()


def test_register_gateway_refuses_an_empty_token_file(db, clean_env, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("\n")
    with pytest.raises(CommandError, match="No gateway token"):
        run(
            "register_gateway",
            "--name",
            "demo",
            "--url",
            "ws://127.0.0.1:18789/",
            "--token-file",
            str(token_file),
        )


# --- check_gateways ------------------------------------------------------------------------------


@pytest.mark.gateway
def test_check_gateways_reports_connected_with_the_latency_and_records_it(gateway_row):
    output = run("check_gateways")
    match = re.search(r"^test-gw: Connected, (\d+\.\d) ms, version 2026\.9\.6$", output, re.MULTILINE)
    assert match, output
    gateway_row.refresh_from_db()
    assert gateway_row.status == Gateway.Status.CONNECTED
    assert gateway_row.latency_ms is not None and gateway_row.latency_ms > 0
    assert f"{gateway_row.latency_ms:.1f}" == match.group(1)
    assert gateway_row.last_checked_at is not None
    assert gateway_row.token not in output


@pytest.mark.gateway
def test_check_gateways_with_a_wrong_token_exits_1_and_records_auth_failed(gateway_row):
    Gateway.objects.filter(pk=gateway_row.pk).update(token=SECRET_TOKEN)
    out = io.StringIO()
    with pytest.raises(SystemExit) as info:
        call_command("check_gateways", stdout=out, stderr=out)
    assert info.value.code == 1
    output = out.getvalue()
    assert output.startswith("test-gw: Authentication failed [AUTH_TOKEN_MISMATCH]"), output
    assert SECRET_TOKEN not in output
    gateway_row.refresh_from_db()
    assert gateway_row.status == Gateway.Status.AUTH_FAILED
    assert gateway_row.last_error_code == "AUTH_TOKEN_MISMATCH"
    assert "token" in gateway_row.status_reason
    assert gateway_row.latency_ms is None


@pytest.mark.gateway
def test_check_gateways_checks_every_gateway_even_when_one_is_down(gateway_row):
    make_gateway("down-gw", url=f"ws://127.0.0.1:{closed_port()}/", token=SECRET_TOKEN)
    out = io.StringIO()
    with pytest.raises(SystemExit) as info:
        call_command("check_gateways", "--timeout", "3", stdout=out)
    assert info.value.code == 1
    output = out.getvalue()
    assert "down-gw: Disconnected [CONNECTION_LOST]" in output
    assert "test-gw: Connected" in output
    assert Gateway.objects.get(name="down-gw").status == Gateway.Status.DISCONNECTED
    assert Gateway.objects.get(name="test-gw").status == Gateway.Status.CONNECTED


@pytest.mark.gateway
def test_check_gateways_only_checks_the_named_gateways(gateway_row):
    down = make_gateway("down-gw", url=f"ws://127.0.0.1:{closed_port()}/", token=SECRET_TOKEN)
    output = run("check_gateways", "test-gw")
    assert "test-gw: Connected" in output
    assert "down-gw" not in output
    down.refresh_from_db()
    assert down.status == Gateway.Status.UNKNOWN


def test_check_gateways_skips_disabled_gateways(db):
    make_gateway("off", url=f"ws://127.0.0.1:{closed_port()}/", token=SECRET_TOKEN, enabled=False)
    assert run("check_gateways") == ""
    assert Gateway.objects.get(name="off").status == Gateway.Status.UNKNOWN


def test_register_gateway_reports_an_unreadable_token_file_as_a_command_error(db, clean_env, tmp_path):
    missing = tmp_path / "no-such-token"
    with pytest.raises(CommandError, match="token"):
        run(
            "register_gateway",
            "--name",
            "demo",
            "--url",
            "ws://127.0.0.1:18789/",
            "--token-file",
            str(missing),
        )


def test_check_gateways_refuses_an_unknown_gateway_name(db):
    with pytest.raises(CommandError, match="no-such-gateway"):
        run("check_gateways", "no-such-gateway")
