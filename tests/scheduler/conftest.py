from __future__ import annotations

import pytest

from .support import isolated_redis


@pytest.fixture
def redis_prefix(settings):
    """Locks, metrics, open panels and channel-layer groups of this test only."""
    with isolated_redis(settings) as prefix:
        yield prefix
