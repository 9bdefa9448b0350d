"""The per-endpoint rate limit, shared by every web process through Redis.

A sliding window over two fixed one-minute counters (the previous minute's count weighted by how
much of it still lies in the last 60 s): one Lua call per delivery, no list per request, and no
burst of twice the limit at a minute's edge as a plain fixed window allows. Redis away: the
delivery is let through (the limit protects the queue; losing a sender's delivery is worse)."""

from __future__ import annotations

import logging
import time

from redis.commands.core import Script
from redis.exceptions import RedisError

from agentflow.lib.redis import get_redis, key

log = logging.getLogger("agentflow.webhooks")

_LUA = """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local minute = math.floor(now / 60)
local current = KEYS[1] .. ':' .. minute
local previous = KEYS[1] .. ':' .. (minute - 1)
local here = tonumber(redis.call('GET', current) or '0')
local before = tonumber(redis.call('GET', previous) or '0')
local weight = 1 - (now - minute * 60) / 60
if here + before * weight >= limit then
  return 0
end
redis.call('INCR', current)
redis.call('EXPIRE', current, 120)
return 1
"""


def _script() -> Script:
    return get_redis().register_script(_LUA)


def allow(endpoint_id: int, per_minute: int, now: float | None = None) -> bool:
    """True when the endpoint may take one more delivery now (and counts it)."""
    if per_minute <= 0:
        return True
    try:
        return bool(
            _script()(keys=[key("webhooks", "rate", endpoint_id)], args=[now or time.time(), per_minute])
        )
    except RedisError as exc:
        log.warning("webhook rate limit not checked (Redis: %s)", exc)
        return True
