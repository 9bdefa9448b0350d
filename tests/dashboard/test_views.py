"""The dashboard pages and fragments through the Django test client: login, the org chart and
its filters (full page and htmx), fragments, query counts, the chat panel (escaping, long
messages, composer, send and abort against the real gateway), config diffs, batch runs, and
never a gateway token in a page."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from dashboard import overview
from fleet import chats, configs
from fleet.models import Agent, AgentSession, ConfigHistory, Gateway, HealthSample
from openclaw import SyncGatewayClient
from scheduler import stops
from tests.support.factories import (
    make_agent,
    make_batch_run,
    make_chat,
    make_gateway,
    make_health_sample,
    make_session,
)
from tests.support.gateway import wait_for
from tests.support.html import Node, dom

pytestmark = [pytest.mark.usefixtures("redis_prefix"), pytest.mark.django_db, pytest.mark.redis]

TOKEN = "views-test-gateway-token-9c41e7"  # looked for in every page
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
HTMX = {"HX-Request": "true"}


def session_keys(node: Node) -> list[str]:
    return [n.attrs["data-session-key"] for n in node.find_all("li", cls="session")]


# --- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture
def web(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def gateway(db):
    return make_gateway(
        "alpha",
        token=TOKEN,
        status=Gateway.Status.CONNECTED,
        status_reason="Compatible (protocol 4)",
        version="2026.9.6",
        latency_ms=12.0,
    )


@pytest.fixture
def fleet(gateway):
    """main → researcher → writer, plus a loner; main's sessions in mixed order, one subagent run."""
    main = make_agent(gateway, "main", name="Main", emoji="🦀", is_default=True)
    researcher = make_agent(gateway, "researcher", name="Researcher", parent=main)
    writer = make_agent(gateway, "writer", name="Writer", parent=researcher)
    loner = make_agent(gateway, "loner", name="Loner")
    make_session(gateway, "agent:main:old", main, status="offline", minutes_ago=600)
    make_session(gateway, "agent:main:quiet", main, status="idle", minutes_ago=3)
    parent = make_session(
        gateway,
        "agent:main:main",
        main,
        status="active",
        minutes_ago=0,
        title="Main chat",
        has_active_run=True,
    )
    make_session(gateway, "agent:main:recent", main, status="active", minutes_ago=0.5)
    make_session(
        gateway,
        "agent:main:subagent:1",
        main,
        status="active",
        minutes_ago=0,
        parent=parent,
        parent_session_key=parent.session_key,
    )
    make_session(
        gateway, "agent:researcher:main", researcher, status="idle", minutes_ago=2, title="needle in a hay"
    )
    make_session(gateway, "agent:writer:main", writer, status="offline", minutes_ago=900)
    return {"main": main, "researcher": researcher, "writer": writer, "loner": loner, "parent": parent}


# --- login --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/fragments/gateways/1/",
        "/fragments/gateways/1/health/",
        "/gateways/1/sessions/agent:main:main/",
        "/gateways/1/messages/1/",
        "/gateways/1/config/",
        "/batches/",
        "/runs/1/trace/",
        "/flows/",
        "/flows/coding/",
    ],
)
def test_every_page_requires_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_posts_require_login_and_reach_no_gateway(client, gateway):
    for action in ("send", "abort"):
        response = client.post(f"/gateways/{gateway.pk}/sessions/agent:main:main/{action}", {"message": "hi"})
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


# --- the overview ---------------------------------------------------------------------------------------


def test_overview_renders_each_gateway_with_health_counts_and_links(web, fleet, gateway):
    other = make_gateway("beta", token=TOKEN)
    make_gateway("gone", token=TOKEN, enabled=False)
    make_health_sample(gateway, connected=True, latency_ms=10)
    make_health_sample(gateway, connected=False)
    response = web.get("/")
    assert response.status_code == 200
    page = dom(response)
    sections = page.find_all("section", cls="gateway")
    assert [s.attrs["id"] for s in sections] == [f"gateway-{gateway.pk}", f"gateway-{other.pk}"]
    alpha = sections[0]
    assert alpha.find("h2").text == "alpha"
    assert alpha.attrs["data-fragment"] == f"/fragments/gateways/{gateway.pk}/"
    health = alpha.find("div", id=f"health-{gateway.pk}")
    assert health.find("span", cls="status").text.strip() == "Connected"
    assert health.find("span", cls="status").attrs["data-status"] == "connected"
    assert health.attrs["data-fragment"] == f"/fragments/gateways/{gateway.pk}/health/"
    assert health.has("svg", cls="sparkline")
    assert "12 ms" in health.text and "v2026.9.6" in health.text
    counts = " ".join(alpha.find("p", cls="counts").text.split())
    assert counts == "4 agents · 3 active · 2 idle · 2 offline · 1 run in flight"
    assert alpha.find("a", href=f"/gateways/{gateway.pk}/config/").text == "Config history"
    beta = sections[1]
    assert beta.find("span", cls="status").text.strip() == "Not checked yet"
    assert "No agents seen yet." in beta.text
    assert "gone" not in response.content.decode()
    assert page.find("span", id="live-status").text == "Connecting…"
    assert page.find("body").attrs["ws-connect"] == "/ws/dashboard/"


def test_the_org_chart_nests_agents_under_their_parents(web, fleet, gateway):
    page = dom(web.get("/"))
    chart = page.find("ul", cls="root")
    node = {aid: chart.find("li", data_agent_id=aid) for aid in ("main", "researcher", "writer", "loner")}
    roots = [li for li in chart.children if isinstance(li, Node) and li.tag == "li"]
    assert [li.attrs["data-agent-id"] for li in roots] == ["main", "loner"]  # default agent first
    assert node["researcher"].inside(node["main"])
    assert node["writer"].inside(node["researcher"])
    assert not node["loner"].inside(node["main"])

    # Each agent shows its own status: the busiest of its sessions.
    def agent_status(aid):
        return node[aid].find("summary").find("span", cls="status")

    assert agent_status("main").text == "Active" and agent_status("main").attrs["data-status"] == "active"
    assert "running" in node["main"].attrs["class"]
    assert agent_status("researcher").attrs["data-status"] == "idle"
    assert agent_status("loner").attrs["data-status"] == "offline" and agent_status("loner").text == "Offline"
    assert "Researcher" in node["researcher"].find("summary").text


def test_sessions_are_listed_active_first_with_subagent_sessions_under_their_parent(web, fleet, gateway):
    page = dom(web.get("/"))
    main = page.find("li", data_agent_id="main")
    own = main.find("ul", cls="sessions")
    top = [li.attrs["data-session-key"] for li in own.children if isinstance(li, Node) and li.tag == "li"]
    # Active first (the one with a run in flight before the other), then idle, then offline.
    assert top == ["agent:main:main", "agent:main:recent", "agent:main:quiet", "agent:main:old"]
    parent = own.find("li", data_session_key="agent:main:main")
    child = page.find("li", data_session_key="agent:main:subagent:1")
    assert child.inside(parent) and child.parent.attrs["class"] == "subsessions"
    assert parent.find("a").text == "Main chat"
    assert parent.find("a").attrs["href"] == f"/gateways/{gateway.pk}/sessions/agent:main:main/"
    assert parent.has("span", cls="live")
    # Sessions belong to their own agent's node, not to the boss above it.
    researcher = page.find("li", data_agent_id="researcher")
    writer = page.find("li", data_agent_id="writer")
    assert "agent:researcher:main" in session_keys(researcher)
    assert session_keys(writer) == ["agent:writer:main"]


def test_an_agent_with_many_sessions_shows_a_link_to_the_rest(web, gateway):
    busy = make_agent(gateway, "busy", name="Busy")
    AgentSession.objects.bulk_create(
        AgentSession(
            gateway=gateway, agent=busy, agent_key="busy", session_key=f"agent:busy:{i}", status="idle"
        )
        for i in range(30)
    )
    node = dom(web.get("/")).find("li", data_agent_id="busy")
    assert len(session_keys(node)) == overview.SESSIONS_PER_AGENT
    assert node.find("p", cls="more").find("a").attrs["href"] == "/?agent=busy"
    assert f"{30 - overview.SESSIONS_PER_AGENT} more sessions" in node.find("p", cls="more").text
    assert len(session_keys(dom(web.get("/?agent=busy")))) == 30


def test_status_filter_full_page(web, fleet, gateway):
    page = dom(web.get("/?status=active"))
    keys = session_keys(page)
    assert set(keys) == {"agent:main:main", "agent:main:recent", "agent:main:subagent:1"}
    assert page.find("input", name="status", value="active").attrs.get("checked") is not None
    assert page.find("input", name="status", value="idle").attrs.get("checked", "absent") == "absent"
    assert not page.has("li", data_agent_id="loner")  # no session matches: pruned


def test_several_statuses_and_a_bogus_one(web, fleet, gateway):
    keys = session_keys(dom(web.get("/?status=idle&status=offline&status=bogus")))
    assert set(keys) == {"agent:main:quiet", "agent:main:old", "agent:researcher:main", "agent:writer:main"}


def test_agent_filter_keeps_the_chart_shape(web, fleet, gateway):
    page = dom(web.get("/?agent=writer"))
    assert session_keys(page) == ["agent:writer:main"]
    writer = page.find("li", data_agent_id="writer")
    # Its bosses stay (the chart keeps its shape), without their sessions; the loner goes.
    assert writer.inside(page.find("li", data_agent_id="researcher"))
    assert writer.inside(page.find("li", data_agent_id="main"))
    assert not page.has("li", data_agent_id="loner")
    assert page.find("option", value="writer").attrs.get("selected") is not None


def test_text_search_full_page(web, fleet, gateway):
    page = dom(web.get("/?q=NEEDLE"))
    assert session_keys(page) == ["agent:researcher:main"]
    assert page.find("input", id="q").attrs["value"] == "NEEDLE"
    assert session_keys(dom(web.get("/?q=subagent"))) == ["agent:main:subagent:1"]
    assert "Nothing matches the filters." in dom(web.get("/?q=zzz-nothing")).text


def test_filters_through_htmx_return_only_the_fleet_fragment(web, fleet, gateway):
    response = web.get("/", {"status": "idle", "q": "hay"}, headers={**HTMX, "HX-Target": "fleet"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html and 'form class="filters"' not in html  # not the filter form
    fragment = dom(response)
    fleet_div = fragment.find("div", id="fleet")
    assert [n for n in fragment.children if isinstance(n, Node)] == [fleet_div]
    assert session_keys(fleet_div) == ["agent:researcher:main"]
    response = web.get("/", {"agent": "main"}, headers={**HTMX, "HX-Target": "fleet"})
    assert set(session_keys(dom(response))) == {
        "agent:main:main",
        "agent:main:recent",
        "agent:main:quiet",
        "agent:main:old",
        "agent:main:subagent:1",
    }


def test_an_htmx_request_for_another_target_gets_the_full_page(web, fleet):
    response = web.get("/", headers={**HTMX, "HX-Target": "main"})
    assert "<html" in response.content.decode()


def test_gateway_fragment(web, fleet, gateway):
    response = web.get(f"/fragments/gateways/{gateway.pk}/", {"status": "offline"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html
    section = dom(response).find("section", id=f"gateway-{gateway.pk}")
    assert set(session_keys(section)) == {"agent:main:old", "agent:writer:main"}
    assert section.find("span", cls="status").text.strip() == "Connected"
    assert web.get(f"/fragments/gateways/{gateway.pk + 100}/").status_code == 404


def test_health_fragment(web, gateway):
    make_health_sample(gateway, connected=True, latency_ms=30)
    make_health_sample(gateway, connected=True, latency_ms=10)
    Gateway.objects.filter(pk=gateway.pk).update(
        status=Gateway.Status.DISCONNECTED, status_reason="Connection refused", latency_ms=None
    )
    response = web.get(f"/fragments/gateways/{gateway.pk}/health/")
    assert response.status_code == 200
    assert "<html" not in response.content.decode()
    health = dom(response).find("div", id=f"health-{gateway.pk}")
    badge = health.find("span", cls="status", data_status="disconnected")
    assert badge.text.strip() == "Disconnected" and "shape-square" in badge.attrs["class"]
    assert health.find("p", cls="reason").text == "Connection refused"
    chart = health.find("svg", cls="sparkline")
    assert (
        chart.attrs["aria-label"]
        == "Latency over the last hour, 2 checks: last 10 ms, worst 30 ms, best 10 ms"
    )
    # A y axis in ms, an x axis in clock time, and a tooltip per point.
    axis = [t.text for t in chart.find_all("text", cls="axis")]
    assert axis[:3] == ["50 ms", "25 ms", "0"] and all(":" in label for label in axis[3:]), axis
    tips = [g.find("title").text for g in chart.find_all("g", cls="pt")]
    assert len(tips) == 2 and tips[0].endswith("· 30 ms") and tips[1].endswith("· 10 ms"), tips
    assert web.get(f"/fragments/gateways/{gateway.pk + 100}/health/").status_code == 404


def test_overview_query_count_is_fixed_for_a_big_fleet(web, gateway, django_assert_max_num_queries):
    agents = Agent.objects.bulk_create(
        Agent(gateway=gateway, agent_id=f"agent-{i:02d}", name=f"Agent {i}") for i in range(50)
    )
    for i, agent in enumerate(agents[1:], start=1):
        agent.parent = agents[(i - 1) // 3]
    Agent.objects.bulk_update(agents[1:], ["parent"])
    now = timezone.now()
    statuses = ["active", "idle", "offline"]
    AgentSession.objects.bulk_create(
        AgentSession(
            gateway=gateway,
            agent=agents[i % 50],
            agent_key=agents[i % 50].agent_id,
            session_key=f"agent:{agents[i % 50].agent_id}:s{i}",
            status=statuses[i % 3],
            has_active_run=i % 7 == 0,
            gw_updated_at=now - timedelta(seconds=i),
        )
        for i in range(500)
    )
    parents = list(AgentSession.objects.filter(gateway=gateway).order_by("pk")[:50])
    AgentSession.objects.bulk_create(
        AgentSession(
            gateway=gateway,
            agent=p.agent,
            agent_key=p.agent_key,
            session_key=f"{p.session_key}:sub",
            status="active",
            parent=p,
        )
        for p in parents
    )
    HealthSample.objects.bulk_create(
        HealthSample(gateway=gateway, connected=True, latency_ms=i, checked_at=now - timedelta(minutes=i))
        for i in range(50)
    )
    stops.sync_mirror()  # as the tick keeps it: the stop banner reads it, not the database
    # 10 for the page, 2 for the header's role check (may this user engage an emergency stop?).
    with django_assert_max_num_queries(12):
        response = web.get("/")
    assert response.status_code == 200
    page = dom(response)
    assert len(page.find_all("li", cls="agent")) == 50
    # At most ROW_BUDGET top-level rows, busiest agents first; the rest load when an agent is expanded.
    top_level = [
        li for li in page.find_all("li", cls="session") if li.parent.attrs.get("class") == "sessions"
    ]
    assert len(top_level) == overview.ROW_BUDGET
    lazy = [li for li in page.find_all("li", cls="agent") if "data-lazy" in li.attrs]
    assert lazy, "agents beyond the row budget load their sessions on expand"
    agent = Agent.objects.get(agent_id=lazy[0].attrs["data-agent-id"])
    with django_assert_max_num_queries(10):
        fragment = web.get(f"/fragments/gateways/{gateway.pk}/agents/{agent.pk}/sessions/")
    assert fragment.status_code == 200 and "<html" not in fragment.content.decode()
    assert len(session_keys(dom(fragment))) == AgentSession.objects.filter(agent=agent).count()
    with django_assert_max_num_queries(10):
        web.get("/", {"status": "active", "q": "s1"}, headers={**HTMX, "HX-Target": "fleet"})
    with django_assert_max_num_queries(10):
        web.get(f"/fragments/gateways/{gateway.pk}/")


# --- the session page ------------------------------------------------------------------------------------


def chat(gateway, key, texts, role="user"):
    """A conversation: one stored message per text, a second apart from T0."""
    return [
        make_chat(gateway, key, text, role=role, timestamp=T0 + timedelta(seconds=i))
        for i, text in enumerate(texts)
    ]


def test_session_page_shows_history_escaped(web, fleet, gateway):
    chat(gateway, "agent:main:main", ["<script>alert(1)</script>", "plain & simple"])
    response = web.get(f"/gateways/{gateway.pk}/sessions/agent:main:main/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html
    page = dom(response)
    texts = [m.find("div", cls="text").text for m in page.find("div", id="chat-log").find_all("article")]
    assert texts == ["<script>alert(1)</script>", "plain & simple"]  # in order, as text
    head = page.find("section", id="session-head")
    assert head.attrs["data-gateway-id"] == str(gateway.pk)
    assert head.attrs["data-session-key"] == "agent:main:main"
    assert head.find("h1").text == "Main chat"
    assert "hidden" not in page.find("span", id="run-indicator").attrs  # a run is in flight


def test_session_page_for_a_session_not_stored_yet(web, gateway):
    response = web.get(f"/gateways/{gateway.pk}/sessions/agent:main:brand-new/")
    assert response.status_code == 200
    page = dom(response)
    assert page.find("h1").text == "agent:main:brand-new"
    assert page.find("div", id="chat-empty").find("p", cls="empty-title").text == "No messages stored yet."
    assert web.get(f"/gateways/{gateway.pk + 100}/sessions/agent:main:main/").status_code == 404


def test_opening_a_session_page_registers_its_chat_panel(web, gateway):

    make_session(gateway, "agent:writer:main")
    web.get(f"/gateways/{gateway.pk}/sessions/agent:writer:main/")
    assert chats.open_panels(gateway.pk) == ["agent:writer:main"]


def test_a_made_up_session_page_registers_no_panel_for_batch_003(web, gateway):
    for i in range(5):
        assert web.get(f"/gateways/{gateway.pk}/sessions/agent:made:up{i}/").status_code == 200
    assert chats.open_panels(gateway.pk) == []


def test_a_huge_message_is_truncated_with_a_link_to_the_full_text(web, gateway):
    huge = "x" * (1024 * 1024 - 10) + "THE-END-MARK"
    short, big = chat(gateway, "agent:main:main", ["short one", huge], role="assistant")
    response = web.get(f"/gateways/{gateway.pk}/sessions/agent:main:main/")
    html = response.content.decode()
    assert len(html) < 100_000
    assert "THE-END-MARK" not in html
    article = dom(response).find("article", id=f"msg-{big.pk}")
    assert len(article.find("div", cls="text").text) <= 4000
    link = article.find("p", cls="more").find("a")
    assert link.attrs["href"] == f"/gateways/{gateway.pk}/messages/{big.pk}/"
    assert link.text == f"Show all {len(huge)} characters"
    assert not dom(response).find("article", id=f"msg-{short.pk}").has("p", cls="more")

    full = web.get(link.attrs["href"])
    assert full.status_code == 200
    text = dom(full).find("pre", cls="full-text").text
    assert text == huge
    assert web.get(f"/gateways/{gateway.pk + 100}/messages/{big.pk}/").status_code == 404


def test_long_histories_page_through_older_messages(web, gateway):
    rows = chat(gateway, "agent:main:main", [f"message {i}" for i in range(130)])
    page = dom(web.get(f"/gateways/{gateway.pk}/sessions/agent:main:main/"))
    shown = page.find("div", id="chat-log").find_all("article")
    assert len(shown) == 100
    assert shown[-1].find("div", cls="text").text == "message 129"
    older = page.find("p", cls="older").find("a")
    response = web.get(
        f"/gateways/{gateway.pk}/sessions/agent:main:main/{older.attrs['href']}",
        headers={**HTMX, "HX-Target": "chat-log"},
    )
    assert "<html" not in response.content.decode()
    older_page = dom(response).find("div", id="chat-log").find_all("article")
    assert [a.find("div", cls="text").text for a in older_page] == [f"message {i}" for i in range(30)]
    assert older_page[-1].attrs["id"] == f"msg-{rows[29].pk}"


@pytest.mark.parametrize(
    ("status", "reason", "shown"),
    [
        ("read_only", "Connected without operator.write", "This gateway is read-only: Connected without"),
        ("disconnected", "Connection refused", "The gateway is disconnected: Connection refused"),
        ("auth_failed", "", "The gateway is authentication failed."),
    ],
)
def test_composer_is_disabled_with_the_reason(web, gateway, status, reason, shown):
    Gateway.objects.filter(pk=gateway.pk).update(status=status, status_reason=reason)
    page = dom(web.get(f"/gateways/{gateway.pk}/sessions/agent:main:main/"))
    composer = page.find("form", id="composer")
    assert composer.find("textarea").attrs.get("disabled") is not None
    assert composer.find("button", type="submit").attrs.get("disabled") is not None
    assert composer.find("textarea").attrs["aria-describedby"] == "send-disabled"
    assert shown in composer.find("p", id="send-disabled").text
    assert page.find("button", id="abort").attrs.get("disabled") is not None

    response = web.post(
        f"/gateways/{gateway.pk}/sessions/agent:main:main/send", {"message": "hello"}, headers=HTMX
    )
    assert response.status_code == 400
    assert shown in dom(response).find("p", role="alert").text


def test_composer_is_enabled_when_connected(web, gateway):
    composer = dom(web.get(f"/gateways/{gateway.pk}/sessions/agent:main:main/")).find("form", id="composer")
    assert composer.find("textarea").attrs.get("disabled", "enabled") == "enabled"
    assert not composer.has("p", id="send-disabled")
    assert composer.attrs["hx-post"] == f"/gateways/{gateway.pk}/sessions/agent:main:main/send"
    assert composer.find("input", name="idempotency_key").attrs["value"]


@pytest.mark.parametrize("message", ["", "   \n  "])
def test_an_empty_message_is_a_400_with_a_clear_error_in_htmx_mode(web, gateway, message):
    response = web.post(
        f"/gateways/{gateway.pk}/sessions/agent:main:main/send", {"message": message}, headers=HTMX
    )
    assert response.status_code == 400
    assert "<html" not in response.content.decode()
    form = dom(response).find("form", id="composer")
    assert form.find("p", role="alert").text == "Type a message first."


def test_an_empty_message_without_htmx_redirects_back_with_the_error(web, gateway):
    url = f"/gateways/{gateway.pk}/sessions/agent:main:main/"
    response = web.post(url + "send", {"message": ""}, follow=True)
    assert response.redirect_chain == [(url, 302)]
    assert "Type a message first." in dom(response).find("p", cls="alert-error").text


def test_flash_messages_show_on_the_session_page_and_chat_history_does_not(web, gateway):
    chat(gateway, "agent:main:main", ["first message", "second message"])
    url = f"/gateways/{gateway.pk}/sessions/agent:main:main/"
    page = dom(web.post(url + "send", {"message": ""}, follow=True))
    alerts = page.find_all("p", cls="alert")
    assert [a.text for a in alerts] == ["Type a message first."]
    assert len(page.find("div", id="chat-log").find_all("article")) == 2
    # Shown once, not again on the next page.
    assert not dom(web.get(url)).has("p", cls="alert")


def test_a_too_long_message_is_refused_and_kept_as_draft(web, gateway):
    text = "y" * 100_001
    response = web.post(
        f"/gateways/{gateway.pk}/sessions/agent:main:main/send", {"message": text}, headers=HTMX
    )
    assert response.status_code == 400
    form = dom(response).find("form", id="composer")
    assert "too long" in form.find("p", role="alert").text
    assert form.find("textarea").text == text


# --- against the real gateway ---------------------------------------------------------------------------


def history_texts(gateway_client: SyncGatewayClient, key: str) -> list[str]:
    from fleet.chats import message_text

    messages = gateway_client.chat_history(key, limit=50).get("messages") or []
    return [message_text(m.get("content")) for m in messages]


@pytest.fixture
def connected_gateway(gateway_row):
    Gateway.objects.filter(pk=gateway_row.pk).update(status=Gateway.Status.CONNECTED)
    gateway_row.refresh_from_db()
    return gateway_row


@pytest.fixture
def gateway_client(live_openclaw):
    client = SyncGatewayClient(live_openclaw.url, live_openclaw.token, name="view-tests")
    client.connect()
    yield client
    client.close()


@pytest.mark.gateway
def test_send_starts_a_run_on_the_real_gateway(web, connected_gateway, gateway_client):
    key = f"agent:main:views-{uuid.uuid4().hex[:8]}"
    text = f"hello from the view tests {uuid.uuid4().hex[:6]}"
    response = web.post(
        f"/gateways/{connected_gateway.pk}/sessions/{key}/send",
        {"message": f"  {text}  ", "idempotency_key": str(uuid.uuid4())},
        headers=HTMX,
    )
    assert response.status_code == 200, response.content.decode()[-2000:]
    form = dom(response).find("form", id="composer")
    assert not form.has("p", role="alert")
    assert form.find("textarea").text == ""  # a fresh composer for the next message
    assert form.find("input", name="idempotency_key").attrs["value"]
    wait_for(lambda: text in history_texts(gateway_client, key), 30, what="the message in chat.history")
    reply = wait_for(
        lambda: [t for t in history_texts(gateway_client, key) if t.startswith("[stub:stub-model]")],
        60,
        what="the stub model's reply",
    )
    assert text in reply[0]
    assert TOKEN not in response.content.decode()
    assert connected_gateway.token not in response.content.decode()


@pytest.mark.gateway
def test_a_double_submit_with_one_idempotency_key_sends_once(web, connected_gateway, gateway_client):
    key = f"agent:writer:views-{uuid.uuid4().hex[:8]}"
    text = f"only once {uuid.uuid4().hex[:6]}"
    data = {"message": text, "idempotency_key": str(uuid.uuid4())}
    url = f"/gateways/{connected_gateway.pk}/sessions/{key}/send"
    assert web.post(url, data).status_code == 302
    # A brand-new session: the gateway has it from now on, so its panel is polled (BATCH-003).
    assert key in chats.open_panels(connected_gateway.pk)
    assert web.post(url, data).status_code == 302
    wait_for(
        lambda: any(t.startswith("[stub:stub-model]") for t in history_texts(gateway_client, key)),
        60,
        what="the stub model's reply",
    )
    assert history_texts(gateway_client, key).count(text) == 1


def start_slow_run(web, gateway, key: str) -> None:
    response = web.post(
        f"/gateways/{gateway.pk}/sessions/{key}/send", {"message": "[[slow]] " + "word " * 60}, headers=HTMX
    )
    assert response.status_code == 200, response.content.decode()[-2000:]


@pytest.mark.gateway
def test_abort_endpoint_answers(web, connected_gateway, gateway_client):
    """A run the dashboard started can be aborted from another request (another connection)."""
    key = f"agent:researcher:views-{uuid.uuid4().hex[:8]}"
    url = f"/gateways/{connected_gateway.pk}/sessions/{key}/"
    start_slow_run(web, connected_gateway, key)
    response = web.post(url + "abort", headers=HTMX)
    assert response.status_code == 200, response.content
    assert dom(response).find("span", role="status").text == "Abort requested."
    # The stub would need ~20 s for its reply; aborted, none comes.
    time.sleep(3)
    assert not any(t.startswith("[stub:stub-model]") for t in history_texts(gateway_client, key))
    response = web.post(url + "abort", follow=True)
    assert response.redirect_chain == [(url, 302)]
    assert dom(response).find("p", cls="alert-success").text == "Abort requested."


@pytest.mark.gateway
def test_abort_of_someone_elses_run_says_why_it_was_refused(web, connected_gateway, gateway_client):
    """A run started by another client (here a device-less one) is not the dashboard's to abort
    without operator.admin: the operator is told so, in htmx mode and on the page."""
    key = f"agent:researcher:views-{uuid.uuid4().hex[:8]}"
    url = f"/gateways/{connected_gateway.pk}/sessions/{key}/"
    gateway_client.chat_send(key, "[[slow]] " + "word " * 60)
    response = web.post(url + "abort", headers=HTMX)
    assert response.status_code == 400
    notice = dom(response).find("span", role="status").text
    assert "refused to abort" in notice and "operator.admin" in notice
    response = web.post(url + "abort", follow=True)
    assert response.redirect_chain == [(url, 302)]
    assert [p.text for p in dom(response).find_all("p", cls="alert")] == [notice]
    gateway_client.chat_abort(key)  # the owner may


@pytest.mark.gateway
def test_with_operator_admin_the_dashboard_may_abort_any_run(
    web, connected_gateway, gateway_client, settings
):
    settings.GATEWAY_SCOPES = ("operator.read", "operator.write", "operator.admin")
    key = f"agent:researcher:views-{uuid.uuid4().hex[:8]}"
    gateway_client.chat_send(key, "[[slow]] " + "word " * 60)
    response = web.post(f"/gateways/{connected_gateway.pk}/sessions/{key}/abort", headers=HTMX)
    assert response.status_code == 200, response.content
    assert dom(response).find("span", role="status").text == "Abort requested."


def test_abort_on_an_unreachable_gateway_says_why(web, gateway):
    response = web.post(f"/gateways/{gateway.pk}/sessions/agent:main:main/abort", headers=HTMX)
    assert response.status_code == 400
    notice = dom(response).find("span", role="status").text
    assert notice and notice != "Abort requested."
    assert TOKEN not in response.content.decode()


# --- config history and batch runs -------------------------------------------------------------------------


@pytest.fixture
def config_rows(gateway):
    versions = [
        {"agents": {"entries": {"main": {"name": "Main"}}}, "gateway": {"auth": {"token": TOKEN}}},
        {"agents": {"entries": {"main": {"name": "Main"}, "writer": {"name": "Writer"}}}},
        {"agents": {"entries": {"main": {"name": "Boss"}, "writer": {"name": "Writer"}}}},
    ]
    rows = []
    for i, config in enumerate(versions):
        result = configs.record_config(gateway, {"hash": f"hash-{i}", "sourceConfig": config})
        ConfigHistory.objects.filter(pk=result.row.pk).update(created_at=T0 + timedelta(hours=i))
        rows.append(ConfigHistory.objects.get(pk=result.row.pk))
    return rows


def test_config_history_lists_rows_and_shows_the_latest_diff(web, gateway, config_rows):
    response = web.get(f"/gateways/{gateway.pk}/config/")
    assert response.status_code == 200
    page = dom(response)
    rows = page.find("table").find("tbody").find_all("tr")
    assert [r.find("time").text for r in rows] == [
        "2026-11-20 14:00:00",
        "2026-11-20 13:00:00",
        "2026-11-20 12:00:00",
    ]
    assert "first version" in rows[-1].text
    assert "agents.entries.main.name" in rows[0].text
    diff = page.find("pre", cls="diff")
    assert [s.text for s in diff.find_all("span", cls="del")] == ['-        "name": "Main"']
    assert [s.text for s in diff.find_all("span", cls="add")] == ['+        "name": "Boss"']


def test_config_history_diffs_two_chosen_versions(web, gateway, config_rows):
    first, _, third = config_rows
    # Either order: the older one is always the "from" side.
    for a, b in ((first, third), (third, first)):
        response = web.get(f"/gateways/{gateway.pk}/config/", {"a": a.pk, "b": b.pk})
        page = dom(response)
        diff = page.find("pre", cls="diff")
        added = "\n".join(s.text for s in diff.find_all("span", cls="add"))
        removed = "\n".join(s.text for s in diff.find_all("span", cls="del"))
        assert '"Boss"' in added and '"writer"' in added
        assert '"Main"' in removed and '"gateway"' in removed
        assert "2026-11-20 12:00:00 → 2026-11-20 14:00:00" in page.find("section", cls="card").text
        assert page.find("input", name="a", value=str(first.pk)).attrs.get("checked") is not None
        assert page.find("input", name="b", value=str(third.pk)).attrs.get("checked") is not None
        assert TOKEN not in response.content.decode()  # redacted when stored
    same = web.get(f"/gateways/{gateway.pk}/config/", {"a": first.pk, "b": first.pk})
    assert same.status_code == 200
    # A bogus choice is a 400 naming the parameter (dashboard.params), no longer silently ignored.
    bogus = web.get(f"/gateways/{gateway.pk}/config/", {"a": "x", "b": str(third.pk)})
    assert bogus.status_code == 400
    assert "'a' must be an integer, got 'x'" in dom(bogus).find("p", role="alert").text


def test_config_history_of_another_gateway_is_not_mixed_in(web, gateway, config_rows):
    other = make_gateway("beta", token=TOKEN)
    response = web.get(f"/gateways/{other.pk}/config/", {"a": config_rows[0].pk, "b": config_rows[2].pk})
    page = dom(response)
    assert "No config stored yet" in page.text
    assert not page.has("pre", cls="diff")
    assert web.get(f"/gateways/{gateway.pk + 100}/config/").status_code == 404


def test_batch_runs_page(web, gateway):
    make_batch_run("BATCH-001", gateway, status="ok", duration_ms=12, counts={"n": 3})
    make_batch_run("BATCH-001", gateway, status="ok", started_at=timezone.now() - timedelta(hours=1))
    make_batch_run("BATCH-004", status="error", error="RuntimeError: boom")
    page = dom(web.get("/batches/"))
    latest = {tr.attrs["id"]: tr for tr in page.find_all("tr") if tr.attrs.get("id", "").startswith("batch-")}
    assert len(latest) == 5
    assert "OK" in latest["batch-BATCH-001"].text and "alpha" in latest["batch-BATCH-001"].text
    assert "RuntimeError: boom" in latest["batch-BATCH-004"].text
    assert "never ran" in latest["batch-BATCH-003"].text
    recent = page.find_all("section", cls="card")[1].find("tbody").find_all("tr")
    assert len(recent) == 3
    only = dom(web.get("/batches/?batch=BATCH-004")).find_all("section", cls="card")[1].find("tbody")
    assert len(only.find_all("tr")) == 1 and "boom" in only.text
    errors = dom(web.get("/batches/?status=error")).find_all("section", cls="card")[1].find("tbody")
    assert len(errors.find_all("tr")) == 1


# --- never a token -----------------------------------------------------------------------------------------


def test_the_gateway_token_never_appears_in_any_page(web, fleet, gateway, config_rows):
    (message,) = chat(gateway, "agent:main:main", ["hi"])
    Gateway.objects.filter(pk=gateway.pk).update(status="auth_failed", status_reason="The token was rejected")
    make_batch_run("BATCH-005", gateway, status="error", error="auth failed")
    paths = [
        "/",
        "/?q=main",
        f"/fragments/gateways/{gateway.pk}/",
        f"/fragments/gateways/{gateway.pk}/health/",
        f"/gateways/{gateway.pk}/sessions/agent:main:main/",
        f"/gateways/{gateway.pk}/messages/{message.pk}/",
        f"/gateways/{gateway.pk}/config/",
        f"/gateways/{gateway.pk}/config/?a={config_rows[0].pk}&b={config_rows[2].pk}",
        "/batches/",
    ]
    for path in paths:
        response = web.get(path)
        assert response.status_code == 200, path
        assert TOKEN not in response.content.decode(), path
    response = web.get("/", headers={**HTMX, "HX-Target": "fleet"})
    assert TOKEN not in response.content.decode()
    response = web.post(
        f"/gateways/{gateway.pk}/sessions/agent:main:main/send", {"message": "x"}, headers=HTMX
    )
    assert response.status_code == 400
    assert TOKEN not in response.content.decode()


def test_an_agent_card_shows_identity_model_activity_preview_and_runs_in_flight(web, gateway):
    crab = make_agent(gateway, "crab", name="Crab Lead", emoji="🦀", model="stub/stub-model")
    make_session(
        gateway, "agent:crab:old", crab, status="offline", minutes_ago=90, last_message_preview="older"
    )
    make_session(
        gateway, "agent:crab:main", crab, status="active", has_active_run=True, minutes_ago=3,
        title="Weekly report", total_tokens=12_300, context_tokens=200_000,
        last_message_preview="Drafting the <b>report</b>",
    )  # fmt: skip
    make_session(gateway, "agent:crab:side", crab, status="idle", has_active_run=True, minutes_ago=4)
    page = dom(web.get("/"))
    card = page.find("li", data_agent_id="crab").find("summary")
    assert card.find("span", cls="initials").text == "CL"  # visible without an emoji font
    assert card.find("span", cls="avatar-emoji").text == "🦀"
    assert card.find("span", cls="chip-model").text.strip() == "stub/stub-model"
    assert card.find("time").text == "3 min ago"  # its most recent session
    assert card.find("span", cls="runs").text.strip() == "2 runs in flight"
    assert card.find("span", cls="agent-preview").text.strip() == "Drafting the <b>report</b>"  # escaped text
    row = page.find("li", data_session_key="agent:crab:main")
    assert (
        row.find("a").text == "Weekly report"
        and row.find("span", cls="session-key").text == "agent:crab:main"
    )
    assert row.find("span", cls="session-age").text.strip() == "3 min ago"
    assert " ".join(row.find("span", cls="tokens-text").text.split()) == "12.3k / 200k context tokens"
    assert row.find("rect", cls="meter-fill").attrs["width"] == "6"


def test_the_navigation_marks_the_current_page_and_lists_each_gateways_config(web, gateway):
    page = dom(web.get("/"))
    nav = page.find("nav", aria_label="Main")
    current = [a for a in nav.find_all("a") if a.attrs.get("aria-current") == "page"]
    assert [a.text.strip() for a in current] == ["Fleet"]
    config = nav.find("a", href=f"/gateways/{gateway.pk}/config/")
    assert "alpha" in config.text
    soon = [s.text.split()[0] for s in nav.find_all("span", aria_disabled="true")]
    assert soon == ["Audit"]
    for path, label in (
        ("/queue/", "Queue"),
        ("/runs/", "Runs"),
        ("/flows/", "Flows"),
        ("/jobs/", "Jobs"),
        ("/alerts/", "Alerts"),
        ("/triggers/", "Triggers"),
    ):
        current = dom(web.get(path)).find("nav", aria_label="Main").find("a", aria_current="page")
        assert current.attrs["href"] == path and current.text.strip() == label
    page = dom(web.get(f"/gateways/{gateway.pk}/config/"))
    current = page.find("nav", aria_label="Main").find("a", aria_current="page")
    assert current.attrs["href"] == f"/gateways/{gateway.pk}/config/"
    assert page.find("button", id="menu-button").attrs["aria-expanded"] == "false"
