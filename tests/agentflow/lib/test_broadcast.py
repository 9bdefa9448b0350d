"""agentflow.lib.broadcast: every live event is declared once, with its group and fields, and a send
with the wrong fields is a programming error caught at the sender, not a page that breaks later."""

from __future__ import annotations

import pytest
from django.db import transaction

from agentflow.lib import broadcast
from fleet import live
from scheduler.live import ALERT_RAISED, ALERTS_GROUP
from tests.support.live import Listener

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("redis_prefix")]


def test_the_apps_declare_every_event_the_pages_use():
    assert set(broadcast.EVENTS) == {
        "gateway.status",
        "sessions.changed",
        "agent.run",
        "config.changed",
        "chat.stream",
        "chat.messages",
        "alert.raised",
        "stop.changed",
        "alert.resolved",
    }
    assert broadcast.EVENTS["gateway.status"].fields == ("gateway_id", "status", "label")
    assert broadcast.EVENTS["sessions.changed"].handler == "sessions_changed"


def test_groups_are_computed_from_the_fields():
    assert live.GATEWAY_STATUS.group({"gateway_id": 7}) == "gateway-7"
    chat = live.CHAT_STREAM.group({"gateway_id": 7, "session_key": "agent:main:x"})
    assert chat == live.chat_group(7, "agent:main:x") and chat.startswith("chat-7-")
    assert ALERT_RAISED.group({}) == ALERTS_GROUP


def test_a_send_with_missing_or_unknown_fields_is_refused():
    with pytest.raises(TypeError, match=r"missing fields \['label'\], unexpected fields \[\]"):
        live.GATEWAY_STATUS.send(gateway_id=1, status="connected")
    with pytest.raises(TypeError, match=r"unexpected fields \['token'\]"):
        live.GATEWAY_STATUS.send(gateway_id=1, status="connected", label="Connected", token="x")


def test_declaring_an_event_again_with_other_fields_is_refused():
    with pytest.raises(ValueError, match="declared twice"):
        broadcast.declare("gateway.status", "somewhere", ("gateway_id",))


def test_send_delivers_the_declared_shape_with_a_sequence_number():
    listener = Listener(live.gateway_group(3))
    try:
        live.GATEWAY_STATUS.send(gateway_id=3, status="connected", label="Connected")
        live.GATEWAY_STATUS.send(gateway_id=3, status="degraded", label="Degraded")
        first, second = listener.receive(), listener.receive()
    finally:
        listener.close()
    assert first["kind"] == "gateway.status" and first["type"] == "gateway_status"
    assert (first["status"], first["label"], first["group"]) == ("connected", "Connected", "gateway-3")
    assert second["seq"] == first["seq"] + 1


@pytest.mark.django_db(transaction=True)
def test_send_on_commit_waits_for_the_commit_and_a_rollback_sends_nothing():
    listener = Listener(live.gateway_group(4))
    try:
        with transaction.atomic():
            live.CONFIG_CHANGED.send_on_commit(gateway_id=4, history_id=1)
            assert listener.receive(timeout=0.3) is None  # not before the commit
        assert listener.receive()["history_id"] == 1
        with pytest.raises(RuntimeError), transaction.atomic():
            live.CONFIG_CHANGED.send_on_commit(gateway_id=4, history_id=2)
            raise RuntimeError("rolled back")
        assert listener.receive(timeout=0.5) is None
    finally:
        listener.close()
