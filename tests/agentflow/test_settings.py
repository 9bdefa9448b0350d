"""Settings: production refuses to start half-configured and passes Django's deploy checks.

Each case runs Django in a fresh interpreter, since settings are read once per process.
"""

from __future__ import annotations

import os
import secrets
import string
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from agentflow import settings as agentflow_settings

ROOT = Path(__file__).resolve().parents[2]
SETUP = "import django; django.setup()"
# Everything the settings module reads that could leak in from the developer's shell or pytest.
SCRUBBED = (
    "PYTEST_VERSION",
    "PYTEST_CURRENT_TEST",
    "SECRET_KEY",
    "SECRET_KEY_FILE",
    "ALLOWED_HOSTS",
    "ALLOWED_HOSTS_FILE",
    "DEBUG",
    "AGENTFLOW_ENV",
    "AGENTFLOW_ENV_FILE",
    "AGENTFLOW_DATA_DIR",
    "AGENTFLOW_DATA_DIR_FILE",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_PRELOAD",
    "CSRF_TRUSTED_ORIGINS",
    "AGENTFLOW_ENCRYPTION_KEYS",
    "AGENTFLOW_ENCRYPTION_KEYS_FILE",
    "AGENTFLOW_METRICS_TOKEN",
    "AGENTFLOW_METRICS_ALLOWED_IPS",
    "AGENTFLOW_GATEWAY_TIMEOUT",
    "AGENTFLOW_GATEWAY_CONNECT_TIMEOUT",
)


def random_key(length: int = 60) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


@pytest.fixture
def base_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env.update(
        DJANGO_SETTINGS_MODULE="agentflow.settings",
        AGENTFLOW_DATA_DIR=str(tmp_path / "data"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


@pytest.fixture
def production_env(base_env) -> dict[str, str]:
    return {
        **base_env,
        "AGENTFLOW_ENV": "production",
        "SECRET_KEY": random_key(),
        "ALLOWED_HOSTS": "agentflow.example.test",
        "AGENTFLOW_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    }


def run_python(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_production_without_secret_key_refuses_to_start(production_env):
    del production_env["SECRET_KEY"]
    result = run_python(production_env, "-c", SETUP)
    assert result.returncode != 0
    assert "SettingsError" in result.stderr  # an ImproperlyConfigured
    assert "SECRET_KEY" in result.stderr


def test_production_with_a_short_secret_key_refuses_to_start(production_env):
    production_env["SECRET_KEY"] = "too-short"
    result = run_python(production_env, "-c", SETUP)
    assert result.returncode != 0
    assert "SettingsError" in result.stderr  # an ImproperlyConfigured
    assert "SECRET_KEY" in result.stderr


def test_production_without_allowed_hosts_refuses_to_start(production_env):
    del production_env["ALLOWED_HOSTS"]
    result = run_python(production_env, "-c", SETUP)
    assert result.returncode != 0
    assert "SettingsError" in result.stderr  # an ImproperlyConfigured
    assert "ALLOWED_HOSTS" in result.stderr


def test_production_passes_the_deploy_checks_without_a_warning(production_env):
    result = run_python(production_env, "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr
    assert "?: (security." not in result.stdout + result.stderr


def test_production_reads_the_secret_key_from_secret_key_file(production_env, tmp_path):
    key = random_key()
    secret_file = tmp_path / "secret_key"
    secret_file.write_text(key + "\n")
    production_env["SECRET_KEY"] = "ignored-" + random_key()
    production_env["SECRET_KEY_FILE"] = str(secret_file)
    code = f"{SETUP}; from django.conf import settings; print(settings.SECRET_KEY == {key!r}, settings.DEBUG)"
    result = run_python(production_env, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False"]


def test_an_unparseable_boolean_setting_refuses_to_start(base_env):
    base_env["DEBUG"] = "maybe"
    result = run_python(base_env, "-c", SETUP)
    assert result.returncode != 0
    assert "SettingsError" in result.stderr  # an ImproperlyConfigured
    assert "DEBUG='maybe'" in result.stderr


def test_env_bool_rejects_maybe(monkeypatch):
    monkeypatch.setenv("AGENTFLOW_TEST_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="AGENTFLOW_TEST_FLAG"):
        agentflow_settings.env_bool("AGENTFLOW_TEST_FLAG")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("TRUE", True),
        (" yes ", True),
        ("on", True),
        ("0", False),
        ("False", False),
        ("off", False),
    ],
)
def test_env_bool_accepts_the_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("AGENTFLOW_TEST_FLAG", raw)
    assert agentflow_settings.env_bool("AGENTFLOW_TEST_FLAG", default=not expected) is expected


def test_env_bool_falls_back_to_the_default_when_unset_or_empty(monkeypatch):
    monkeypatch.delenv("AGENTFLOW_TEST_FLAG", raising=False)
    assert agentflow_settings.env_bool("AGENTFLOW_TEST_FLAG", default=True) is True
    monkeypatch.setenv("AGENTFLOW_TEST_FLAG", "")
    assert agentflow_settings.env_bool("AGENTFLOW_TEST_FLAG", default=False) is False


def test_a_file_variable_wins_over_the_plain_variable(monkeypatch, tmp_path):
    secret_file = tmp_path / "value"
    secret_file.write_text("  from-the-file\n")
    monkeypatch.setenv("AGENTFLOW_TEST_VALUE", "from-the-env")
    monkeypatch.setenv("AGENTFLOW_TEST_VALUE_FILE", str(secret_file))
    assert agentflow_settings.env_str("AGENTFLOW_TEST_VALUE") == "from-the-file"


def test_without_pytest_the_default_environment_is_development(base_env):
    code = f"{SETUP}; from django.conf import settings; print(settings.ENVIRONMENT, settings.DEBUG)"
    result = run_python(base_env, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["development", "True"]


def test_an_sqlite_database_url_gets_wal_and_immediate_transactions(base_env, tmp_path):
    """The tests hand their subprocesses the test database as DATABASE_URL=sqlite:///…: those
    connections must behave as the default one (a deferred transaction that read first fails
    its first write at once with "database is locked" when another writer committed meanwhile)."""
    base_env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'by-url.sqlite3'}"
    code = (
        f"{SETUP}; from django.db import connection; from django.conf import settings; "
        "options = settings.DATABASES['default']['OPTIONS']; "
        "cursor = connection.cursor(); cursor.execute('PRAGMA journal_mode'); "
        "print(cursor.fetchone()[0], options['transaction_mode'], options['timeout'])"
    )
    result = run_python(base_env, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["wal", "IMMEDIATE", "20"]


# --- One clear line instead of a traceback --------------------------------------------------


def assert_one_line_naming(result: subprocess.CompletedProcess[str], *names: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for name in names:
        assert name in lines[0]
    return lines[0]


def test_a_bad_number_stops_manage_py_with_one_line_naming_the_variable(base_env):
    base_env["AGENTFLOW_GATEWAY_TIMEOUT"] = "soon"
    line = assert_one_line_naming(run_python(base_env, "manage.py", "check"), "AGENTFLOW_GATEWAY_TIMEOUT")
    assert "'soon'" in line and "number of seconds" in line


def test_a_missing_secret_file_names_the_variable_and_the_path(base_env, tmp_path):
    missing = tmp_path / "nowhere" / "secret_key"
    base_env["SECRET_KEY_FILE"] = str(missing)
    line = assert_one_line_naming(run_python(base_env, "manage.py", "check"), "SECRET_KEY_FILE")
    assert line.endswith(f"SECRET_KEY_FILE={missing}: no such file")


def test_the_asgi_entry_point_reports_a_bad_setting_in_one_line(base_env):
    base_env["AGENTFLOW_GATEWAY_CONNECT_TIMEOUT"] = "-3"
    result = run_python(base_env, "-c", "import agentflow.asgi")
    assert_one_line_naming(result, "AGENTFLOW_GATEWAY_CONNECT_TIMEOUT")


def test_the_web_process_freezes_what_it_loaded_at_start_out_of_the_collectors_sight(base_env):
    """A full collection walking Django, the apps and the views held the GIL ~110 ms every ~4 s
    at 200 requests/s (bench/bench_webhooks.py): the ASGI entry point imports the URL conf and
    its views, then ``gc.freeze()``s, so the views are among the frozen objects."""
    code = (
        "import gc, sys; import agentflow.asgi; "
        "print(gc.get_freeze_count(), 'webhooks.views' in sys.modules, "
        "'dashboard.views.webhooks' in sys.modules)"
    )
    result = run_python(base_env, "-c", code)
    assert result.returncode == 0, result.stderr
    frozen, webhook_views, dashboard_views = result.stdout.split()
    assert int(frozen) > 100_000 and webhook_views == dashboard_views == "True", result.stdout


def test_the_celery_entry_point_reports_a_bad_setting_in_one_line(base_env):
    base_env["DEBUG"] = "maybe"
    result = run_python(base_env, "-m", "celery", "-A", "agentflow", "report")
    assert_one_line_naming(result, "DEBUG='maybe'", "true or false")


@pytest.mark.parametrize(
    ("name", "raw", "accepted"),
    [
        ("AGENTFLOW_SESSION_IDLE_SECONDS", "lots", "whole number"),
        ("AGENTFLOW_CHANNEL_LAYER", "kafka", "core, pubsub"),
        ("AGENTFLOW_ENV", "staging", "development, test, production"),
        ("AGENTFLOW_METRICS_ALLOWED_IPS", "10.0.0.5,scraper", "address or network"),
        ("AGENTFLOW_ENCRYPTION_KEYS", "not-a-key", "not a Fernet key"),
    ],
)
def test_every_kind_of_setting_error_is_one_line_with_the_accepted_form(base_env, name, raw, accepted):
    base_env[name] = raw
    line = assert_one_line_naming(run_python(base_env, "manage.py", "check"), name)
    assert accepted in line


def test_env_float_reads_seconds_and_rejects_words(monkeypatch):
    monkeypatch.setenv("AGENTFLOW_TEST_SECONDS", "2.5")
    assert agentflow_settings.env_float("AGENTFLOW_TEST_SECONDS", 10.0) == 2.5
    for bad in ("soon", "nan", "inf", "-1"):
        monkeypatch.setenv("AGENTFLOW_TEST_SECONDS", bad)
        with pytest.raises(ImproperlyConfigured, match="AGENTFLOW_TEST_SECONDS"):
            agentflow_settings.env_float("AGENTFLOW_TEST_SECONDS", 10.0)


# --- Production refuses what is unsafe -------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("x" * 60, "too few distinct characters"),
        ("ab" * 40, "too few distinct characters"),
        ("dev-insecure-" + "x" * 50, "development default"),
        ("django-insecure-" + random_key(50), "development default"),
    ],
)
def test_production_refuses_a_low_entropy_secret_key(production_env, key, reason):
    production_env["SECRET_KEY"] = key
    line = assert_one_line_naming(run_python(production_env, "manage.py", "check"), "SECRET_KEY")
    assert reason in line
    assert key not in line  # the key itself is never printed


@pytest.mark.parametrize("hosts", ["*", "agentflow.example.test,*", "*.example.test"])
def test_production_refuses_a_wildcard_in_allowed_hosts(production_env, hosts):
    production_env["ALLOWED_HOSTS"] = hosts
    line = assert_one_line_naming(run_python(production_env, "manage.py", "check"), "ALLOWED_HOSTS")
    assert "wildcard" in line


def test_production_refuses_to_start_without_encryption_keys(production_env):
    del production_env["AGENTFLOW_ENCRYPTION_KEYS"]
    line = assert_one_line_naming(
        run_python(production_env, "manage.py", "check"), "AGENTFLOW_ENCRYPTION_KEYS"
    )
    assert "Fernet.generate_key()" in line


def test_outside_production_the_encryption_key_is_derived_from_the_secret_key(base_env):
    code = (
        f"{SETUP}; from django.conf import settings; from agentflow.lib import crypto; "
        "print(settings.ENCRYPTION_KEYS == [crypto.derive_key(settings.SECRET_KEY)])"
    )
    first = run_python(base_env, "-c", code)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["True"]
