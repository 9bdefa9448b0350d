"""A Redis namespace of the test's own (the ``redis_prefix`` fixture in tests/conftest.py), and a
private redis-server to kill and restart (Redis outages)."""

from __future__ import annotations

import contextlib
import copy
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import redis

from agentflow.lib.redis import get_redis
from tests.support.ports import free_port


@contextlib.contextmanager
def isolated_redis(settings) -> Iterator[str]:
    """A Redis namespace of the test's own (pytest-django ``settings``): locks, metrics, open panels
    and channel-layer groups of concurrent test runs (or of a ``make run``) never mix with ours."""
    prefix = f"aftest-{uuid.uuid4().hex[:10]}"
    settings.REDIS_PREFIX = prefix
    layers = copy.deepcopy(settings.CHANNEL_LAYERS)
    layers["default"]["CONFIG"]["prefix"] = f"{prefix}:asgi"
    settings.CHANNEL_LAYERS = layers  # channels rebuilds its layers on setting_changed
    try:
        yield prefix
    finally:
        client = get_redis()
        for name in client.scan_iter(f"{prefix}:*"):
            client.delete(name)


class PrivateRedis:
    """A redis-server of the test's own on a free loopback port, to kill and start again on the
    same port (what a Redis restart or outage looks like to AgentFlow)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10) -> None:
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--bind", "127.0.0.1", "--port", str(self.port),
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.05)
            finally:
                client.close()

    def kill(self) -> None:
        """Die like a crashed Redis: SIGKILL, no goodbye to its clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def private_redis(settings, workdir: Path) -> Iterator[PrivateRedis]:
    """Point REDIS_URL, the cache and the channel layer at a private redis-server (pytest-django
    ``settings``), and back afterwards."""
    server = PrivateRedis(workdir)
    server.start()
    settings.REDIS_URL = server.url
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] = server.url
    settings.CACHES = caches
    layers = copy.deepcopy(settings.CHANNEL_LAYERS)
    layers["default"]["CONFIG"]["hosts"][0]["address"] = server.url
    settings.CHANNEL_LAYERS = layers  # channels and agentflow.lib.redis rebuild theirs on setting_changed
    try:
        yield server
    finally:
        server.kill()
