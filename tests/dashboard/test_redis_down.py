"""Life without Redis: pages render (200) with a banner that says why live updates are
unavailable, websockets are told (4503) instead of a 500 or a silent "Live", and everything
recovers by itself when Redis returns. A private redis-server of the test's own is killed and
started again on the same port."""

from __future__ import annotations

import logging

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from agentflow.asgi import application
from dashboard import consumers
from fleet import chats, live
from tests.support.factories import make_chat, make_gateway, make_session
from tests.support.html import dom
from tests.support.redis import private_redis

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

SESSION_KEY = "agent:main:main"
BANNER = "Live updates are unavailable"


@pytest.fixture
def redis_server(settings, tmp_path):
    with private_redis(settings, tmp_path) as server:
        yield server


@pytest.fixture
def gateway(db):
    gateway = make_gateway("alpha", token="redis-down-token")
    make_session(gateway, SESSION_KEY)
    make_chat(gateway, SESSION_KEY, "hello")
    return gateway


@pytest.fixture
def web(operator) -> Client:
    client = Client()
    client.force_login(operator)
    return client


def pages(gateway) -> list[str]:
    return [
        "/",
        f"/gateways/{gateway.pk}/sessions/{SESSION_KEY}/",
        f"/gateways/{gateway.pk}/config/",
        "/batches/",
    ]


def banner(response) -> str | None:
    found = dom(response).find_all(id="live-unavailable")
    return found[0].text if found else None


def websocket_close_code(web: Client, gateway, heartbeat_then_kill=None) -> int | None:
    """Open /ws/dashboard/ as the signed-in user; the close code the server sent (None: it
    stayed open and took a live event)."""

    async def run() -> int | None:
        headers = [
            (b"host", b"127.0.0.1"),
            (b"origin", b"http://127.0.0.1"),
            (
                b"cookie",
                f"{settings.SESSION_COOKIE_NAME}={web.cookies[settings.SESSION_COOKIE_NAME].value}".encode(),
            ),
        ]
        communicator = WebsocketCommunicator(application, "/ws/dashboard/", headers=headers)
        connected, _ = await communicator.connect(timeout=5)
        assert connected  # accepted, so the browser sees the close code
        try:
            if heartbeat_then_kill is not None:
                assert await communicator.receive_json_from(timeout=5) == {"type": "heartbeat"}
                heartbeat_then_kill()
            else:
                await live.GATEWAY_STATUS.asend(gateway_id=gateway.pk, status="connected", label="Connected")
            output = await communicator.receive_output(timeout=8)
            if output["type"] == "websocket.close":
                return output["code"]
            return None
        finally:
            await communicator.disconnect()

    return async_to_sync(run)()


def test_pages_render_without_redis_with_a_banner_and_recover_when_it_returns(
    redis_server, gateway, web, caplog
):
    for url in pages(gateway):
        response = web.get(url)
        assert response.status_code == 200, url
        assert banner(response) is None, url
    assert chats.open_panels(gateway.pk) == [SESSION_KEY]  # the session page registered its panel

    redis_server.kill()
    caplog.clear()
    for url in pages(gateway):
        response = web.get(url)
        assert response.status_code == 200, url
        text = banner(response)
        assert text is not None and text.startswith(BANNER), url
        assert f"Redis at redis://127.0.0.1:{redis_server.port}/0 does not answer (ConnectionError" in text
    # The session page's panel registration degraded to one warning, no traceback.
    panel_logs = [r for r in caplog.records if r.name == "fleet.chats"]
    assert len(panel_logs) == 1 and panel_logs[0].levelno == logging.WARNING and not panel_logs[0].exc_info

    redis_server.start()
    for url in pages(gateway):
        response = web.get(url)
        assert response.status_code == 200, url
        assert banner(response) is None, url


def test_signing_in_works_and_the_login_page_does_not_name_redis_to_strangers(
    redis_server, gateway, operator
):
    redis_server.kill()
    client = Client()
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert b"Redis" not in response.content and str(redis_server.port).encode() not in response.content
    response = client.post(
        "/accounts/login/", {"username": "operator", "password": "operator-pass"}, follow=True
    )
    assert response.status_code == 200 and response.redirect_chain[-1][0] == "/"
    assert banner(response).startswith(BANNER)  # signed in now: told why nothing is live


def test_a_password_in_the_redis_url_is_never_shown(settings, redis_server, gateway, web):
    redis_server.kill()
    settings.REDIS_URL = f"redis://agentflow:s3cret-pass@127.0.0.1:{redis_server.port}/2"
    response = web.get("/")
    assert response.status_code == 200
    assert f"Redis at redis://***@127.0.0.1:{redis_server.port}/2 does not answer" in banner(response)
    assert b"s3cret-pass" not in response.content and b"agentflow:s3cret" not in response.content


def test_a_new_websocket_without_redis_is_closed_with_4503_and_connects_again_after(
    redis_server, gateway, web, caplog
):
    assert websocket_close_code(web, gateway) is None  # live

    redis_server.kill()
    caplog.clear()
    assert websocket_close_code(web, gateway) == consumers.CLOSE_LIVE_UNAVAILABLE == 4503
    closes = [r for r in caplog.records if r.name == "agentflow.consumers"]
    assert len(closes) == 1 and not closes[0].exc_info, [r.getMessage() for r in closes]
    assert "4503" in closes[0].getMessage()

    redis_server.start()
    assert websocket_close_code(web, gateway) is None  # recovered by itself


def test_an_open_websocket_is_closed_with_4503_within_a_heartbeat_of_redis_dying(
    settings, redis_server, gateway, web
):
    settings.AGENTFLOW_WS_HEARTBEAT = 0.5
    assert websocket_close_code(web, gateway, heartbeat_then_kill=redis_server.kill) == 4503
