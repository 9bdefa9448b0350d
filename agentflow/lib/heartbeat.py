"""Which AgentFlow processes are up: each long-lived process leaves a heartbeat in Redis.

``start(role)`` writes ``<prefix>:proc:<host>:<pid>`` (a hash: role, host, pid, started_at,
seen_at), expiring after ``AGENTFLOW_HEARTBEAT_SECONDS`` × 3 and renewed every
``AGENTFLOW_HEARTBEAT_SECONDS`` by one daemon thread; a process that dies disappears within
three beats. ``alive()`` lists them (``manage.py automation status``, the Automation page).

Called by: the web process (``agentflow/asgi.py``), the Celery worker's and beat's main process
(``agentflow/celery.py``, the ``worker_init`` / ``beat_init`` signals), the gateway listener and
the file watcher (their commands). Idempotent per process; a fork starts its own.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from django.conf import settings

from .redis import get_redis, key

log = logging.getLogger("agentflow.heartbeat")

_lock = threading.Lock()
_started: dict[str, int] = {}  # redis key → pid that runs its thread


@dataclass(frozen=True)
class Beat:
    role: str
    host: str
    pid: int
    started_at: float
    seen_at: float

    @property
    def uptime_seconds(self) -> float:
        return max(0.0, time.time() - self.started_at)


def _key(host: str, pid: int) -> str:
    return key("proc", host, pid)


def _started_at() -> float:
    """When this process started (Linux: from /proc; elsewhere: now)."""
    try:
        with open(f"/proc/{os.getpid()}/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as fh:
            boot = next(float(line.split()[1]) for line in fh if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def beat_once(role: str, started_at: float | None = None) -> str:
    """Write this process's heartbeat once; returns its key."""
    host, pid = socket.gethostname(), os.getpid()
    redis_key = _key(host, pid)
    interval = float(settings.AGENTFLOW_HEARTBEAT_SECONDS)
    pipe = get_redis().pipeline()
    pipe.hset(
        redis_key,
        mapping={
            "role": role,
            "host": host,
            "pid": pid,
            "started_at": started_at if started_at is not None else _started_at(),
            "seen_at": time.time(),
        },
    )
    pipe.expire(redis_key, max(1, int(interval * 3)))
    pipe.execute()
    return redis_key


def start(role: str) -> None:
    """Beat now (errors logged, never raised: Redis may be down at start) and from a daemon
    thread every AGENTFLOW_HEARTBEAT_SECONDS from then on."""
    host, pid = socket.gethostname(), os.getpid()
    redis_key = _key(host, pid)
    with _lock:
        if _started.get(redis_key) == pid:
            return
        _started[redis_key] = pid
    began = _started_at()
    interval = float(settings.AGENTFLOW_HEARTBEAT_SECONDS)

    def renew() -> None:
        while True:
            try:
                beat_once(role, began)
            except Exception:
                log.warning("heartbeat of %s %s: Redis did not answer", role, pid, exc_info=True)
            time.sleep(interval)

    threading.Thread(target=renew, name=f"heartbeat {role}", daemon=True).start()


def alive() -> list[Beat]:
    """Every process with a live heartbeat, by role then pid."""
    redis = get_redis()
    keys = list(redis.scan_iter(match=key("proc", "*"), count=500))
    pipe = redis.pipeline()
    for k in keys:
        pipe.hgetall(k)
    beats = []
    for raw in pipe.execute():
        if not raw:
            continue
        row = {k.decode(): v.decode() for k, v in raw.items()}
        try:
            beats.append(
                Beat(
                    row["role"], row["host"], int(row["pid"]), float(row["started_at"]), float(row["seen_at"])
                )
            )
        except (KeyError, ValueError):
            continue
    return sorted(beats, key=lambda b: (b.role, b.host, b.pid))
