"""Which worker processes are alive: a Redis key per process, renewed by one daemon thread.

An attempt records the ``host:pid`` of the worker inside its action's ``start()``. If that
process dies (kill -9, OOM), its key expires within AGENTFLOW_WORKER_LEASE_SECONDS and the tick
marks the attempt lost (scheduler.queue.mark_dead_workers_lost). One thread per process, not
per run, so the hot path pays nothing for it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from django.conf import settings

from agentflow.lib.redis import get_redis, key

log = logging.getLogger("agentflow.scheduler")

_lock = threading.Lock()
_started_for: dict[str, int] = {}  # label → pid that started its thread (a fork starts anew)


def label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _key(name: str) -> str:
    return key("worker", name)


def this_worker() -> str:
    """This process's label, its liveness key set and kept alive from now on."""
    name = label()
    prefix = settings.REDIS_PREFIX
    tag = f"{prefix}/{name}"
    if _started_for.get(tag) == os.getpid():
        return name
    with _lock:
        if _started_for.get(tag) != os.getpid():
            ttl = int(settings.AGENTFLOW_WORKER_LEASE_SECONDS)
            redis_key = _key(name)
            get_redis().set(redis_key, "1", ex=ttl)

            def renew() -> None:
                stop = threading.Event()
                while not stop.wait(ttl / 3):
                    try:
                        get_redis().set(redis_key, "1", ex=ttl)
                    except Exception:
                        log.warning("worker %s: could not renew its liveness key", name, exc_info=True)

            threading.Thread(target=renew, name=f"liveness {name}", daemon=True).start()
            _started_for[tag] = os.getpid()
    return name


def is_alive(name: str) -> bool:
    return bool(get_redis().exists(_key(name)))
