"""Real Celery processes for the tests: ``celery worker`` and ``celery beat`` as subprocesses on
the test database, the test's Redis prefix and a broker queue of the test's own, so a developer's
running stack or a concurrent test run never takes our messages (nor we theirs)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from django.conf import settings

from tests.support.processes import database_url

CELERY = str(Path(sys.executable).with_name("celery"))


def celery_env(redis_prefix: str, broker_url: str) -> dict[str, str]:
    """The environment of a worker or beat subprocess. Its default queue is named after the
    Redis prefix (CELERY_TASK_DEFAULT_QUEUE), so each test has a queue of its own."""
    env = {
        **os.environ,
        "AGENTFLOW_ENV": "test",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": broker_url,
        "AGENTFLOW_REDIS_PREFIX": redis_prefix,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PYTEST_VERSION", None)
    return env


def start_celery(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``celery -A agentflow ARGS`` in a process group of its own (stopped as a whole by
    ``tests.support.processes.stop_group``), its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [CELERY, "-A", "agentflow", *args],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


PRIORITIES = ("urgent", "high", "normal", "low")


def engine_queues(queue: str) -> list[str]:
    """``queue`` and the engine's priority queues named after it (settings.CELERY_TASK_QUEUES)."""
    return [queue, *(f"{queue}.{p}" for p in PRIORITIES)]


def start_worker(
    env: dict[str, str], log: Path, queue: str, pool: tuple[str, ...] = ("--pool", "solo")
) -> subprocess.Popen:
    """One worker (solo by default) consuming ``queue`` and the engine's priority queues."""
    name = f"aftest-{uuid.uuid4().hex[:8]}@%h"
    queues = ",".join(engine_queues(queue))
    args = ["worker", *pool, "-n", name, "-Q", queues, "--without-gossip", "--without-mingle"]
    return start_celery([*args, "-l", "INFO"], env, log)


def queued_tasks(client, queue: str) -> list[tuple[str, list]]:
    """The (task name, args) of every message waiting in ``queue`` on the broker (kombu's Redis
    transport keeps a queue as a list of JSON envelopes, the task's arguments base64 in the body)."""
    found = []
    for raw in client.lrange(queue, 0, -1):
        envelope = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        found.append((envelope["headers"]["task"], args))
    return found


def logs(directory: Path) -> str:
    """The tail of every log in ``directory``, for a failure message."""
    return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(directory.glob("*.log")))
