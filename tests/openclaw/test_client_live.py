"""The gateway client against the real, pinned OpenClaw gateway (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from openclaw import (
    AuthError,
    Backoff,
    ConnectionLostError,
    GatewayClient,
    InvalidRequestError,
    SyncGatewayClient,
    assess,
)
from openclaw.client import READ, WRITE

pytestmark = pytest.mark.gateway


async def wait_for(predicate, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return predicate()


async def test_it_completes_the_handshake_and_reads_hello(live_openclaw):
    client = GatewayClient(live_openclaw.url, live_openclaw.token)
    hello = await client.connect()
    try:
        assert hello.protocol == 4
        assert hello.server_version == "2026.9.6"
        assert {"health", "agents.list", "chat.send", "config.patch"} <= hello.methods
        assert hello.has_scope("operator.write")
        assert hello.policy.tick_interval_ms > 0
        compat = assess(hello)
        assert compat.mode == "ok", compat.reasons
        assert not compat.can_edit_config  # read + write only: config edits need operator.admin
    finally:
        await client.close()


async def test_agents_list_shows_the_three_demo_agents(live_openclaw):
    client = GatewayClient(live_openclaw.url, live_openclaw.token)
    await client.connect()
    try:
        roster = await client.agents_list()
    finally:
        await client.close()
    ids = {agent["id"] for agent in roster["agents"]}
    assert {"main", "researcher", "writer"} <= ids
    assert roster["defaultId"] == "main"


async def test_chat_send_streams_events_and_the_reply_lands_in_history(live_openclaw):
    client = GatewayClient(live_openclaw.url, live_openclaw.token)
    seen: list[tuple[str, dict]] = []
    client.on("chat", lambda e: seen.append(("chat", e.payload)))
    client.on("agent", lambda e: seen.append(("agent", e.payload)))
    await client.connect()
    session = f"agent:researcher:test-{uuid.uuid4().hex[:8]}"
    try:
        ack = await client.chat_send(session, "ping from the tests", idempotency_key=str(uuid.uuid4()))
        assert ack["status"] == "started"
        run_id = ack["runId"]

        def finished():
            return any(
                k == "chat" and p.get("runId") == run_id and p.get("state") == "final" for k, p in seen
            )

        assert await wait_for(finished, timeout=60), f"no final chat event; saw {len(seen)} events"
        deltas = [
            p for k, p in seen if k == "chat" and p.get("runId") == run_id and p.get("state") == "delta"
        ]
        assert deltas, "the reply was not streamed as deltas"
        assert any(k == "agent" and p.get("stream") == "lifecycle" for k, p in seen)

        history = await client.chat_history(session, limit=20)
        texts = [json.dumps(m.get("content")) for m in history["messages"]]
        assert any("You said: ping from the tests" in t for t in texts), texts
        assert all(m.get("__openclaw", {}).get("id") for m in history["messages"])
    finally:
        await client.close()


async def test_a_repeated_idempotency_key_does_not_start_a_second_run(live_openclaw):
    client = GatewayClient(live_openclaw.url, live_openclaw.token)
    await client.connect()
    key = str(uuid.uuid4())
    try:
        first = await client.chat_send("agent:writer:idem", "once", idempotency_key=key)
        second = await client.chat_send("agent:writer:idem", "once", idempotency_key=key)
    finally:
        await client.close()
    assert first["runId"] == second["runId"]


async def test_config_patch_emits_config_changed(live_openclaw):
    # config.patch is an operator.admin method on the gateway.
    client = GatewayClient(live_openclaw.url, live_openclaw.token, scopes=(READ, WRITE, "operator.admin"))
    changed: list[dict] = []
    client.on("config.changed", lambda e: changed.append(e.payload))
    await client.connect()
    try:
        config = await client.config_get()
        emoji = "🧪" if "🧪" not in json.dumps(config.get("config")) else "🦊"
        result = await client.config_patch(
            {"agents": {"entries": {"writer": {"identity": {"emoji": emoji}}}}},
            config["hash"],
            note="agentflow test",
        )
        assert result["hash"] != config["hash"]
        assert any("writer" in path for path in result.get("changedPaths", []))
        assert await wait_for(lambda: any(c.get("hash") == result["hash"] for c in changed), timeout=15)
        with pytest.raises(InvalidRequestError):
            await client.config_patch({"agents": {}}, config["hash"])  # stale base hash
    finally:
        await client.close()


async def test_a_bad_token_is_an_auth_error_and_is_not_retried(live_openclaw):
    client = GatewayClient(
        live_openclaw.url, "not-the-token", backoff=Backoff(base=0.01, cap=0.05, floor=0.01)
    )
    started = time.monotonic()
    with pytest.raises(AuthError) as info:
        await asyncio.wait_for(client.run(), timeout=30)
    assert info.value.detail_code == "AUTH_TOKEN_MISMATCH"
    assert "token" in info.value.operator_message
    assert client.stats["connects"] == 0
    assert client.state == "auth_failed"
    assert time.monotonic() - started < 15


async def test_two_hundred_concurrent_requests_are_correlated(live_openclaw):
    client = GatewayClient(live_openclaw.url, live_openclaw.token)
    await client.connect()
    try:
        sessions = [f"agent:main:nope-{i}" for i in range(200)]
        results = await asyncio.gather(*[client.chat_history(key, limit=1) for key in sessions])
    finally:
        await client.close()
    assert [r["sessionKey"] for r in results] == sessions


def test_the_sync_facade_serves_tasks_and_commands(live_openclaw):
    with SyncGatewayClient(live_openclaw.url, live_openclaw.token) as client:
        assert client.hello.protocol == 4
        assert client.health()["ok"] is True
        rows = client.sessions_list(page_size=1)
        assert isinstance(rows, list)


async def test_it_reconnects_and_resubscribes_after_a_gateway_restart(live_openclaw):
    client = GatewayClient(live_openclaw.url, live_openclaw.token, backoff=Backoff(base=0.2, cap=1.0))
    subscribed: list[float] = []

    async def resubscribe(c, hello):
        await c.sessions_subscribe()
        subscribed.append(time.monotonic())

    client.on_connect(resubscribe)
    runner = asyncio.create_task(client.run())
    try:
        assert await wait_for(lambda: len(subscribed) == 1, timeout=20)
        await asyncio.to_thread(live_openclaw.stop)
        assert await wait_for(lambda: not client.connected, timeout=10)
        assert isinstance(client.last_error, ConnectionLostError)
        await asyncio.to_thread(live_openclaw.start, 120)
        assert await wait_for(lambda: len(subscribed) == 2, timeout=60), client.last_error
        assert client.state == "connected"
        assert client.stats["reconnects"] >= 1
        assert (await client.health())["ok"] is True
    finally:
        await client.close()
        await asyncio.gather(runner, return_exceptions=True)
