"""The gateway listener against the real gateway: statuses, no retry storm on a bad token, admin
edits picked up, and gateway events pushed to the channel layer (RedisChannelLayer on real Redis)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connections
from redis.exceptions import TimeoutError as RedisTimeoutError

from fleet import live
from fleet.listener import FleetListener
from fleet.models import Gateway
from openclaw import GatewayClient
from tests.support.factories import make_gateway
from tests.support.ports import closed_port

pytestmark = [pytest.mark.gateway, pytest.mark.django_db(transaction=True)]

REFRESH = 0.2
WRONG_TOKEN = "listener-wrong-token-41d7c2"  # a marker to look for in recorded reasons


@sync_to_async
def fetch(pk: int) -> Gateway:
    return Gateway.objects.get(pk=pk)


@sync_to_async
def update_gateway(pk: int, **fields: Any) -> None:
    Gateway.objects.filter(pk=pk).update(**fields)


async def wait_for_row(pk: int, predicate: Callable[[Gateway], bool], timeout: float = 20.0) -> Gateway:
    """Poll the row until ``predicate`` holds; fail with the last state seen after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        row = await fetch(pk)
        if predicate(row):
            return row
        if time.monotonic() > deadline:
            pytest.fail(f"gateway {row.name}: still {row.status!r} ({row.status_reason!r}) after {timeout} s")
        await asyncio.sleep(0.1)


def is_connected(row: Gateway) -> bool:
    return row.status == Gateway.Status.CONNECTED


@asynccontextmanager
async def listening(refresh: float = REFRESH) -> AsyncIterator[FleetListener]:
    """A running FleetListener, always stopped (and its task awaited) on the way out."""
    listener = FleetListener(refresh_interval=refresh)
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop), name="listener-under-test")
    try:
        yield listener
        assert not task.done(), f"the listener stopped on its own: {task.exception()!r}"
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, timeout=15)
        finally:
            # The listener's ORM work ran on asgiref's sync thread: close its connections there.
            await sync_to_async(connections.close_all)()
    assert listener.watches == {}, "stop() left watches behind"


def auth_failures(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    """The client logs one warning per failed connection attempt."""
    return [
        r
        for r in caplog.records
        if r.name == "agentflow.gateway"
        and r.levelno >= logging.WARNING
        and f"gateway {name}:" in r.getMessage()
        and "AUTH_TOKEN_MISMATCH" in r.getMessage()
    ]


async def test_the_listener_marks_a_reachable_gateway_connected(gateway_row):
    async with listening() as listener:
        row = await wait_for_row(gateway_row.pk, is_connected)
        assert row.version == "2026.9.6"
        assert row.protocol == 4
        assert row.last_connected_at is not None
        watch = listener.watches[gateway_row.pk]
        assert watch.client is not None and watch.client.connected
        assert watch.client.stats["connects"] == 1


async def test_a_rejected_token_is_recorded_once_and_not_retried_while_the_other_gateway_stays_up(
    gateway_row, live_openclaw, caplog
):
    caplog.set_level(logging.INFO, logger="agentflow")
    bad = await sync_to_async(make_gateway)("bad-token-gw", url=live_openclaw.url, token=WRONG_TOKEN)
    async with listening() as listener:
        await wait_for_row(gateway_row.pk, is_connected)
        failed = await wait_for_row(bad.pk, lambda r: r.status == Gateway.Status.AUTH_FAILED)
        assert failed.last_error_code == "AUTH_TOKEN_MISMATCH"
        assert "token" in failed.status_reason
        assert WRONG_TOKEN not in failed.status_reason
        assert failed.latency_ms is None

        await asyncio.sleep(0.5)  # let the failure settle, then watch for ~15 refresh intervals
        watch = listener.watches[bad.pk]
        settled = await fetch(bad.pk)
        await asyncio.sleep(3)

        after = await fetch(bad.pk)
        assert after.status == Gateway.Status.AUTH_FAILED
        assert after.last_checked_at == settled.last_checked_at, "the bad token was tried again"
        assert listener.watches[bad.pk] is watch, "the watch was restarted without an edit"
        assert not watch.task.done()
        assert watch.client is not None and watch.client.state == "auth_failed"
        assert watch.client.stats["connects"] == 0
        assert len(auth_failures(caplog, "bad-token-gw")) == 1, "one rejected token, one connection attempt"
        waiting = [
            r
            for r in caplog.records
            if r.name == "agentflow.listener" and "waiting for the admin" in r.message
        ]
        assert len(waiting) == 1

        # The healthy gateway was never disturbed.
        good = await fetch(gateway_row.pk)
        assert good.status == Gateway.Status.CONNECTED
        good_client = listener.watches[gateway_row.pk].client
        assert good_client is not None and good_client.connected
        assert good_client.stats["connects"] == 1 and good_client.stats["reconnects"] == 0
    for record in caplog.records:
        assert WRONG_TOKEN not in record.getMessage()
        assert live_openclaw.token not in record.getMessage()


async def test_fixing_a_rejected_token_connects_within_a_few_refresh_intervals(gateway_row, live_openclaw):
    bad = await sync_to_async(make_gateway)("fixable-gw", url=live_openclaw.url, token=WRONG_TOKEN)
    async with listening() as listener:
        await wait_for_row(bad.pk, lambda r: r.status == Gateway.Status.AUTH_FAILED)
        old_watch = listener.watches[bad.pk]

        await update_gateway(bad.pk, token=live_openclaw.token)
        started = time.monotonic()
        row = await wait_for_row(bad.pk, is_connected, timeout=10)
        elapsed = time.monotonic() - started

        assert row.status_reason == ""
        assert row.last_error_code == ""
        assert listener.watches[bad.pk] is not old_watch
        assert old_watch.task.done()
        assert elapsed < 5 * REFRESH + 3, f"took {elapsed:.1f} s to pick up the new token"
        assert (await fetch(gateway_row.pk)).status == Gateway.Status.CONNECTED


async def test_a_refused_port_is_recorded_as_disconnected_with_the_reason(gateway_row):
    port = closed_port()
    down = await sync_to_async(make_gateway)("refused-gw", url=f"ws://127.0.0.1:{port}/", token=WRONG_TOKEN)
    async with listening():
        row = await wait_for_row(down.pk, lambda r: r.status == Gateway.Status.DISCONNECTED)
        assert "refused" in row.status_reason
        assert f"127.0.0.1:{port}" in row.status_reason
        assert row.last_error_code == "CONNECTION_LOST"
        assert WRONG_TOKEN not in row.status_reason
        await wait_for_row(gateway_row.pk, is_connected)


async def test_disabling_a_gateway_stops_its_watch(gateway_row):
    async with listening() as listener:
        await wait_for_row(gateway_row.pk, is_connected)
        client = listener.watches[gateway_row.pk].client
        await update_gateway(gateway_row.pk, enabled=False)
        deadline = time.monotonic() + 10
        while (
            gateway_row.pk in listener.watches or client.state != "closed"
        ) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert gateway_row.pk not in listener.watches
        assert client.state == "closed"
        assert not client.connected


def pulse_keys(message: dict) -> set[str]:
    """Session keys a session push is about: ``session.pulse`` carries one, ``sessions.changed`` a list."""
    if message.get("kind") == "session.pulse":
        return {message.get("session_key", "")}
    if message.get("kind") == "sessions.changed":
        return {c.get("session_key", "") for c in message.get("changes", ()) if isinstance(c, dict)}
    return set()


async def receive_until(
    layer, channel: str, done: Callable[[list[dict]], bool], timeout: float
) -> list[dict]:
    messages: list[dict] = []
    deadline = time.monotonic() + timeout
    while not done(messages):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            messages.append(await asyncio.wait_for(layer.receive(channel), remaining))
        except TimeoutError:
            break
        except RedisTimeoutError:
            # redis-py reports the cancellation by wait_for as its own timeout; anything earlier is a
            # slow Redis read, and the message is still queued: ask again.
            continue
    return messages


async def test_a_chat_run_is_pushed_to_the_gateway_group(gateway_row, live_openclaw):
    layer = get_channel_layer()
    group = live.gateway_group(gateway_row.pk)
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    session_key = f"agent:main:listener-{uuid.uuid4().hex[:8]}"

    def runs(messages: list[dict]) -> list[dict]:
        return [m for m in messages if m.get("kind") == "agent.run" and m.get("session_key") == session_key]

    def pulses(messages: list[dict]) -> list[dict]:
        return [m for m in messages if session_key in pulse_keys(m)]

    sender = GatewayClient(live_openclaw.url, live_openclaw.token)
    try:
        async with listening():
            # The status push comes right before sessions.subscribe, which the run's pulses need.
            status = await receive_until(
                layer, channel, lambda ms: any(m.get("kind") == "gateway.status" for m in ms), timeout=20
            )
            assert [(m["type"], m["gateway_id"], m["status"]) for m in status] == [
                ("gateway_status", gateway_row.pk, "connected")
            ]
            await wait_for_row(gateway_row.pk, is_connected)
            await asyncio.sleep(0.5)  # sessions.subscribe is one round trip after the status push

            await sender.connect()
            ack = await sender.chat_send(session_key, "hello from the listener test")
            assert ack["status"] == "started"

            def run_ended(ms: list[dict]) -> bool:
                return bool(pulses(ms)) and any(m["phase"] == "end" for m in runs(ms))

            messages = await receive_until(layer, channel, run_ended, timeout=60)
    finally:
        await sender.close()
        await layer.group_discard(group, channel)

    kinds = [m.get("kind") for m in messages]
    assert pulses(messages), f"no session push for {session_key}; got {kinds}"
    assert runs(messages), f"no agent.run for {session_key}; got {kinds}"
    assert all(m["gateway_id"] == gateway_row.pk for m in messages)
    assert all(m["type"] == m["kind"].replace(".", "_") for m in messages)
    phases = [r["phase"] for r in runs(messages)]
    assert phases[0] == "start" and phases[-1] == "end", phases
    assert all(r["agent_id"] == "main" for r in runs(messages))
    for message in messages:
        assert live_openclaw.token not in repr(message)
