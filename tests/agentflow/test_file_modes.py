"""The data folder is 0700 and the database, its WAL and shared-memory files and the device keys
are 0600: checked on a real ``manage.py migrate`` into a fresh folder, in fresh processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A process that holds the database open (so SQLite's -wal and -shm exist), writes a row and a
# device identity, then reports the mode of everything in the data folder.
INSPECT = """
import json, os, stat, django
django.setup()
from django.conf import settings
from fleet.models import Gateway
from openclaw.device import DeviceIdentity
Gateway.objects.create(name="modes", url="ws://127.0.0.1:1/", token="modes-token")
DeviceIdentity.load_or_create(settings.GATEWAY_DEVICE_DIR / "modes.json")
modes = {}
for folder, dirs, files in os.walk(settings.DATA_DIR):
    for name in dirs + files:
        path = os.path.join(folder, name)
        modes[os.path.relpath(path, settings.DATA_DIR)] = stat.S_IMODE(os.stat(path).st_mode)
modes["."] = stat.S_IMODE(os.stat(settings.DATA_DIR).st_mode)
print(json.dumps(modes))
"""


def env_for(data_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTEST_VERSION", "PYTEST_CURRENT_TEST", "DATABASE_URL")
    }
    env.update(
        AGENTFLOW_ENV="development",
        AGENTFLOW_DATA_DIR=str(data_dir),
        DJANGO_SETTINGS_MODULE="agentflow.settings",
    )
    return env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # umask 022, as a login shell has it: the modes must come from the app, not the caller.
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        preexec_fn=lambda: os.umask(0o022),
    )


def test_a_fresh_data_folder_and_every_file_in_it_are_owner_only(tmp_path):
    data_dir = tmp_path / "fresh" / "var"
    env = env_for(data_dir)
    migrated = run(env, "manage.py", "migrate", "--noinput", "-v", "0")
    assert migrated.returncode == 0, migrated.stderr
    result = run(env, "-c", INSPECT)
    assert result.returncode == 0, result.stderr
    modes = json.loads(result.stdout)
    for name in ("agentflow.sqlite3", "agentflow.sqlite3-wal", "agentflow.sqlite3-shm", "devices/modes.json"):
        assert modes.get(name) == 0o600, (name, oct(modes.get(name, 0)), modes)
    for name in (".", "devices"):
        assert modes[name] == 0o700, (name, oct(modes[name]))
    loose = {name: oct(mode) for name, mode in modes.items() if mode & 0o077}
    assert loose == {}, loose


def test_a_looser_existing_folder_is_tightened_with_one_warning(tmp_path):
    data_dir = tmp_path / "old"
    env = env_for(data_dir)
    assert run(env, "manage.py", "migrate", "--noinput", "-v", "0").returncode == 0
    # What an older release left: a 0755 folder and a 0644 database.
    data_dir.chmod(0o755)
    (data_dir / "agentflow.sqlite3").chmod(0o644)
    result = run(env, "manage.py", "check")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "tightened" in line]
    assert len(warnings) == 1, result.stderr
    assert "agentflow.sqlite3" in warnings[0]
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "agentflow.sqlite3").stat().st_mode) == 0o600
    # Once tight, nothing more to say.
    again = run(env, "manage.py", "check")
    assert "tightened" not in again.stderr
