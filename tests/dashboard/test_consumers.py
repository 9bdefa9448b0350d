"""The dashboard websocket (dashboard.consumers) through the real ASGI stack: origin check,
session auth, group fan-out from agentflow.lib.broadcast over the real Redis channel layer, chat
panel registration, frame limits and the dropped-message counter on /metrics."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from contextlib import asynccontextmanager

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import AsyncClient, Client

from agentflow.asgi import application
from dashboard import consumers
from fleet import chats, events, live
from fleet.models import AgentSession, Gateway
from openclaw import Event
from scheduler.live import ALERT_RAISED
from tests.support.factories import make_gateway
from tests.support.frames import load_frame
from tests.support.live import apush

pytestmark = [
    pytest.mark.usefixtures("redis_prefix"),
    pytest.mark.django_db(transaction=True),
    pytest.mark.redis,
]

PATH = "/ws/dashboard/"
TOKEN = "consumer-test-token-5f0c9d2e"
SESSION_KEY = "agent:main:x"
SECRET_KEYS = re.compile(r'"[^"]*(token|secret|password|url)[^"]*"\s*:', re.I)  # no such field is pushed


@pytest.fixture
def gateway(db):
    return make_gateway("ws-gw", token=TOKEN)


@pytest.fixture
def sessionid(operator) -> str:
    client = Client()
    client.force_login(operator)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def ws_headers(
    sessionid: str | None = None, origin: bytes = b"http://127.0.0.1"
) -> list[tuple[bytes, bytes]]:
    headers = [(b"host", b"127.0.0.1"), (b"origin", origin)]
    if sessionid:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={sessionid}".encode()))
    return headers


class Page:
    """One browser page's socket; keeps every frame it received, to check for secrets."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator
        self.frames: list[str] = []

    async def receive(self, timeout: float = 3) -> dict:
        raw = await self.communicator.receive_from(timeout)
        self.frames.append(raw)
        return json.loads(raw)

    async def send(self, message) -> None:
        await self.communicator.send_to(text_data=json.dumps(message))

    async def nothing(self, timeout: float = 0.3) -> bool:
        return await self.communicator.receive_nothing(timeout)

    def assert_no_secret(self) -> None:
        for raw in self.frames:
            assert TOKEN not in raw
            assert not SECRET_KEYS.search(raw), raw


@asynccontextmanager
async def open_page(sessionid: str):
    communicator = WebsocketCommunicator(application, PATH, headers=ws_headers(sessionid))
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    page = Page(communicator)
    try:
        yield page
    finally:
        await communicator.disconnect()
        page.assert_no_secret()


async def wait_until(predicate, timeout: float = 5.0, what: str = "condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await sync_to_async(predicate)()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def open_panel(page: Page, gateway_id: int, session_key: str) -> None:
    """Open the panel of a stored session (made-up keys are refused) and wait for its registration."""
    await AgentSession.objects.aget_or_create(gateway_id=gateway_id, session_key=session_key)
    await page.send({"type": "panel.open", "gateway_id": gateway_id, "session_key": session_key})
    # The consumer joins the chat group before it registers the panel, so once Redis has it
    # the group membership is in place too.
    await wait_until(lambda: session_key in chats.open_panels(gateway_id), what="the panel registration")


async def dropped_total() -> float:
    response = await AsyncClient().get("/metrics")
    assert response.status_code == 200
    match = re.search(r"^agentflow_ws_dropped_total ([0-9.e+]+)$", response.content.decode(), re.M)
    assert match, response.content.decode()
    return float(match.group(1))


# --- who may connect -------------------------------------------------------------------------------


async def test_anonymous_is_accepted_then_closed_with_4401(gateway):
    communicator = WebsocketCommunicator(application, PATH, headers=ws_headers())
    connected, _ = await communicator.connect(timeout=5)
    assert connected  # accepted first, so the browser sees the close code
    closing = await communicator.receive_output(timeout=3)
    assert closing["type"] == "websocket.close"
    assert closing["code"] == consumers.CLOSE_UNAUTHENTICATED == 4401
    await communicator.wait(1)


async def test_a_stale_session_cookie_counts_as_anonymous(gateway):
    communicator = WebsocketCommunicator(application, PATH, headers=ws_headers("not-a-real-session"))
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    closing = await communicator.receive_output(timeout=3)
    assert closing == {"type": "websocket.close", "code": 4401}
    await communicator.wait(1)


@pytest.mark.parametrize("origin", [b"http://evil.example", b"http://127.0.0.1.evil.example", b"null"])
async def test_a_foreign_origin_is_rejected_even_with_a_valid_session(gateway, sessionid, origin):
    communicator = WebsocketCommunicator(application, PATH, headers=ws_headers(sessionid, origin=origin))
    connected, _ = await communicator.connect(timeout=5)
    assert not connected
    await communicator.wait(1)


def site_headers(sessionid: str, host: bytes, origin: bytes, *extra: tuple[bytes, bytes]):
    return [
        (b"host", host),
        (b"origin", origin),
        (b"cookie", f"{settings.SESSION_COOKIE_NAME}={sessionid}".encode()),
        *extra,
    ]


async def handshake(headers, scheme: str = "ws") -> bool:
    communicator = WebsocketCommunicator(application, PATH, headers=headers)
    communicator.scope["scheme"] = scheme
    connected, _ = await communicator.connect(timeout=5)
    await communicator.disconnect()
    return connected


async def test_a_page_on_another_port_of_the_same_host_is_refused(gateway, sessionid):
    # The issue: a page from http://127.0.0.1:9999 opened the socket with the user's cookie.
    assert not await handshake(site_headers(sessionid, b"127.0.0.1:8000", b"http://127.0.0.1:9999"))
    assert not await handshake(site_headers(sessionid, b"127.0.0.1:8000", b"http://127.0.0.1"))
    assert await handshake(site_headers(sessionid, b"127.0.0.1:8000", b"http://127.0.0.1:8000"))
    assert await handshake(site_headers(sessionid, b"localhost:8000", b"http://LOCALHOST:8000"))


async def test_the_origin_scheme_must_match_the_sites(gateway, sessionid):
    assert not await handshake(site_headers(sessionid, b"127.0.0.1", b"https://127.0.0.1"))
    assert await handshake(site_headers(sessionid, b"127.0.0.1", b"https://127.0.0.1"), scheme="wss")
    assert not await handshake(site_headers(sessionid, b"127.0.0.1", b"http://127.0.0.1"), scheme="wss")
    # http://host:80 and http://host are the same origin
    assert await handshake(site_headers(sessionid, b"127.0.0.1", b"http://127.0.0.1:80"))


async def test_behind_a_tls_proxy_the_forwarded_scheme_counts(gateway, sessionid, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    proxied = (b"x-forwarded-proto", b"https")
    assert await handshake(site_headers(sessionid, b"127.0.0.1", b"https://127.0.0.1", proxied))
    assert not await handshake(site_headers(sessionid, b"127.0.0.1", b"http://127.0.0.1", proxied))


async def test_a_trusted_origin_is_accepted(gateway, sessionid, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["http://127.0.0.1:9443", "https://*.localhost"]
    assert await handshake(site_headers(sessionid, b"127.0.0.1:8000", b"http://127.0.0.1:9443"))
    assert await handshake(site_headers(sessionid, b"127.0.0.1:8000", b"https://ops.localhost"))
    assert not await handshake(site_headers(sessionid, b"127.0.0.1:8000", b"http://ops.localhost"))
    assert not await handshake(site_headers(sessionid, b"127.0.0.1:8000", b"http://127.0.0.1:9444"))


async def test_a_missing_origin_or_a_host_not_allowed_is_refused(gateway, sessionid):
    cookie = (b"cookie", f"{settings.SESSION_COOKIE_NAME}={sessionid}".encode())
    assert not await handshake([(b"host", b"127.0.0.1"), cookie])
    assert not await handshake(site_headers(sessionid, b"evil.example", b"http://evil.example"))


async def test_an_authenticated_page_receives_sessions_changed(gateway, sessionid):
    changes = [
        {"session_key": "agent:main:main", "agent_id": "main", "status": "active", "has_active_run": True}
    ]
    async with open_page(sessionid) as page:
        await live.SESSIONS_CHANGED.asend(gateway_id=gateway.pk, changes=changes)
        message = await page.receive()
        assert message["type"] == "sessions.changed"
        assert message["gateway_id"] == gateway.pk
        assert message["changes"] == changes
        assert isinstance(message["seq"], int)
        assert "group" not in message and "kind" not in message


async def test_pages_get_only_enabled_gateways_and_alerts(gateway, sessionid):
    disabled = await Gateway.objects.acreate(name="off", url="ws://127.0.0.1:8/", token=TOKEN, enabled=False)
    async with open_page(sessionid) as page:
        await apush(live.gateway_group(disabled.pk), "gateway.status", gateway_id=disabled.pk)
        assert await page.nothing()
        await live.GATEWAY_STATUS.asend(gateway_id=gateway.pk, status="disconnected", label="Disconnected")
        assert await page.receive() == {
            "gateway_id": gateway.pk,
            "status": "disconnected",
            "label": "Disconnected",
            "seq": 1,
            "type": "gateway.status",
        }
        await ALERT_RAISED.asend()
        assert (await page.receive())["type"] == "alert.raised"


async def test_an_idle_page_stays_connected_past_the_layers_blocking_pop(gateway, sessionid):
    async with open_page(sessionid) as page:
        assert await page.nothing(7)  # longer than the layer's 5 s BZPOPMIN
        await live.GATEWAY_STATUS.asend(gateway_id=gateway.pk, status="connected", label="Connected")
        assert (await page.receive())["status"] == "connected"


# --- chat panels ----------------------------------------------------------------------------------


async def test_an_open_panel_gets_chat_stream_deltas_and_is_registered(gateway, sessionid):
    group = live.chat_group(gateway.pk, SESSION_KEY)
    async with open_page(sessionid) as page:
        # Before the panel is open, the page is not in the chat group.
        await apush(group, "chat.stream", gateway_id=gateway.pk, session_key=SESSION_KEY)
        assert await page.nothing()

        await open_panel(page, gateway.pk, SESSION_KEY)
        assert SESSION_KEY in await sync_to_async(chats.open_panels)(gateway.pk)
        for state, delta in [("delta", "Hel"), ("delta", "lo"), ("final", "")]:
            await apush(
                group,
                "chat.stream",
                gateway_id=gateway.pk,
                session_key=SESSION_KEY,
                run_id="run-1",
                state=state,
                delta=delta,
                error="",
            )
        received = [await page.receive() for _ in range(3)]
        assert [m["type"] for m in received] == ["chat.stream"] * 3
        assert [(m["state"], m["delta"]) for m in received] == [
            ("delta", "Hel"),
            ("delta", "lo"),
            ("final", ""),
        ]
        assert all(m["session_key"] == SESSION_KEY and m["run_id"] == "run-1" for m in received)
        assert [m["seq"] for m in received] == sorted(m["seq"] for m in received)

        await live.CHAT_MESSAGES.asend(gateway_id=gateway.pk, session_key=SESSION_KEY, message_ids=[7, 8])
        assert (await page.receive())["message_ids"] == [7, 8]

        # Another session's panel is none of this page's business.
        await apush(live.chat_group(gateway.pk, "agent:main:other"), "chat.stream", state="delta")
        assert await page.nothing()


async def test_panel_open_for_an_unknown_gateway_is_ignored(gateway, sessionid):
    unknown = gateway.pk + 1000
    async with open_page(sessionid) as page:
        await page.send({"type": "panel.open", "gateway_id": unknown, "session_key": SESSION_KEY})
        await page.send({"type": "panel.open", "gateway_id": str(gateway.pk), "session_key": SESSION_KEY})
        await page.send({"type": "panel.open", "gateway_id": gateway.pk, "session_key": ""})
        await page.send({"type": "panel.open", "gateway_id": gateway.pk, "session_key": "k" * 501})
        await page.send({"type": "panel.open", "gateway_id": gateway.pk, "session_key": ["x"]})
        assert await page.nothing(0.5)  # still open: ignored, not closed
        assert await sync_to_async(chats.open_panels)(unknown) == []
        assert await sync_to_async(chats.open_panels)(gateway.pk) == []
        await apush(live.chat_group(unknown, SESSION_KEY), "chat.stream", state="delta")
        assert await page.nothing()


async def test_panel_open_for_a_disabled_gateway_is_ignored(gateway, sessionid):
    disabled = await Gateway.objects.acreate(name="off", url="ws://127.0.0.1:8/", token=TOKEN, enabled=False)
    async with open_page(sessionid) as page:
        await page.send({"type": "panel.open", "gateway_id": disabled.pk, "session_key": SESSION_KEY})
        assert await page.nothing(0.5)
        assert await sync_to_async(chats.open_panels)(disabled.pk) == []


async def test_a_socket_registers_at_most_its_cap_of_panels(gateway, sessionid, settings):
    settings.AGENTFLOW_WS_MAX_PANELS = 20
    settings.AGENTFLOW_WS_PANEL_OPEN_BURST = 100
    keys = [f"agent:main:s{i}" for i in range(30)]
    await AgentSession.objects.abulk_create([AgentSession(gateway=gateway, session_key=k) for k in keys])
    async with open_page(sessionid) as page:
        for k in keys:
            await page.send({"type": "panel.open", "gateway_id": gateway.pk, "session_key": k})
        # Renewing an open panel is no new panel.
        await page.send({"type": "panel.open", "gateway_id": gateway.pk, "session_key": keys[0]})
        await page.send({"type": "ping"})
        assert await page.receive() == {"type": "pong"}  # every panel.open before it was handled
        registered = await sync_to_async(chats.open_panels)(gateway.pk)
        assert sorted(registered) == sorted(keys[:20])
        await apush(live.chat_group(gateway.pk, keys[25]), "chat.stream", state="delta")
        assert await page.nothing()  # not joined either


async def test_300_made_up_panels_register_nothing_and_cost_batch_003_no_gateway_call(
    gateway, sessionid, settings, caplog
):
    """The issue: one viewer socket registered 300 made-up panels; BATCH-003 then made 300 gateway
    calls per run. poll_chats makes one chat.history call per registered panel."""
    settings.AGENTFLOW_WS_PANEL_OPEN_BURST = 1000  # the cap and the session check, not the rate limit
    async with open_page(sessionid) as page:
        for i in range(300):
            await page.send({"type": "panel.open", "gateway_id": gateway.pk, "session_key": f"agent:x:{i}"})
        await page.send({"type": "ping"})
        assert await page.receive() == {"type": "pong"}
    assert await sync_to_async(chats.open_panels)(gateway.pk) == []  # what BATCH-003 would poll


async def test_panel_open_faster_than_the_rate_limit_closes_with_4429(gateway, sessionid, settings, caplog):
    settings.AGENTFLOW_WS_PANEL_OPEN_RATE = 1
    settings.AGENTFLOW_WS_PANEL_OPEN_BURST = 10
    async with open_page(sessionid) as page:
        caplog.clear()
        for i in range(300):
            await page.send({"type": "panel.open", "gateway_id": gateway.pk, "session_key": f"agent:x:{i}"})
        closing = await page.communicator.receive_output(timeout=3)
        assert closing == {"type": "websocket.close", "code": consumers.CLOSE_RATE_LIMITED}
        assert consumers.CLOSE_RATE_LIMITED == 4429
    assert_one_line_no_traceback(caplog, "4429")


# --- what the page may send -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["text", "bytes"])
async def test_an_oversized_frame_closes_the_socket_with_4413(gateway, sessionid, kind, caplog):
    communicator = WebsocketCommunicator(application, PATH, headers=ws_headers(sessionid))
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    frame = json.dumps({"type": "panel.open", "pad": "x" * consumers.MAX_FRAME})
    assert len(frame) > 16 * 1024
    caplog.clear()
    if kind == "text":
        await communicator.send_to(text_data=frame)
    else:
        await communicator.send_to(bytes_data=frame.encode())
    closing = await communicator.receive_output(timeout=3)
    # 1009 is the protocol's own code, which Daphne refuses from an application (1011 + traceback).
    assert closing == {"type": "websocket.close", "code": consumers.CLOSE_TOO_BIG}
    assert consumers.CLOSE_TOO_BIG == 4413
    assert_one_line_no_traceback(caplog, "4413")
    await communicator.disconnect()


async def test_a_frame_at_the_limit_is_still_accepted(gateway, sessionid):
    async with open_page(sessionid) as page:
        frame = json.dumps({"type": "ping", "pad": ""})
        frame = frame.replace('""', '"' + "x" * (consumers.MAX_FRAME - len(frame)) + '"')
        assert len(frame) == consumers.MAX_FRAME
        await page.communicator.send_to(text_data=frame)
        assert await page.receive() == {"type": "pong"}
        await live.GATEWAY_STATUS.asend(gateway_id=gateway.pk, status="connected", label="Connected")
        assert (await page.receive())["type"] == "gateway.status"


MALFORMED = {
    "deeply nested JSON": "[" * 5000,
    "deeply nested objects": '{"a":' * 3000,
    "not JSON": "{not json",
    "a list": "[1, 2]",
    "a number": "42",
    "a string": '"panel.open"',
    "null": "null",
    "an unknown type": '{"type": "nope"}',
    "no type": "{}",
}


@pytest.mark.parametrize("frame", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_frame_closes_with_4400_and_one_log_line(gateway, sessionid, frame, caplog):
    async with open_page(sessionid) as page:
        caplog.clear()
        await page.communicator.send_to(text_data=frame)
        closing = await page.communicator.receive_output(timeout=3)
        assert closing == {"type": "websocket.close", "code": consumers.CLOSE_MALFORMED}
        assert consumers.CLOSE_MALFORMED == 4400
    assert_one_line_no_traceback(caplog, "4400")


async def test_a_binary_frame_that_is_not_utf8_closes_with_4400(gateway, sessionid, caplog):
    async with open_page(sessionid) as page:
        caplog.clear()
        await page.communicator.send_to(bytes_data=b"\xff\xfe not utf-8")
        assert await page.communicator.receive_output(timeout=3) == {"type": "websocket.close", "code": 4400}
    assert_one_line_no_traceback(caplog, "4400")


def assert_one_line_no_traceback(caplog, code: str) -> None:
    records = [r for r in caplog.records if r.name.startswith("agentflow") or r.levelno >= 30]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].exc_info is None and records[0].exc_text is None
    assert code in records[0].getMessage()


# --- sequence numbers and the dropped counter ---------------------------------------------------------


async def test_a_skipped_sequence_number_counts_dropped_messages_on_metrics(gateway, sessionid):
    layer = get_channel_layer()
    group = live.gateway_group(gateway.pk)
    before = await dropped_total()
    async with open_page(sessionid) as page:
        for seq in (1, 5):
            await layer.group_send(
                group,
                {
                    "type": "sessions_changed",
                    "kind": "sessions.changed",
                    "group": group,
                    "seq": seq,
                    "gateway_id": gateway.pk,
                    "changes": [],
                },
            )
        assert (await page.receive())["seq"] == 1
        assert await page.receive() == {"type": "resync"}  # the page re-fetches what it shows
        assert (await page.receive())["seq"] == 5
        assert await dropped_total() == before + 3  # 2, 3 and 4 never arrived

        # In order again: nothing more is counted; an old (replayed) number is not a drop either.
        for seq in (6, 3):
            await layer.group_send(
                group, {"type": "gateway_status", "kind": "gateway.status", "group": group, "seq": seq}
            )
        assert [(await page.receive())["seq"] for _ in range(2)] == [6, 3]
        assert await dropped_total() == before + 3


async def test_sequences_are_tracked_per_group(gateway, sessionid):
    before = await dropped_total()
    async with open_page(sessionid) as page:
        await open_panel(page, gateway.pk, SESSION_KEY)
        # Interleaved pushes to two groups, each numbered on its own: no gap in either.
        await live.GATEWAY_STATUS.asend(gateway_id=gateway.pk, status="connected", label="Connected")
        await apush(live.chat_group(gateway.pk, SESSION_KEY), "chat.stream", state="delta")
        await live.GATEWAY_STATUS.asend(gateway_id=gateway.pk, status="connected", label="Connected")
        await apush(live.chat_group(gateway.pk, SESSION_KEY), "chat.stream", state="final")
        assert [(await page.receive())["seq"] for _ in range(4)] == [1, 1, 2, 2]
    assert await dropped_total() == before


# --- nothing secret goes out --------------------------------------------------------------------------


async def test_no_token_or_secret_in_any_message_of_a_replayed_gateway_run(gateway, sessionid):
    frames = [
        f
        for f in load_frame("42-chat.send.event-stream.json")
        if f["event"] in ("sessions.changed", "agent", "chat", "session.message", "chat.metadata.changed")
    ]
    session_key = next(f["payload"]["sessionKey"] for f in frames if f["event"] == "chat")
    async with open_page(sessionid) as page:
        await open_panel(page, gateway.pk, session_key)
        await live.GATEWAY_STATUS.asend(gateway_id=gateway.pk, status="connected", label="Connected")
        for frame in frames:
            await events.handle(
                gateway.pk, Event(event=frame["event"], payload=copy.deepcopy(frame["payload"]))
            )
        await live.CONFIG_CHANGED.asend(gateway_id=gateway.pk, history_id=None)
        received = []
        while not await page.nothing(0.5):
            received.append(await page.receive())
        kinds = {m["type"] for m in received}
        assert {"gateway.status", "sessions.changed", "agent.run", "chat.stream", "config.changed"} <= kinds
        streamed = "".join(m["delta"] for m in received if m["type"] == "chat.stream")
        assert "[stub:stub-model]" in streamed
        # open_page's exit checks every frame for the token and for secret-looking fields.
