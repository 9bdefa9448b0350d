"""The session page as a newcomer meets it: history on open, title and key, breadcrumb, the
abort button, and "New chat" (a fresh session key, its page with the composer focused)."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from fleet.models import ChatHistory, Gateway
from openclaw import SyncGatewayClient
from tests.support.factories import make_agent, make_chat, make_gateway, make_session
from tests.support.html import dom

pytestmark = [pytest.mark.usefixtures("redis_prefix"), pytest.mark.django_db, pytest.mark.redis]


@pytest.fixture
def web(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def gateway(db):
    return make_gateway("alpha", status=Gateway.Status.CONNECTED)  # on a loopback port nothing listens on


def page_of(web, gateway, key, **params):
    response = web.get(f"/gateways/{gateway.pk}/sessions/{key}/", params)
    assert response.status_code == 200
    return dom(response)


def test_the_title_is_the_gateways_and_the_key_is_secondary(web, gateway):
    agent = make_agent(gateway, "main", name="Main")
    make_chat(gateway, "agent:main:main", "hi")
    make_session(gateway, "agent:main:main", agent, title="Planning the launch", total_tokens=1234)
    page = page_of(web, gateway, "agent:main:main")
    assert page.find("h1").text == "Planning the launch"
    assert page.find("p", cls="session-key").text == "agent:main:main"
    assert "1234 tokens" in page.find("p", id="session-meta").text


def test_the_breadcrumb_never_ends_in_an_empty_item(web, gateway):
    make_chat(gateway, "agent:writer:brand-new", "hi")  # history stored: no gateway call
    crumbs = page_of(web, gateway, "agent:writer:brand-new").find("p", cls="crumbs").text
    assert crumbs.split("›")[-1].strip() == "writer"  # the agent, from the key
    make_chat(gateway, "odd-key", "hi")
    crumbs = page_of(web, gateway, "odd-key").find("p", cls="crumbs").text
    assert not crumbs.rstrip().endswith("›") and crumbs.split("›")[-1].strip() == "alpha"


def test_abort_is_enabled_only_with_a_run_in_flight(web, gateway):
    agent = make_agent(gateway, "main")
    make_chat(gateway, "agent:main:idle", "hi")
    make_chat(gateway, "agent:main:busy", "hi")
    make_session(gateway, "agent:main:idle", agent, has_active_run=False)
    make_session(gateway, "agent:main:busy", agent, has_active_run=True)
    idle = page_of(web, gateway, "agent:main:idle").find("button", id="abort")
    assert idle.attrs.get("disabled") is not None and idle.attrs["title"] == "no run in flight"
    busy = page_of(web, gateway, "agent:main:busy").find("button", id="abort")
    assert busy.attrs.get("disabled") is None


def test_a_page_with_nothing_stored_and_an_unreachable_gateway_says_so_quickly(web, gateway):
    started = time.monotonic()
    page = page_of(web, gateway, "agent:main:main")
    assert time.monotonic() - started < 5
    assert "Could not fetch this session's history" in page.find("p", id="history-notice").text
    assert page.find("div", id="chat-empty")  # the page renders anyway


def test_new_chat_makes_a_fresh_session_key_and_opens_its_page(web, gateway):
    agent = make_agent(gateway, "writer", name="Writer")
    overview = dom(web.get("/"))
    form = overview.find("li", id=f"agent-{agent.pk}").find("form", cls="new-chat")
    assert form.attrs["method"] == "post"
    assert web.get(form.attrs["action"]).status_code == 405  # an action: POST only
    response = web.post(form.attrs["action"])
    assert response.status_code == 302
    match = re.fullmatch(
        rf"/gateways/{gateway.pk}/sessions/(agent:writer:chat-[\w-]+)/\?new=1", response["Location"]
    )
    assert match, response["Location"]
    assert web.post(form.attrs["action"])["Location"] != response["Location"]  # fresh every time
    page = dom(web.get(response["Location"]))
    assert page.find("textarea", id="message").attrs.get("autofocus") is not None
    assert "A new session" in page.find("p", id="session-meta").text
    assert web.post(f"/gateways/{gateway.pk}/agents/{agent.pk + 100}/new-chat").status_code == 404


def test_new_chat_needs_a_csrf_token(client, operator, gateway):
    from django.test import Client

    agent = make_agent(gateway, "writer")
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(operator)
    assert strict.post(f"/gateways/{gateway.pk}/agents/{agent.pk}/new-chat").status_code == 403


def test_the_counts_line_is_a_live_fragment(web, gateway):
    agent = make_agent(gateway, "main")
    make_session(gateway, "agent:main:a", agent, status="active", has_active_run=True)
    make_session(gateway, "agent:main:b", agent, status="idle")
    counts = dom(web.get("/")).find("p", id=f"counts-{gateway.pk}")
    assert set(counts.attrs["data-refetch-on"].split()) == {"sessions.changed", "agent.run"}
    fragment = dom(web.get(counts.attrs["data-fragment"])).find("p", id=f"counts-{gateway.pk}")
    text = " ".join(fragment.text.split())
    assert "1 agents" in text and "1 active" in text and "1 idle" in text and "1 run in flight" in text
    assert web.get(f"/fragments/gateways/{gateway.pk + 100}/counts/").status_code == 404


def test_the_favicon_answers_without_a_login(client, db):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("favicon.svg")
    assert 'rel="icon"' in client.get("/accounts/login/").content.decode()


@pytest.mark.gateway
def test_opening_a_session_with_nothing_stored_fetches_its_history_from_the_gateway(web, gateway_row):
    Gateway.objects.filter(pk=gateway_row.pk).update(status=Gateway.Status.CONNECTED)
    key = f"agent:main:open-{uuid.uuid4().hex[:8]}"
    word = f"quokka{uuid.uuid4().hex[:6]}"
    client = SyncGatewayClient(gateway_row.url, gateway_row.token, name="session-page-tests")
    client.connect()
    try:
        client.chat_send(key, f"hello {word}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            messages = client.chat_history(key).get("messages") or []
            if any(m.get("role") == "assistant" for m in messages):
                break
            time.sleep(0.5)
    finally:
        client.close()
    assert not ChatHistory.objects.filter(session_key=key).exists()
    page = page_of(web, gateway_row, key)
    log = page.find("div", id="chat-log")
    assert not log.has("div", id="chat-empty")
    assert any(word in a.text for a in log.find_all("article", cls="role-user"))
    assert ChatHistory.objects.filter(gateway=gateway_row, session_key=key).count() >= 2  # stored
