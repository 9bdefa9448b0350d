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
    }


def run_python(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_production_without_secret_key_refuses_to_start(production_env):
    del production_env["SECRET_KEY"]
    result = run_python(production_env, "-c", SETUP)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SECRET_KEY" in result.stderr


def test_production_with_a_short_secret_key_refuses_to_start(production_env):
    production_env["SECRET_KEY"] = "too-short"
    result = run_python(production_env, "-c", SETUP)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SECRET_KEY" in result.stderr


def test_production_without_allowed_hosts_refuses_to_start(production_env):
    del production_env["ALLOWED_HOSTS"]
    result = run_python(production_env, "-c", SETUP)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
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
    assert "ImproperlyConfigured" in result.stderr
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
