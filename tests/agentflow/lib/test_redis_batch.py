"""agentflow.lib.redis.batched: best-effort writes inside the block go out in one round trip
when it ends (in order, nested blocks joining the outermost); a Redis that is away at the end
loses those writes, logs it and raises nothing; outside a block each writer sends its own."""

from __future__ import annotations

import logging

import pytest

from agentflow.lib import eventlog
from agentflow.lib.redis import batched, get_redis, key, write_pipeline
from tests.support.redis import private_redis

pytestmark = pytest.mark.redis


def test_writes_inside_a_block_wait_for_its_end_and_keep_their_order(redis_prefix):
    client = get_redis()
    client.delete(eventlog.stream_key())
    with batched():
        eventlog.emit("run.started", run_id=1)
        with batched():  # joins the outer block
            eventlog.emit("run.finished", run_id=1, status="succeeded")
            pipe, execute = write_pipeline()
            assert execute is False
            pipe.set(key("batch-test"), "1")
        assert client.xlen(eventlog.stream_key()) == 0  # nothing sent yet
        assert client.get(key("batch-test")) is None
    assert [line["event"] for line in eventlog.read(10)] == ["run.started", "run.finished"]
    assert client.get(key("batch-test")) == b"1"
    eventlog.emit("trigger.fired", run_id=2)  # outside a block: at once
    assert client.xlen(eventlog.stream_key()) == 3
    client.delete(key("batch-test"))


def test_a_redis_that_is_away_at_the_end_loses_the_writes_and_raises_nothing(settings, tmp_path, caplog):
    with private_redis(settings, tmp_path) as server:
        caplog.set_level(logging.WARNING, logger="agentflow.redis")
        with batched():
            eventlog.emit("run.started", run_id=1)
            server.kill()
        assert "could not write 1 batched Redis command(s)" in caplog.text
        eventlog.emit("run.finished", run_id=1)  # and the unbatched writer never raises either
