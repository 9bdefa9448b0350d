"""Redis locks that keep a piece of work from overlapping itself (a batch for one gateway, say).

SET NX with an expiry: a worker that dies mid-run cannot hold the lock past the expiry.
Release checks the owner token, so a run that outlived its lock never frees someone else's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from .redis import get_redis, key

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
