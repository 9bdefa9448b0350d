"""Frame parsing and the hello-ok summary, against the frames captured from a real gateway."""

from __future__ import annotations

import copy
import json

import pytest

from openclaw.compat import assess
from openclaw.errors import MalformedFrameError
from openclaw.frames import (
    PROTOCOL_VERSION,
    Event,
    HelloInfo,
    Policy,
    Response,
    parse_frame,
    request_frame,
)
from tests.support.frames import FIXTURES, load_frame

HELLO = "03-connect.hello-ok.response.json"

# Captures whose "response" member is a whole res frame, and whether it succeeded.
RESPONSE_CAPTURES = {
    "10-health.json": True,
    "11-status.json": True,
    "12-system-presence.json": True,
    "20-sessions.list.empty.json": True,
    "21-sessions.list.one-row.json": True,
    "23-sessions.subscribe.json": True,
    "24-sessions.describe.json": True,
    "30-config.get.json": True,
    "31-agents.list.json": True,
    "32-models.list.json": True,
    "40-chat.history.empty.json": True,
    "41-chat.send.ack.json": True,
    "43-chat.history.after-turn.json": True,
    "45-chat.send.duplicate-idempotencyKey.json": True,
    "50-config.patch.error-no-baseHash.json": False,
    "51-config.patch.error-stale-baseHash.json": False,
    "52-config.patch.ok.json": True,
    "54-config.patch.error-invalid-config.json": False,
    "60-error.unknown-method.json": False,
    "61-error.bad-params.json": False,
    "62-error.connect-bad-token.json": False,
    "63-error.connect-no-auth.json": False,
    "64-error.connect-protocol-mismatch.json": False,
    "67-error.chat.send-unknown-agent.json": False,
    "68-error.chat.send-missing-idempotencyKey.json": False,
}
EVENT_STREAMS = (
    "42-chat.send.event-stream.json",
    "53-config.changed.event-after-patch.json",
    "55-config.changed.event-after-file-edit.json",
)


def wire(frame: object) -> str:
    """A captured frame as the text the gateway put on the socket."""
    return json.dumps(frame)


# --- parse_frame: captured shapes ---------------------------------------------------------------


def test_it_lists_every_response_capture_in_the_fixtures():
    # Guard for the table above: a new capture with a "response" must be added to it.
    captured = {
        path.name
        for path in FIXTURES.glob("*.json")
        if isinstance(load_frame(path.name), dict) and "response" in load_frame(path.name)
    }
    assert captured == set(RESPONSE_CAPTURES)


def test_it_parses_the_connect_challenge_event():
    frame = parse_frame(wire(load_frame("01-connect.challenge.event.json")))
    assert isinstance(frame, Event)
    assert frame.event == "connect.challenge"
    assert frame.payload["nonce"] == "5ae646e3-e4e8-4d2c-9fa6-a758aa23032b"
    assert frame.payload["ts"] == 1795311702730
    assert frame.seq is None


def test_it_parses_the_hello_ok_response():
    frame = parse_frame(wire(load_frame(HELLO)))
    assert isinstance(frame, Response)
    assert frame.id == "connect-e04da5d3"
    assert frame.ok is True
    assert frame.payload["type"] == "hello-ok"
    assert frame.error is None


def test_it_parses_a_tick_event_with_its_seq():
    frame = parse_frame(wire(load_frame("46-tick.event.json")))
    assert frame == Event(event="tick", payload={"ts": 1795312144876}, seq=59)


@pytest.mark.parametrize(("name", "ok"), sorted(RESPONSE_CAPTURES.items()))
def test_it_parses_every_captured_response(name, ok):
    captured = load_frame(name)["response"]
    frame = parse_frame(wire(captured))
    assert isinstance(frame, Response)
    assert frame.id == captured["id"]
    assert frame.ok is ok
    if ok:
        assert frame.payload == captured["payload"]
        assert frame.error is None
    else:
        assert frame.payload is None
        assert frame.error == captured["error"]
        assert isinstance(frame.error["code"], str)


def test_it_parses_a_bare_error_response():
    frame = parse_frame(wire(load_frame("65-error.missing-scope.json")))
    assert isinstance(frame, Response)
    assert (frame.id, frame.ok) == ("r1", False)
    assert frame.error["code"] == "FORBIDDEN"


def test_it_parses_the_received_text_of_the_first_frame_not_connect_capture():
    frame = parse_frame(load_frame("66-error.first-frame-not-connect.json")["received"])
    assert isinstance(frame, Response)
    assert (frame.id, frame.ok) == ("x1", False)
    assert frame.error["message"] == "invalid handshake: first request must be connect"


def test_it_parses_the_chat_send_acks_of_the_multi_agent_capture():
    for case in load_frame("44-chat.send.multi-agent.json").values():
        frame = parse_frame(wire(case["ack"]))
        assert isinstance(frame, Response)
        assert frame.ok
        assert frame.payload["runId"] == case["request"]["idempotencyKey"]


@pytest.mark.parametrize("name", EVENT_STREAMS)
def test_it_parses_every_event_of_a_captured_stream_keeping_seq(name):
    stream = load_frame(name)
    frames = [parse_frame(wire(raw)) for raw in stream]
    assert all(isinstance(frame, Event) for frame in frames)
    assert [frame.event for frame in frames] == [raw["event"] for raw in stream]
    assert [frame.seq for frame in frames] == [raw["seq"] for raw in stream]
    assert [frame.payload for frame in frames] == [raw["payload"] for raw in stream]


def test_it_finds_the_config_changed_event_after_a_patch_and_a_file_edit():
    for name in EVENT_STREAMS[1:]:
        last = parse_frame(wire(load_frame(name)[-1]))
        assert last.event == "config.changed"
        assert last.payload["hash"].startswith("hmac-sha256:v1:")


def test_it_accepts_utf8_bytes_as_well_as_text():
    raw = wire(load_frame("46-tick.event.json")).encode("utf-8")
    assert parse_frame(raw) == parse_frame(raw.decode("utf-8"))


def test_it_ignores_a_non_integer_event_seq():
    frame = parse_frame('{"type":"event","event":"tick","seq":"7"}')
    assert frame == Event(event="tick", payload=None, seq=None)


def test_it_keeps_unicode_payloads_intact():
    frame = parse_frame('{"type":"res","id":"1","ok":true,"payload":{"emoji":"📝","text":"héllo"}}')
    assert frame.payload == {"emoji": "📝", "text": "héllo"}


# --- parse_frame: malformed input ---------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("this is not json", id="not-json"),
        pytest.param("", id="empty"),
        pytest.param('{"type":"res","id":"1","ok":tru', id="truncated"),
        pytest.param("[1, 2, 3]", id="json-array"),
        pytest.param("null", id="json-null"),
        pytest.param("42", id="json-number"),
        pytest.param('"res"', id="json-string"),
        pytest.param('{"type":"mystery","id":"1"}', id="unknown-type"),
        pytest.param('{"id":"1","ok":true}', id="no-type"),
        pytest.param('{"type":"res","ok":true,"payload":{}}', id="res-without-id"),
        pytest.param('{"type":"res","id":7,"ok":true}', id="res-with-numeric-id"),
        pytest.param('{"type":"res","id":"1","payload":{}}', id="res-without-ok"),
        pytest.param('{"type":"res","id":"1","ok":"true"}', id="res-with-string-ok"),
        pytest.param('{"type":"event","payload":{}}', id="event-without-name"),
        pytest.param('{"type":"event","event":"","payload":{}}', id="event-with-empty-name"),
        pytest.param('{"type":"event","event":5}', id="event-with-numeric-name"),
        pytest.param(b"\x80\x81\xfe not utf-8", id="invalid-bytes"),
        pytest.param(b"", id="empty-bytes"),
        pytest.param(b"[]", id="bytes-array"),
        pytest.param("[" * 100_000 + "]" * 100_000, id="deeply-nested"),
    ],
)
def test_it_rejects_malformed_frames_with_a_typed_error(raw):
    with pytest.raises(MalformedFrameError) as info:
        parse_frame(raw)
    assert info.value.code == "MALFORMED_FRAME"
    assert info.value.retryable is False


def test_it_rejects_a_request_frame_because_the_gateway_never_sends_one():
    with pytest.raises(MalformedFrameError, match="unknown frame type 'req'"):
        parse_frame(wire(load_frame("02-connect.request.json")))


def test_it_truncates_a_huge_unknown_type_in_the_error_message():
    with pytest.raises(MalformedFrameError) as info:
        parse_frame(json.dumps({"type": "x" * 10_000}))
    assert len(str(info.value)) < 200


# --- request_frame --------------------------------------------------------------------------------


def test_it_builds_a_compact_request_frame_that_round_trips():
    text = request_frame("7", "chat.send", {"sessionKey": "agent:main:main", "message": "héllo 📝"})
    assert " " not in text.replace("héllo 📝", "")
    assert "héllo 📝" in text  # not \u-escaped
    assert json.loads(text) == {
        "type": "req",
        "id": "7",
        "method": "chat.send",
        "params": {"sessionKey": "agent:main:main", "message": "héllo 📝"},
    }


def test_it_omits_params_when_there_are_none():
    assert json.loads(request_frame("1", "health")) == {"type": "req", "id": "1", "method": "health"}
    assert json.loads(request_frame("2", "health", {}))["params"] == {}


# --- HelloInfo ------------------------------------------------------------------------------------


@pytest.fixture
def hello_payload() -> dict:
    return copy.deepcopy(load_frame(HELLO)["payload"])


def test_it_summarises_the_captured_hello_ok(hello_payload):
    hello = HelloInfo.from_payload(hello_payload)
    assert hello.protocol == PROTOCOL_VERSION == 4
    assert hello.server_version == "2026.9.6"
    assert hello.build_id.startswith("2026.9.6-release-")
    assert hello.conn_id == "071e4cda-c7d9-474f-90ba-84d18a762551"
    assert len(hello.methods) == 466
    assert len(hello.events) == 64
    assert {"health", "sessions.list", "chat.send", "chat.abort", "config.patch"} <= hello.methods
    assert {"tick", "chat", "agent", "sessions.changed", "connect.challenge"} <= hello.events
    assert hello.scopes == ("operator.read", "operator.write", "operator.admin", "operator.approvals")
    assert hello.role == "operator"
    assert hello.auth_method == "token"
    assert hello.device_token == "<device-token>"
    assert hello.policy == Policy(
        tick_interval_ms=30_000, max_payload=26_214_400, max_buffered_bytes=52_428_800
    )
    assert hello.default_agent_id == "main"
    assert hello.snapshot["sessionDefaults"]["mainSessionKey"] == "agent:main:main"


def test_it_judges_the_captured_hello_fully_usable(hello_payload):
    compat = assess(HelloInfo.from_payload(hello_payload))
    assert compat.mode == "ok", compat.reasons
    assert compat.can_write
    assert compat.can_edit_config  # the capture was granted operator.admin


def test_it_treats_admin_as_every_operator_scope(hello_payload):
    hello_payload["auth"]["scopes"] = ["operator.admin"]
    hello = HelloInfo.from_payload(hello_payload)
    for scope in (
        "operator.read",
        "operator.write",
        "operator.admin",
        "operator.approvals",
        "operator.questions",
        "operator.pairing",
        "operator.talk",
        "operator.talk.secrets",
    ):
        assert hello.has_scope(scope), scope


def test_it_treats_write_as_implying_read_only(hello_payload):
    hello_payload["auth"]["scopes"] = ["operator.write"]
    hello = HelloInfo.from_payload(hello_payload)
    assert hello.has_scope("operator.write")
    assert hello.has_scope("operator.read")
    assert not hello.has_scope("operator.admin")
    assert not hello.has_scope("operator.approvals")


def test_it_does_not_let_read_or_approvals_imply_write(hello_payload):
    hello_payload["auth"]["scopes"] = ["operator.read", "operator.approvals"]
    hello = HelloInfo.from_payload(hello_payload)
    assert hello.has_scope("operator.read")
    assert hello.has_scope("operator.approvals")
    assert not hello.has_scope("operator.write")
    assert not hello.has_scope("operator.admin")


def test_it_grants_nothing_without_scopes(hello_payload):
    del hello_payload["auth"]
    hello = HelloInfo.from_payload(hello_payload)
    assert hello.scopes == ()
    assert hello.role == ""
    assert hello.device_token is None
    assert not hello.has_scope("operator.read")


def test_it_falls_back_to_default_policy_values_for_odd_ones(hello_payload):
    hello_payload["policy"] = {"tickIntervalMs": 0, "maxPayload": -5, "maxBufferedBytes": True}
    assert HelloInfo.from_payload(hello_payload).policy == Policy()
    hello_payload["policy"] = "not an object"
    assert HelloInfo.from_payload(hello_payload).policy == Policy()
    hello_payload["policy"] = {"tickIntervalMs": 100}
    assert HelloInfo.from_payload(hello_payload).policy.tick_interval_ms == 100


def test_it_tolerates_odd_member_types_in_hello(hello_payload):
    hello_payload["server"] = None
    hello_payload["features"] = {"methods": ["health", 3, None], "events": "tick"}
    hello_payload["auth"] = {"scopes": ["operator.read", {"x": 1}], "deviceToken": 12}
    hello_payload["snapshot"] = []
    hello_payload["protocol"] = "4"
    hello = HelloInfo.from_payload(hello_payload)
    assert hello.server_version == "unknown"
    assert hello.methods == frozenset({"health"})
    assert hello.scopes == ("operator.read",)
    assert hello.device_token is None
    assert hello.snapshot == {}
    assert hello.default_agent_id is None
    assert hello.protocol == 0  # not an int: never mistaken for protocol 4


@pytest.mark.parametrize(
    "payload",
    [None, [], "hello-ok", {}, {"type": "hello"}, {"protocol": 4}],
    ids=["none", "list", "string", "empty", "wrong-type", "no-type"],
)
def test_it_rejects_a_connect_payload_that_is_not_hello_ok(payload):
    with pytest.raises(MalformedFrameError):
        HelloInfo.from_payload(payload)


def test_a_traceparent_rides_on_the_request_frame_itself_at_most_128_characters():
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    frame = json.loads(request_frame("3", "chat.send", {"message": "hi"}, tp))
    assert frame["traceparent"] == tp and "traceparent" not in frame["params"]
    assert len(json.loads(request_frame("4", "health", None, "x" * 500))["traceparent"]) == 128
    assert "traceparent" not in json.loads(request_frame("5", "health"))
