"""fleet.events.handle: gateway events turned into dashboard updates, replayed from the
captured chat.send event stream (tests/fixtures/frames/42-chat.send.event-stream.json)."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest
import time_machine
from asgiref.sync import async_to_sync

from fleet import events, live
from fleet.models import AgentSession, Gateway, from_ms
from openclaw import Event
from scheduler import tasks
from tests.support.factories import make_gateway, make_session
from tests.support.frames import load_frame
from tests.support.live import Listener

pytestmark = [pytest.mark.usefixtures("redis_prefix"), pytest.mark.django_db, pytest.mark.redis]

FRAMES = load_frame("42-chat.send.event-stream.json")
SESSION_EVENTS = [f for f in FRAMES if f["event"] == "sessions.changed"]
FIRST = SESSION_EVENTS[0]["payload"]  # the run just started: hasActiveRun
LAST = SESSION_EVENTS[-1]["payload"]  # the run ended
KEY = FIRST["sessionKey"]


def event(frame: dict) -> Event:
    return Event(event=frame["event"], payload=copy.deepcopy(frame.get("payload")))


def handle(gateway: Gateway, *frames: dict) -> None:
    for frame in frames:
        async_to_sync(events.handle)(gateway.pk, event(frame))


@pytest.fixture
def gateway(db):
    return make_gateway("alpha", token="events-test-token")


@pytest.fixture
def at_event_time():
    """Now = a few seconds after the captured run, so its session counts as recent."""
    with time_machine.travel(from_ms(LAST["session"]["updatedAt"]) + timedelta(seconds=5), tick=False):
        yield


@pytest.fixture
def listen():
    listeners: list[Listener] = []

    def make(group: str) -> Listener:
        listeners.append(Listener(group))
        return listeners[-1]

    yield make
    for listener in listeners:
        listener.close()


def test_a_sessions_changed_event_upserts_the_session_at_once(gateway, at_event_time, listen):
    pulse = listen(live.gateway_group(gateway.pk))
    handle(gateway, SESSION_EVENTS[0])

    session = AgentSession.objects.get(gateway=gateway)
    assert session.session_key == KEY == "agent:researcher:main"
    assert (session.status, session.has_active_run, session.agent_key) == ("active", True, "researcher")
    assert session.agent.agent_id == "researcher"
    message = pulse.receive()
    assert message["type"] == "sessions_changed"
    assert message["kind"] == "sessions.changed"
    assert message["gateway_id"] == gateway.pk
    assert message["changes"] == [
        {
            "session_key": KEY,
            "agent_id": "researcher",
            "status": "active",
            "status_label": "Active",
            "previous_status": None,
            "has_active_run": True,
        }
    ]


def test_the_whole_event_stream_leaves_the_session_as_the_run_ended(gateway, at_event_time):
    handle(gateway, *FRAMES)
    session = AgentSession.objects.get(gateway=gateway)
    assert (session.status, session.has_active_run) == ("active", False)
    assert session.total_tokens == LAST["session"]["totalTokens"] > 0
    assert session.run_ended_at == from_ms(LAST["session"]["endedAt"])


def test_a_repeated_event_writes_and_pushes_nothing(gateway, at_event_time, listen):
    handle(gateway, SESSION_EVENTS[-1])
    synced = AgentSession.objects.get().synced_at
    pulse = listen(live.gateway_group(gateway.pk))
    handle(gateway, SESSION_EVENTS[-1])
    assert AgentSession.objects.get().synced_at == synced
    assert pulse.receive(timeout=0.5) is None


def test_an_event_leaves_the_other_sessions_alone(gateway, at_event_time):
    make_session(gateway, "agent:main:main", status="active")
    handle(gateway, SESSION_EVENTS[0])
    assert AgentSession.objects.get(session_key="agent:main:main").status == "active"
    assert AgentSession.objects.count() == 2


def test_a_run_start_and_end_are_pushed_as_run_indicators(gateway, listen):
    pulse = listen(live.gateway_group(gateway.pk))
    lifecycle = [f for f in FRAMES if f["event"] == "agent" and f["payload"].get("stream") == "lifecycle"]
    handle(gateway, *lifecycle)
    phases = []
    while (message := pulse.receive(timeout=0.5)) is not None:
        assert message["type"] == "agent_run"
        assert (message["agent_id"], message["session_key"]) == ("researcher", KEY)
        phases.append(message["phase"])
    assert phases == ["start", "end"]  # "model" and "finishing" are not run boundaries


def test_chat_deltas_go_to_the_sessions_chat_group(gateway, listen):
    panel = listen(live.chat_group(gateway.pk, KEY))
    handle(gateway, *[f for f in FRAMES if f["event"] == "chat"])
    states = []
    while (message := panel.receive(timeout=0.5)) is not None:
        states.append((message["state"], message["delta"]))
    assert states[0] == ("delta", "[stub:stub-model]")
    assert states[-1][0] == "final"
    assert "".join(delta for _, delta in states).startswith("[stub:stub-model] You said: Hello researcher")


def test_config_changed_queues_a_config_poll(gateway, monkeypatch):
    sent = []
    monkeypatch.setattr(tasks.run_batch_for, "delay", lambda *args, **kwargs: sent.append(args))
    handle(gateway, {"event": "config.changed", "payload": {"hash": "new"}})
    assert sent == [("BATCH-002", gateway.pk)]


@pytest.mark.parametrize(
    "frame",
    [
        {"event": "something.new", "payload": {"session": {"key": "agent:main:main"}}},
        {"event": "tick", "payload": {"ts": 1}},
        {"event": "session.message", "payload": FRAMES[2]["payload"]},
        {"event": "sessions.changed", "payload": None},
        {"event": "sessions.changed", "payload": ["not", "a", "dict"]},
        {"event": "sessions.changed", "payload": {"sessionKey": KEY}},  # no session row
        {"event": "sessions.changed", "payload": {"session": {"key": 42}}},
        {"event": "sessions.changed", "payload": {"session": "agent:main:main"}},
        {"event": "agent", "payload": {"stream": "lifecycle", "data": "start"}},
        {"event": "chat", "payload": {"sessionKey": None, "state": "delta"}},
    ],
)
def test_unknown_and_malformed_events_are_ignored(gateway, listen, frame):
    pulse = listen(live.gateway_group(gateway.pk))
    handle(gateway, frame)
    assert AgentSession.objects.count() == 0
    assert pulse.receive(timeout=0.2) is None


def test_the_dispatch_table_and_the_ignored_set_do_not_overlap():
    assert set(events.HANDLERS) == {"sessions.changed", "agent", "chat", "config.changed"}
    assert not set(events.HANDLERS) & events.IGNORED


def test_ignored_events_are_silent_and_unknown_ones_are_logged_at_debug(gateway, caplog):
    caplog.set_level("DEBUG", logger="agentflow.events")
    handle(gateway, {"event": "tick", "payload": {"ts": 1}}, {"event": "brand.new", "payload": {}})
    logged = [r.getMessage() for r in caplog.records if r.name == "agentflow.events"]
    assert logged == [f"gateway {gateway.pk}: event brand.new not handled"]
