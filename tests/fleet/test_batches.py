"""The batches (BATCH-001…005) run through the runner against the real OpenClaw gateway.

Gateway timestamps are real; "time passing" is time-machine moving our clock past them. The one
chat turn these tests need is made once (``support.chatted_session``).
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from fleet import batches, chats, configs, live, sessions
from fleet.models import Agent, AgentSession, ChatHistory, ConfigHistory, Gateway, HealthSample
from scheduler import runner
from scheduler.models import BatchRun
from tests.support.factories import make_gateway, make_session
from tests.support.gateway import (
    STUB_REPLY,
    admin_client,
    chatted_session,
    last_activity,
    session_row,
    wait_for,
)
from tests.support.live import Listener
from tests.support.ports import closed_port

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


@pytest.fixture
def chatted(live_openclaw):
    return chatted_session(live_openclaw)


@pytest.fixture
def listen(redis_prefix):
    listeners: list[Listener] = []

    def make(group: str) -> Listener:
        listeners.append(Listener(group))
        return listeners[-1]

    yield make
    for listener in listeners:
        listener.close()


def poll_sessions(gateway: Gateway) -> BatchRun:
    run = runner.run(batches.SESSION_POLLING, gateway, batches.poll_sessions)
    assert run.status == "ok", run.error
    return run


def activity_of(live_openclaw, key: str):
    """The session's last activity as the gateway reports it now."""
    with admin_client(live_openclaw) as client:
        return last_activity(session_row(client.sessions_list(), key))


def session_writes(queries) -> list[str]:
    return [
        q["sql"]
        for q in queries.captured_queries
        if "dashboard_agentsession" in q["sql"] and q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE"))
    ]


# --- BATCH-001 session polling ----------------------------------------------------------------------


@pytest.mark.gateway
def test_it_marks_a_session_active_while_its_chat_run_is_in_flight(gateway_row, chatted, redis_prefix):
    during = session_row(chatted.rows_during_run, chatted.key)
    assert during is not None and during["hasActiveRun"]
    sessions.sync_sessions(gateway_row, chatted.rows_during_run)
    stored = AgentSession.objects.get(session_key=chatted.key)
    assert (stored.status, stored.has_active_run, stored.agent_key) == ("active", True, "writer")


@pytest.mark.gateway
def test_it_polls_a_session_active_then_idle_then_offline_as_time_passes(
    gateway_row, live_openclaw, chatted, redis_prefix
):
    last = activity_of(live_openclaw, chatted.key)

    with time_machine.travel(last + timedelta(seconds=5), tick=False):
        first = poll_sessions(gateway_row)
    stored = AgentSession.objects.get(session_key=chatted.key)
    assert (stored.status, stored.has_active_run) == ("active", False)
    assert stored.agent == Agent.objects.get(gateway=gateway_row, agent_id="writer")
    assert stored.total_tokens > 0 and stored.model == "stub-model"
    # The overview's session table and agent card: the context window and the last message's preview.
    assert stored.context_tokens >= stored.total_tokens
    assert stored.last_message_preview.startswith("[stub:stub-model]"), stored.last_message_preview
    assert first.counts["sessions"] >= 1 and first.counts["created"] == first.counts["sessions"]
    assert first.counts["invalid"] == 0

    with time_machine.travel(last + timedelta(seconds=90), tick=False):
        poll_sessions(gateway_row)
    assert AgentSession.objects.get(session_key=chatted.key).status == "idle"

    with time_machine.travel(last + timedelta(seconds=400), tick=False):
        poll_sessions(gateway_row)
    assert AgentSession.objects.get(session_key=chatted.key).status == "offline"


@pytest.mark.gateway
def test_an_unchanged_poll_writes_nothing(gateway_row, live_openclaw, chatted, redis_prefix):
    last = activity_of(live_openclaw, chatted.key)
    with time_machine.travel(last + timedelta(seconds=5), tick=False):
        poll_sessions(gateway_row)
        with CaptureQueriesContext(connection) as queries:
            again = poll_sessions(gateway_row)
        assert session_writes(queries) == []
        assert (again.counts["changed"], again.counts["created"], again.counts["updated"]) == (0, 0, 0)

        with admin_client(live_openclaw) as client:
            rows = client.sessions_list()
        with CaptureQueriesContext(connection) as queries:
            result = sessions.sync_sessions(gateway_row, rows)
        assert result.writes == 0
        assert [
            q for q in queries.captured_queries if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE"))
        ] == []


@pytest.mark.gateway
def test_only_the_changed_sessions_are_pushed(gateway_row, live_openclaw, chatted, listen):
    pulse = listen(live.gateway_group(gateway_row.pk))
    last = activity_of(live_openclaw, chatted.key)
    with time_machine.travel(last + timedelta(seconds=5), tick=False):
        first = poll_sessions(gateway_row)
        message = pulse.receive()
        assert message["kind"] == "sessions.changed"
        assert len(message["changes"]) == first.counts["changed"] == first.counts["sessions"]

        poll_sessions(gateway_row)
        assert pulse.receive(timeout=0.5) is None  # nothing changed: nothing pushed

    with time_machine.travel(last + timedelta(seconds=90), tick=False):
        later = poll_sessions(gateway_row)
    message = pulse.receive()
    assert len(message["changes"]) == later.counts["changed"]
    mine = next(c for c in message["changes"] if c["session_key"] == chatted.key)
    assert (mine["status"], mine["previous_status"], mine["agent_id"]) == ("idle", "active", "writer")
    for change in message["changes"]:  # every pushed session did change
        assert change["status"] != change["previous_status"]
    assert live_openclaw.token not in json.dumps(message)


@pytest.mark.gateway
def test_malformed_rows_among_the_gateways_rows_are_counted_invalid(gateway_row, live_openclaw, chatted):
    with admin_client(live_openclaw) as client:
        rows = client.sessions_list()
    result = sessions.sync_sessions(gateway_row, [*rows, None, {"no": "key"}, {"key": 5, "agentId": "x"}])
    assert result.invalid == 3
    assert result.seen == len(rows) == AgentSession.objects.filter(gateway=gateway_row).count()


def test_a_session_poll_given_no_list_is_recorded_as_an_error(db, redis_prefix):
    gateway = make_gateway("odd")
    make_session(gateway, "agent:main:main", status="active")

    run = runner.run(batches.SESSION_POLLING, gateway, lambda g: sessions.sync_sessions(g, {"sessions": []}))

    assert run.status == "error"
    assert run.error.startswith("ValueError: sessions.list gave no list of sessions")
    assert AgentSession.objects.get().status == "active"  # what was stored is untouched


def test_an_unreachable_gateway_skips_the_session_poll(db, redis_prefix):
    gateway = make_gateway("down", url=f"ws://127.0.0.1:{closed_port()}/")
    run = runner.run(batches.SESSION_POLLING, gateway, batches.poll_sessions)
    assert run.status == "skipped"
    assert run.error
    gateway.refresh_from_db()
    assert gateway.status == Gateway.Status.DISCONNECTED


# --- BATCH-002 config polling -----------------------------------------------------------------------


def patch_config(live_openclaw, patch: dict, replace_paths: list[str] | None = None) -> None:
    with admin_client(live_openclaw) as client:
        params = {"raw": json.dumps(patch), "baseHash": client.config_get()["hash"]}
        if replace_paths:
            params["replacePaths"] = replace_paths
        client.call("config.patch", params)


def poll_config(gateway: Gateway) -> BatchRun:
    run = runner.run(batches.CONFIG_POLLING, gateway, batches.poll_config)
    assert run.status == "ok", run.error
    return run


@pytest.mark.gateway
def test_config_changes_are_recorded_once_redacted_and_rebuild_the_org_chart(
    gateway_row, live_openclaw, redis_prefix
):
    first = poll_config(gateway_row)
    assert first.counts["changed"] is True
    assert ConfigHistory.objects.filter(gateway=gateway_row).count() == 1
    agents = {a.agent_id: a for a in Agent.objects.filter(gateway=gateway_row)}
    assert set(agents) == {"main", "researcher", "writer"}
    assert agents["main"].is_default and agents["main"].parent is None
    assert all(a.parent is None for a in agents.values())
    original_emoji = agents["writer"].emoji

    assert poll_config(gateway_row).counts["changed"] is False
    assert ConfigHistory.objects.filter(gateway=gateway_row).count() == 1

    try:
        patch_config(live_openclaw, {"agents": {"entries": {"writer": {"identity": {"emoji": "🖋"}}}}})
        changed = poll_config(gateway_row)
        rows = ConfigHistory.objects.filter(gateway=gateway_row)
        assert rows.count() == 2
        latest = rows.first()
        assert "agents.entries.writer.identity.emoji" in latest.changed_paths
        assert "agents.entries.writer.identity.emoji" in changed.counts["changed_paths"]
        assert '+          "emoji": "🖋",' in latest.diff.splitlines()
        assert Agent.objects.get(gateway=gateway_row, agent_id="writer").emoji == "🖋"
        for row in rows:
            assert live_openclaw.token not in json.dumps(row.config)
            assert live_openclaw.token not in row.diff
            assert row.config["gateway"]["auth"]["token"] != live_openclaw.token

        assert poll_config(gateway_row).counts["changed"] is False
        assert rows.count() == 2

        patch_config(
            live_openclaw, {"agents": {"entries": {"main": {"subagents": {"allowAgents": ["researcher"]}}}}}
        )
        poll_config(gateway_row)
        agents = {a.agent_id: a for a in Agent.objects.filter(gateway=gateway_row)}
        assert agents["researcher"].parent == agents["main"]
        assert agents["writer"].parent is None
        assert agents["main"].parent is None
    finally:
        patch_config(
            live_openclaw,
            {
                "agents": {
                    "entries": {
                        "writer": {"identity": {"emoji": original_emoji}},
                        "main": {"subagents": None},
                    }
                }
            },
            replace_paths=["agents.entries.main.subagents.allowAgents"],
        )

    poll_config(gateway_row)
    assert Agent.objects.get(gateway=gateway_row, agent_id="researcher").parent is None
    assert ConfigHistory.objects.filter(gateway=gateway_row).count() == 4


def test_a_config_payload_without_a_hash_is_recorded_as_an_error_and_keeps_the_history(db, redis_prefix):
    gateway = make_gateway("odd")
    configs.record_config(gateway, {"hash": "h1", "sourceConfig": {"a": 1}})

    bad_config = runner.run(
        batches.CONFIG_POLLING, gateway, lambda g: configs.record_config(g, {"config": {}})
    )
    bad_roster = runner.run(batches.CONFIG_POLLING, gateway, lambda g: configs.rebuild_roster(g, [], {}))

    assert (bad_config.status, bad_config.error) == ("error", "ValueError: config.get returned no hash")
    assert bad_roster.status == "error"
    assert bad_roster.error == "ValueError: agents.list returned no agents list"
    assert list(ConfigHistory.objects.values_list("hash", "config")) == [("h1", {"a": 1})]


# --- BATCH-003 chat polling -------------------------------------------------------------------------


def test_without_an_open_panel_chat_polling_makes_no_gateway_call(db, redis_prefix):
    gateway = make_gateway("nowhere", url=f"ws://127.0.0.1:{closed_port()}/")
    run = runner.run(batches.CHAT_POLLING, gateway, batches.poll_chats)
    assert (run.status, run.counts) == ("ok", {"panels": 0, "stored": 0})
    assert run.duration_ms < 200
    gateway.refresh_from_db()
    assert gateway.status == Gateway.Status.UNKNOWN  # no connection was even attempted


def test_an_expired_panel_is_no_longer_polled(db, redis_prefix):
    gateway = make_gateway("nowhere", url=f"ws://127.0.0.1:{closed_port()}/")
    chats.register_panel(gateway.pk, "agent:main:main", ttl=30)
    with time_machine.travel(time.time() + 31):
        run = runner.run(batches.CHAT_POLLING, gateway, batches.poll_chats)
    assert run.counts == {"panels": 0, "stored": 0}
    assert chats.open_panels(gateway.pk) == []


@pytest.mark.gateway
def test_an_open_panels_reply_is_stored_once_however_often_it_is_polled(gateway_row, chatted, listen):
    panel = listen(live.chat_group(gateway_row.pk, chatted.key))
    chats.register_panel(gateway_row.pk, chatted.key)

    runs = [runner.run(batches.CHAT_POLLING, gateway_row, batches.poll_chats) for _ in range(3)]

    assert [r.status for r in runs] == ["ok"] * 3
    assert [r.counts["stored"] for r in runs] == [len(chatted.messages), 0, 0]
    stored = list(ChatHistory.objects.filter(gateway=gateway_row, session_key=chatted.key))
    assert len(stored) == len(chatted.messages) >= 2
    assert len({m.message_id for m in stored}) == len(stored)
    assert [m.role for m in stored][:2] == ["user", "assistant"]
    assert stored[0].text == chatted.message
    assert stored[1].text == STUB_REPLY + chatted.message
    pushed = panel.receive()
    assert sorted(pushed["message_ids"]) == sorted(m.pk for m in stored)
    assert panel.receive(timeout=0.5) is None  # the re-polls stored and pushed nothing


@pytest.mark.gateway
def test_a_panel_for_a_session_the_gateway_does_not_know_does_not_fail_the_batch(gateway_row, redis_prefix):
    chats.register_panel(gateway_row.pk, "agent:writer:aftest-never-used")
    run = runner.run(batches.CHAT_POLLING, gateway_row, batches.poll_chats)
    assert run.status == "ok"
    assert run.counts["panels"] == 1 and run.counts["stored"] == 0
    assert not ChatHistory.objects.exists()


# --- BATCH-005 health check -------------------------------------------------------------------------


def check_health(gateway: Gateway) -> BatchRun:
    run = runner.run(batches.HEALTH_CHECK, gateway, batches.check_health)
    assert run.status == "ok", run.error
    gateway.refresh_from_db()
    return run


@pytest.mark.gateway
def test_a_health_check_records_connected_and_the_latency(gateway_row, redis_prefix):
    run = check_health(gateway_row)
    assert run.counts["connected"] is True and run.counts["latency_ms"] > 0
    assert gateway_row.status == Gateway.Status.CONNECTED
    assert gateway_row.latency_ms > 0
    sample = HealthSample.objects.get(gateway=gateway_row)
    assert sample.connected and sample.latency_ms == pytest.approx(gateway_row.latency_ms)


@pytest.mark.gateway
def test_health_turns_disconnected_when_the_gateway_stops_and_connected_when_it_returns(
    gateway_row, live_openclaw, listen
):
    pulse = listen(live.gateway_group(gateway_row.pk))
    check_health(gateway_row)
    assert gateway_row.status == Gateway.Status.CONNECTED
    assert pulse.receive()["status"] == "connected"
    try:
        live_openclaw.stop()
        down = check_health(gateway_row)
        assert down.counts["connected"] is False and down.counts["error"]
        assert gateway_row.status == Gateway.Status.DISCONNECTED
        assert gateway_row.latency_ms is None
        assert pulse.receive()["status"] == "disconnected"
        sample = HealthSample.objects.filter(gateway=gateway_row).first()
        assert not sample.connected and sample.error
    finally:
        live_openclaw.start(timeout=120)

    def connected_again():
        return check_health(gateway_row).counts["connected"]

    wait_for(connected_again, timeout=60, interval=1, what="the health check to see the gateway again")
    assert gateway_row.status == Gateway.Status.CONNECTED and gateway_row.latency_ms > 0
    assert (
        list(HealthSample.objects.filter(gateway=gateway_row).values_list("connected", flat=True))[0] is True
    )
