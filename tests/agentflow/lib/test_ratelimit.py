"""agentflow.lib.ratelimit.TokenBucket: a burst, then the rate, never more."""

from __future__ import annotations

import pytest

from agentflow.lib.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_full_bucket_allows_a_burst_then_refuses():
    bucket = TokenBucket(rate=1, burst=10, clock=Clock())
    assert [bucket.take() for _ in range(12)] == [True] * 10 + [False] * 2


def test_tokens_come_back_at_the_rate_and_never_beyond_the_burst():
    clock = Clock()
    bucket = TokenBucket(rate=2, burst=3, clock=clock)
    assert all(bucket.take() for _ in range(3))
    clock.now += 0.4
    assert not bucket.take()  # 0.8 of a token
    clock.now += 0.1
    assert bucket.take() and not bucket.take()
    clock.now += 3600
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_a_refused_take_spends_nothing():
    clock = Clock()
    bucket = TokenBucket(rate=1, burst=2, clock=clock)
    assert not bucket.take(cost=3)
    assert bucket.take(cost=2)


@pytest.mark.parametrize(("rate", "burst"), [(-1, 5), (1, 0)])
def test_a_nonsense_bucket_is_refused(rate, burst):
    with pytest.raises(ValueError):
        TokenBucket(rate=rate, burst=burst)
