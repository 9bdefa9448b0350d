"""Subprocesses of the tests (Daphne, the gateway listener, Celery beat and workers): they use the
test database, so they see the rows a test writes and the test sees theirs."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from urllib.parse import quote

from django.db import connection


def database_url() -> str:
    """The test database pytest-django created (not the development one) as a DATABASE_URL."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    if db["ENGINE"].endswith("postgresql"):
        auth = f"{quote(db['USER'] or '')}:{quote(db['PASSWORD'] or '')}@" if db["USER"] else ""
        return f"postgres://{auth}{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    raise AssertionError(f"no DATABASE_URL for {db['ENGINE']}")


def stop_group(process: subprocess.Popen) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it forked."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
