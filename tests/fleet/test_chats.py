"""fleet.chats (BATCH-003's domain half): the open-panel registry in Redis and storing
``chat.history`` messages exactly once."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from agentflow.lib.redis import get_redis
from fleet import chats
from fleet.models import ChatHistory
from tests.support.factories import make_gateway
from tests.support.frames import load_frame

HISTORY = load_frame("43-chat.history.after-turn.json")["response"]["payload"]["messages"]
KEY = "agent:writer:main"


@pytest.fixture
def gateway(db):
    return make_gateway("alpha", token="chats-test-token")


def message(message_id: str, text="hi", role="assistant", ts=1795312140000, **extra) -> dict:
    return {
        "role": role,
        "content": [{"type": "text", "text": text}],
        "timestamp": ts,
        "__openclaw": {"id": message_id, "runId": "run-1"},
        **extra,
    }


# --- the open-panel registry ----------------------------------------------------------------------


@pytest.mark.redis
def test_an_open_panel_is_listed_until_it_is_closed(redis_prefix):
    assert chats.open_panels(1) == []
    chats.register_panel(1, KEY)
    chats.register_panel(1, "agent:main:main")
    chats.register_panel(2, "agent:other:main")
    assert sorted(chats.open_panels(1)) == ["agent:main:main", KEY]
    chats.close_panel(1, KEY)
    assert chats.open_panels(1) == ["agent:main:main"]
    assert chats.open_panels(2) == ["agent:other:main"]


@pytest.mark.redis
def test_an_expired_panel_is_dropped(redis_prefix, settings):
    settings.AGENTFLOW_CHAT_PANEL_TTL = 30
    start = datetime.now(UTC)
    with time_machine.travel(start, tick=False):
        chats.register_panel(1, KEY)
        chats.register_panel(1, "agent:main:main", ttl=120)
    with time_machine.travel(start + timedelta(seconds=29), tick=False):
        assert sorted(chats.open_panels(1)) == ["agent:main:main", KEY]
    with time_machine.travel(start + timedelta(seconds=31), tick=False):
        assert chats.open_panels(1) == ["agent:main:main"]
    # dropped from Redis, not only filtered out
    assert get_redis().zcard(f"{redis_prefix}:chatpanels:1") == 1


@pytest.mark.redis
def test_refreshing_a_panel_extends_it(redis_prefix):
    start = datetime.now(UTC)
    with time_machine.travel(start, tick=False):
        chats.register_panel(1, KEY, ttl=30)
    with time_machine.travel(start + timedelta(seconds=20), tick=False):
        chats.register_panel(1, KEY, ttl=30)
    with time_machine.travel(start + timedelta(seconds=45), tick=False):
        assert chats.open_panels(1) == [KEY]


# --- parsing --------------------------------------------------------------------------------------


def test_it_reads_text_from_strings_and_content_parts():
    assert chats.message_text("plain") == "plain"
    assert chats.message_text([{"type": "text", "text": "a"}, "b", {"type": "image"}, 3]) == "a\nb"
    assert chats.message_text(None) == chats.message_text({"text": "x"}) == ""


def test_it_parses_the_captured_messages():
    parsed = [chats.parse_message(m) for m in HISTORY]
    assert all(parsed)
    assert parsed[0].role == "user"
    assert parsed[-1].role == "assistant"
    assert parsed[-1].text.startswith("[stub:stub-model] You said:")
    assert parsed[-1].usage["totalTokens"] > 0
    assert parsed[-1].run_id


def test_a_message_without_a_timestamp_uses_the_record_time():
    raw = message("m1", ts=None)
    raw["__openclaw"]["recordTimestampMs"] = 1795312140000
    assert chats.parse_message(raw).timestamp == datetime.fromtimestamp(1795312140, UTC)


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "text",
        {"role": "user", "content": "no id", "timestamp": 1},
        {"__openclaw": {"id": "m1"}, "content": "no timestamp"},
        {"__openclaw": {"id": "m1"}, "timestamp": "yesterday"},
        {"__openclaw": {"id": 7}, "timestamp": 1795312140000},
        {"__openclaw": {"id": "x" * 201}, "timestamp": 1795312140000},
        {"__openclaw": "m1", "timestamp": 1795312140000},
    ],
)
def test_a_message_without_an_id_or_time_is_rejected(bad):
    assert chats.parse_message(bad) is None


def test_odd_fields_are_coerced():
    parsed = chats.parse_message(
        {
            "__openclaw": {"id": "m1", "runId": 5},
            "timestamp": 1795312140000,
            "role": {"x": 1},
            "content": 42,
            "usage": "lots",
            "extra": [1, 2],
        }
    )
    assert (parsed.role, parsed.text, parsed.run_id, parsed.usage) == ("unknown", "", "", None)


# --- storing --------------------------------------------------------------------------------------


def test_it_stores_each_message_once_however_often_it_is_polled(gateway):
    first = chats.store_messages(gateway, KEY, copy.deepcopy(HISTORY))
    assert len(first.stored) == len(HISTORY) and not first.overlap
    for _ in range(3):
        again = chats.store_messages(gateway, KEY, copy.deepcopy(HISTORY))
        assert again.stored == [] and again.overlap
    assert ChatHistory.objects.count() == len(HISTORY)
    ids = [m["__openclaw"]["id"] for m in HISTORY]
    assert sorted(ChatHistory.objects.values_list("message_id", flat=True)) == sorted(ids)


def test_only_the_new_messages_of_a_poll_are_stored(gateway):
    chats.store_messages(gateway, KEY, [message("m1")])
    result = chats.store_messages(gateway, KEY, [message("m1"), message("m2", text="second")])
    assert [m.message_id for m in result.stored] == ["m2"]
    assert result.overlap
    assert ChatHistory.objects.count() == 2


def test_a_message_id_repeated_within_one_poll_is_stored_once(gateway):
    result = chats.store_messages(gateway, KEY, [message("m1", text="a"), message("m1", text="b")])
    assert len(result.stored) == 1
    assert ChatHistory.objects.get().text == "b"


def test_the_same_message_id_in_another_session_or_gateway_is_another_message(gateway):
    other = make_gateway("beta")
    chats.store_messages(gateway, KEY, [message("m1")])
    chats.store_messages(gateway, "agent:main:main", [message("m1")])
    chats.store_messages(other, KEY, [message("m1")])
    assert ChatHistory.objects.count() == 3


def test_stored_history_is_never_rewritten(gateway):
    chats.store_messages(gateway, KEY, [message("m1", text="original")])
    chats.store_messages(gateway, KEY, [message("m1", text="edited", role="user")])
    stored = ChatHistory.objects.get()
    assert (stored.text, stored.role) == ("original", "assistant")


def test_malformed_messages_are_counted_and_the_valid_ones_stored(gateway):
    result = chats.store_messages(
        gateway,
        KEY,
        [
            None,
            "x",
            {"content": "no id"},
            message("m1", text="🦀 ünïcödé\u200b\x07 text"),
            [],
            {"__openclaw": {}},
        ],
    )
    assert (result.received, result.invalid, len(result.stored)) == (6, 5, 1)
    assert ChatHistory.objects.get().text == "🦀 ünïcödé\u200b\x07 text"


@pytest.mark.parametrize("bad", [None, {}, "messages", 42, {"messages": []}])
def test_a_history_that_is_not_a_list_stores_nothing_and_keeps_what_is_stored(gateway, bad):
    chats.store_messages(gateway, KEY, [message("m1")])
    result = chats.store_messages(gateway, KEY, bad)
    assert (result.received, result.stored) == (0, [])
    assert list(ChatHistory.objects.values_list("message_id", "text")) == [("m1", "hi")]


def test_a_one_megabyte_message_is_stored_whole(gateway):
    text = "x" * (1024 * 1024)
    chats.store_messages(gateway, KEY, [message("big", text=text)])
    assert ChatHistory.objects.get().text == text


def test_a_message_over_the_limit_is_stored_truncated_with_a_mark(gateway, settings):
    settings.AGENTFLOW_CHAT_MAX_CHARS = 1000
    chats.store_messages(gateway, KEY, [message("big", text="y" * (1024 * 1024))])
    stored = ChatHistory.objects.get().text
    assert stored == "y" * 1000 + chats.TRUNCATION_MARK


def test_has_history_is_per_session(gateway):
    assert not chats.has_history(gateway, KEY)
    chats.store_messages(gateway, KEY, [message("m1")])
    assert chats.has_history(gateway, KEY)
    assert not chats.has_history(gateway, "agent:main:main")


def test_stored_messages_carry_their_primary_keys_for_the_push(gateway):
    result = chats.store_messages(gateway, KEY, [message("m1"), message("m2")])
    assert sorted(m.pk for m in result.stored) == sorted(ChatHistory.objects.values_list("pk", flat=True))
