"""The process's Redis connection pool (a pool, not shared state: every instance has its own)."""

from __future__ import annotations

from functools import cache

import redis
from django.conf import settings


@cache
def get_redis() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=2, health_check_interval=30
    )


def key(*parts: object) -> str:
    """A namespaced key, so several AgentFlow installs can share one Redis."""
    return ":".join([settings.REDIS_PREFIX, *map(str, parts)])
