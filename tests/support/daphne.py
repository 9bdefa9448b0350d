"""A real Daphne serving the test database (the browser tests' ``live_server_url``, the webhook
tests' live intake): the production server on a free loopback port, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

from tests.support.ports import free_port
from tests.support.processes import database_url

ROOT = Path(__file__).resolve().parents[2]


def live_env() -> dict[str, str]:
    """The environment of a server subprocess: the test database, Redis and Redis prefix."""
    from django.conf import settings

    env = {k: v for k, v in os.environ.items() if k != "PYTEST_VERSION"}
    env.update(
        AGENTFLOW_ENV="test",
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        AGENTFLOW_REDIS_PREFIX=settings.REDIS_PREFIX,
        PYTHONUNBUFFERED="1",
    )
    return env


class DaphneServer:
    """A Daphne subprocess on a fixed loopback port that a test can kill and start again."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int | None = None) -> None:
        self.env, self.log_path = env, log_path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self, timeout: float = 30) -> None:
        self._log = self.log_path.open("ab")
        command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(
            [*command, "agentflow.asgi:application"],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                urlopen(f"{self.url}/healthz", timeout=2).read()
                return
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log_tail = self.log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"daphne did not start: {log_tail}") from None
                time.sleep(0.2)

    def kill(self) -> None:
        """Die like a crashed server: no graceful close of the open websockets."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_log()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
