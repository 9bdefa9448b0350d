"""A Redis namespace of the test's own (used through the ``redis_prefix`` fixture in tests/conftest.py)."""

from __future__ import annotations

import contextlib
import copy
import uuid
from collections.abc import Iterator

from agentflow.lib.redis import get_redis


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
