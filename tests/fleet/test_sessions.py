"""fleet.sessions (BATCH-001's domain half): classify session rows, write only what changed.

Rows are the real ``sessions.list`` row captured from the gateway (tests/fixtures/frames), with
timestamps moved next to a fixed "now"; time passes with time-machine.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from fleet import sessions
from fleet.models import Agent, AgentSession
from tests.support.factories import make_gateway
from tests.support.frames import load_frame

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
FRAME_ROW = load_frame("21-sessions.list.one-row.json")["response"]["payload"]["sessions"][0]


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def make_row(key: str = "agent:researcher:main", *, age: float = 5, **fields) -> dict:
    """The captured row, re-keyed, its run finished ``age`` seconds before NOW."""
    row = copy.deepcopy(FRAME_ROW)
    last = NOW - timedelta(seconds=age)
    row.update(
        key=key,
        agentId=key.split(":")[1] if key.count(":") >= 2 else "main",
        hasActiveRun=False,
        activeRunIds=[],
        createdAt=ms(last - timedelta(minutes=5)),
        updatedAt=ms(last),
        lastInteractionAt=ms(last - timedelta(seconds=1)),
        startedAt=ms(last - timedelta(seconds=3)),
        endedAt=ms(last),
    )
    row.update(fields)
    return row


@pytest.fixture
def gateway():
    return make_gateway("alpha", token="sessions-test-token")


def writes(queries) -> list[str]:
    return [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]


# --- classify -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "status"),
    [(0, "active"), (60, "active"), (61, "idle"), (300, "idle"), (301, "offline"), (86400, "offline")],
)
def test_it_classifies_by_the_age_of_the_last_activity(age, status):
    assert sessions.classify(False, NOW - timedelta(seconds=age), NOW) == status


def test_it_classifies_a_session_with_a_run_in_flight_as_active_however_old():
    assert sessions.classify(True, NOW - timedelta(days=3), NOW) == "active"
    assert sessions.classify(True, None, NOW) == "active"


def test_it_classifies_a_session_without_any_timestamp_as_offline():
    assert sessions.classify(False, None, NOW) == "offline"


def test_the_thresholds_come_from_settings(settings):
    settings.AGENTFLOW_SESSION_ACTIVE_SECONDS = 10
    settings.AGENTFLOW_SESSION_IDLE_SECONDS = 20
    assert sessions.classify(False, NOW - timedelta(seconds=15), NOW) == "idle"
    assert sessions.classify(False, NOW - timedelta(seconds=25), NOW) == "offline"


# --- sync_sessions: writing -----------------------------------------------------------------------


def test_it_stores_new_sessions_with_their_fields(gateway):
    row = make_row(totalTokens=1234, inputTokens=1000, outputTokens=234, lastRunId="run-1")
    result = sessions.sync_sessions(gateway, [row], NOW)
    assert (result.seen, result.created, result.updated, result.invalid) == (1, 1, 0, 0)
    stored = AgentSession.objects.get()
    assert stored.session_key == "agent:researcher:main"
    assert stored.status == "active"
    assert stored.agent_key == "researcher"
    assert stored.agent == Agent.objects.get(gateway=gateway, agent_id="researcher")
    assert stored.kind == "direct"
    assert stored.model == "stub-model"
    assert (stored.input_tokens, stored.output_tokens, stored.total_tokens) == (1000, 234, 1234)
    assert stored.last_run_id == "run-1"
    assert stored.session_id == FRAME_ROW["sessionId"]
    assert stored.gw_updated_at == NOW - timedelta(seconds=5)
    assert result.changes == [
        {
            "session_key": "agent:researcher:main",
            "agent_id": "researcher",
            "status": "active",
            "status_label": "Active",
            "previous_status": None,
            "has_active_run": False,
        }
    ]


def test_it_marks_a_session_with_a_run_in_flight_active(gateway):
    row = make_row(age=3600, hasActiveRun=True, activeRunIds=["run-2"])
    sessions.sync_sessions(gateway, [row], NOW)
    stored = AgentSession.objects.get()
    assert (stored.status, stored.has_active_run) == ("active", True)


def test_an_unchanged_poll_writes_nothing(gateway):
    rows = [make_row("agent:main:main"), make_row("agent:writer:main", age=120)]
    sessions.sync_sessions(gateway, rows, NOW)
    with CaptureQueriesContext(connection) as queries:
        result = sessions.sync_sessions(gateway, copy.deepcopy(rows), NOW)
    assert result.writes == 0
    assert result.changes == []
    assert result.seen == 2
    assert writes(queries.captured_queries) == []
    assert len(queries.captured_queries) <= 2  # the stored state and the agents: one query each


def test_it_turns_idle_after_a_minute_and_offline_after_five_minutes_as_time_passes(gateway):
    rows = [make_row("agent:main:main", age=0), make_row("agent:writer:main", age=0)]
    with time_machine.travel(NOW, tick=False):
        sessions.sync_sessions(gateway, rows)
    assert set(AgentSession.objects.values_list("status", flat=True)) == {"active"}

    with time_machine.travel(NOW + timedelta(seconds=61), tick=False):
        idle = sessions.sync_sessions(gateway, rows)
    assert set(AgentSession.objects.values_list("status", flat=True)) == {"idle"}
    assert [(c["status"], c["previous_status"]) for c in idle.changes] == [("idle", "active")] * 2

    with time_machine.travel(NOW + timedelta(seconds=90), tick=False):
        assert sessions.sync_sessions(gateway, rows).writes == 0

    with time_machine.travel(NOW + timedelta(seconds=301), tick=False):
        offline = sessions.sync_sessions(gateway, rows)
    assert set(AgentSession.objects.values_list("status", flat=True)) == {"offline"}
    assert offline.updated == 2


def test_only_the_sessions_that_changed_are_reported_and_written(gateway):
    rows = [make_row("agent:main:main", age=0), make_row("agent:writer:main", age=200)]
    sessions.sync_sessions(gateway, rows, NOW)
    later = NOW + timedelta(seconds=30)
    rows[1] = make_row("agent:writer:main", age=0, hasActiveRun=True, activeRunIds=["r"])
    rows[1]["updatedAt"] = ms(later)
    with CaptureQueriesContext(connection) as queries:
        result = sessions.sync_sessions(gateway, rows, later)
    assert [c["session_key"] for c in result.changes] == ["agent:writer:main"]
    assert result.changes[0]["previous_status"] == "idle"
    assert result.changes[0]["status"] == "active"
    assert result.updated == 1 and result.created == 0
    assert len([sql for sql in writes(queries.captured_queries) if "dashboard_agentsession" in sql]) == 1


def test_a_session_gone_from_the_gateway_turns_offline_without_being_deleted(gateway):
    rows = [make_row("agent:main:main"), make_row("agent:writer:main", hasActiveRun=True, activeRunIds=["r"])]
    sessions.sync_sessions(gateway, rows, NOW)
    title = AgentSession.objects.get(session_key="agent:writer:main").title
    result = sessions.sync_sessions(gateway, rows[:1], NOW)
    gone = AgentSession.objects.get(session_key="agent:writer:main")
    assert (gone.status, gone.has_active_run, gone.title) == ("offline", False, title)
    assert [c["session_key"] for c in result.changes] == ["agent:writer:main"]
    assert AgentSession.objects.count() == 2
    assert sessions.sync_sessions(gateway, rows[:1], NOW).writes == 0  # already offline: nothing more


def test_a_partial_update_leaves_the_other_sessions_alone(gateway):
    sessions.sync_sessions(gateway, [make_row("agent:main:main"), make_row("agent:writer:main")], NOW)
    result = sessions.sync_sessions(
        gateway, [make_row("agent:writer:main", hasActiveRun=True, activeRunIds=["r"])], NOW, partial=True
    )
    assert [c["session_key"] for c in result.changes] == ["agent:writer:main"]
    assert AgentSession.objects.get(session_key="agent:main:main").status == "active"


def test_it_links_a_subagent_session_to_its_parent(gateway):
    parent = make_row("agent:main:main")
    child = make_row("agent:researcher:subagent:1", spawnedBy="agent:main:main")
    sessions.sync_sessions(gateway, [child, parent], NOW)
    stored = AgentSession.objects.get(session_key="agent:researcher:subagent:1")
    assert stored.parent == AgentSession.objects.get(session_key="agent:main:main")
    assert stored.parent_session_key == "agent:main:main"


def test_sessions_of_other_gateways_are_never_touched(gateway):
    other = make_gateway("beta")
    sessions.sync_sessions(other, [make_row("agent:main:main")], NOW)
    sessions.sync_sessions(gateway, [], NOW)
    assert AgentSession.objects.get(gateway=other).status == "active"


# --- sync_sessions: bad input ---------------------------------------------------------------------


def test_malformed_rows_are_counted_invalid_and_the_valid_ones_stored(gateway):
    rows = [
        make_row("agent:main:main"),
        None,
        "agent:main:main",
        42,
        [],
        {},
        {"key": ""},
        {"key": 17},
        {"key": None, "agentId": "main"},
        {"key": "x" * 501},
        {"sessionKey": "agent:main:other"},  # the event's field name, not the row's
    ]
    result = sessions.sync_sessions(gateway, rows, NOW)
    assert result.invalid == 10
    assert (result.seen, result.created) == (1, 1)
    assert list(AgentSession.objects.values_list("session_key", flat=True)) == ["agent:main:main"]


def test_odd_field_types_are_coerced_not_fatal(gateway):
    row = {
        "key": "agent:writer:odd",
        "agentId": ["writer"],
        "kind": 7,
        "title": {"text": "not a string"},
        "model": None,
        "inputTokens": "1000",
        "outputTokens": -5,
        "totalTokens": True,
        "updatedAt": "yesterday",
        "createdAt": -1,
        "lastInteractionAt": float("nan"),
        "startedAt": 10**30,
        "hasActiveRun": "yes",
        "activeRunIds": None,
        "extra": {"deeply": [{"nested": "fields"}]},
        "another-extra": "ignored",
    }
    result = sessions.sync_sessions(gateway, [row], NOW)
    assert (result.seen, result.invalid) == (1, 0)
    stored = AgentSession.objects.get()
    assert (stored.agent_key, stored.kind, stored.title, stored.model) == ("", "", "", "")
    assert (stored.input_tokens, stored.output_tokens, stored.total_tokens) == (0, 0, 0)
    assert stored.gw_updated_at is None and stored.gw_created_at is None
    assert (stored.status, stored.has_active_run) == ("offline", False)
    assert stored.agent is None


def test_huge_numbers_do_not_break_the_poll(gateway):
    rows = [make_row("agent:main:main", totalTokens=10**30, inputTokens=1e300), make_row("agent:writer:main")]
    result = sessions.sync_sessions(gateway, rows, NOW)
    assert result.seen == 2 and AgentSession.objects.count() == 2
    stored = AgentSession.objects.get(session_key="agent:main:main")
    assert stored.total_tokens == stored.input_tokens == 2**63 - 1
    assert sessions.sync_sessions(gateway, rows, NOW).writes == 0


def test_long_and_odd_text_is_stored_truncated(gateway):
    title = "🦀 ünïcödé\u200b\tRTL \u202e txet " + "x" * (1024 * 1024)
    row = make_row("agent:main:main", title=title, model="m" * 5000, kind="k" * 100)
    sessions.sync_sessions(gateway, [row], NOW)
    stored = AgentSession.objects.get()
    assert stored.title == title[:500]
    assert (len(stored.model), len(stored.kind)) == (200, 50)
    assert sessions.sync_sessions(gateway, [row], NOW).writes == 0


def test_a_poll_that_is_not_a_list_raises_a_clear_error_and_keeps_what_is_stored(gateway):
    sessions.sync_sessions(gateway, [make_row("agent:main:main")], NOW)
    before = list(AgentSession.objects.values_list("session_key", "status", "title"))
    for payload in (None, {"sessions": []}, "agent:main:main", 42):
        with pytest.raises(ValueError, match="list"):
            sessions.sync_sessions(gateway, payload, NOW)
    assert list(AgentSession.objects.values_list("session_key", "status", "title")) == before


def test_a_list_of_only_malformed_rows_is_an_error_not_an_empty_fleet(gateway):
    with time_machine.travel(NOW, tick=False):
        sessions.sync_sessions(gateway, [make_row("agent:main:a"), make_row("agent:main:b")], now=NOW)
        with pytest.raises(ValueError, match="none is a valid session"):
            sessions.sync_sessions(gateway, [{"nokey": 1}, "junk", None], now=NOW)
    statuses = set(AgentSession.objects.filter(gateway=gateway).values_list("status", flat=True))
    assert statuses == {AgentSession.Status.ACTIVE}


# --- tokens against the context window, last-message preview (the overview's session table) ------


def test_it_stores_the_context_window_and_a_one_line_preview_of_the_last_message(gateway):
    long = "first line\nsecond   line " + "word " * 100
    sessions.sync_sessions(
        gateway,
        [make_row("agent:main:main", totalTokens=12_300, contextTokens=200_000, lastMessagePreview=long)],
        NOW,
    )
    stored = AgentSession.objects.get(session_key="agent:main:main")
    assert (stored.total_tokens, stored.context_tokens) == (12_300, 200_000)
    assert stored.last_message_preview.startswith("first line second line word")
    assert len(
        stored.last_message_preview
    ) == sessions.PREVIEW_CHARS and stored.last_message_preview.endswith("…")


def test_an_event_row_without_preview_or_context_window_keeps_the_stored_ones(gateway):
    sessions.sync_sessions(
        gateway, [make_row("agent:main:main", contextTokens=128_000, lastMessagePreview="hello there")], NOW
    )
    event_row = make_row("agent:main:main", hasActiveRun=True, activeRunIds=["r"])
    event_row.pop("contextTokens", None)
    event_row.pop("lastMessagePreview", None)
    result = sessions.sync_sessions(gateway, [event_row], NOW, partial=True)
    assert [c["session_key"] for c in result.changes] == ["agent:main:main"]
    stored = AgentSession.objects.get(session_key="agent:main:main")
    assert stored.has_active_run
    assert (stored.context_tokens, stored.last_message_preview) == (128_000, "hello there")


def test_odd_preview_and_context_values_are_coerced_not_fatal(gateway):
    sessions.sync_sessions(
        gateway, [make_row("agent:main:main", contextTokens="big", lastMessagePreview=42)], NOW
    )
    stored = AgentSession.objects.get(session_key="agent:main:main")
    assert (stored.context_tokens, stored.last_message_preview) == (0, "")
