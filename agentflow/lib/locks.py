"""Redis locks that keep a piece of work from overlapping itself (a batch for one gateway, say).

SET NX with an expiry: a worker that dies mid-run cannot hold the lock past the expiry.
Release checks the owner token, so a run that outlived its lock never frees someone else's.
``lease`` is the short-lived kind: a few seconds, renewed by a heartbeat thread while its holder
lives, so a killed worker blocks the next run for seconds, not for the whole expiry.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import connections

from .redis import get_redis, key

log = logging.getLogger("agentflow.locks")

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""


@contextmanager
def lock(name: str, scope: object, ttl: int) -> Iterator[bool]:
    """Yield True if the lock ``name``/``scope`` was taken (and release it after), False if someone
    holds it."""
    redis_key = key("lock", name, scope)
    token = uuid.uuid4().hex
    client = get_redis()
    acquired = bool(client.set(redis_key, token, nx=True, ex=ttl))
    try:
        yield acquired
    finally:
        if acquired:
            client.eval(_RELEASE, 1, redis_key, token)


_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end
"""


@dataclass
class Lease:
    """A lock held only while its holder is alive: see :func:`lease`."""

    acquired: bool
    token: str
    lost: bool = False  # a renewal found the lock gone or someone else's (we were too slow)


def holder(name: str, scope: object) -> str | None:
    """The token of whoever holds the lock ``name``/``scope`` now, None when it is free."""
    value = get_redis().get(key("lock", name, scope))
    return value.decode() if isinstance(value, bytes) else value


def release(name: str, scope: object, token: str) -> bool:
    """Free the lock ``name``/``scope`` if ``token`` still holds it (a holder known to be dead)."""
    return bool(get_redis().eval(_RELEASE, 1, key("lock", name, scope), token))


@contextmanager
def lease(
    name: str,
    scope: object,
    ttl: float,
    *,
    hold_max: float | None = None,
    on_renew: Callable[[], None] | None = None,
) -> Iterator[Lease]:
    """Like :func:`lock`, but the key expires ``ttl`` seconds after its holder's last sign of life.

    1. SET NX PX ttl with a fresh token; taken or not, the caller gets a :class:`Lease`.
    2. While the block runs, a daemon thread renews the expiry every ttl/3 seconds (only while
       the key still holds our token); after each renewal a second thread calls ``on_renew``
       (e.g. a heartbeat on a database row; its database connection is closed when it ends).
    3. After ``hold_max`` seconds renewals stop, so a hung block frees the lock too.
    4. On exit the thread stops and the lock is released if it is still ours.

    A process killed with SIGKILL stops renewing: its lock is free within ``ttl`` seconds.
    """
    redis_key = key("lock", name, scope)
    token = uuid.uuid4().hex
    client = get_redis()
    ttl_ms = max(1, int(ttl * 1000))
    held = Lease(bool(client.set(redis_key, token, nx=True, px=ttl_ms)), token)
    if not held.acquired:
        yield held
        return
    stop = threading.Event()
    beat = threading.Event()  # set by the renewer after each renewal: the heartbeat's turn
    deadline = time.monotonic() + hold_max if hold_max else None

    def renew() -> None:
        while not stop.wait(ttl / 3):
            if deadline is not None and time.monotonic() >= deadline:
                log.warning("lock %s: held past its %ss limit, no longer renewed", redis_key, hold_max)
                return
            try:
                if not client.eval(_RENEW, 1, redis_key, token, ttl_ms):
                    held.lost = True
                    log.warning("lock %s expired before it was renewed (holder too slow)", redis_key)
                    return
            except Exception:
                log.warning("lock %s: could not renew", redis_key, exc_info=True)
            beat.set()

    def heartbeat() -> None:
        # A thread of its own, so a heartbeat stuck on a busy database (SQLite's write lock held
        # by the work itself) never delays the renewals past the lock's expiry.
        assert on_renew is not None
        try:
            while True:
                beat.wait()
                beat.clear()
                if stop.is_set():
                    return
                try:
                    on_renew()
                except Exception:
                    log.warning("lock %s: heartbeat failed", redis_key, exc_info=True)
        finally:
            connections.close_all()  # this thread's own connections

    threads = [threading.Thread(target=renew, name=f"lease {name}/{scope}", daemon=True)]
    if on_renew is not None:
        threads.append(threading.Thread(target=heartbeat, name=f"heartbeat {name}/{scope}", daemon=True))
    for thread in threads:
        thread.start()
    try:
        yield held
    finally:
        stop.set()
        threads[0].join()
        client.eval(_RELEASE, 1, redis_key, token)
        beat.set()  # wake the heartbeat thread so it sees stop and ends
        for thread in threads[1:]:
            thread.join()
