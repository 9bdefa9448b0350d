"""The live dashboard end to end: Chromium ↔ Daphne (websocket, htmx) ↔ Redis channel layer ↔
the gateway listener ↔ the real OpenClaw gateway. No Celery worker runs here: where a page
relies on a batch (BATCH-002 for the roster, BATCH-003 for stored chat history, BATCH-005 for
health), the test calls the batch function itself, off Playwright's event loop."""

from __future__ import annotations

import re
import time
import uuid

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from fleet import batches
from fleet.models import ChatHistory, Gateway
from openclaw import SyncGatewayClient
from tests.support.browser import login, off_loop, screenshot

pytestmark = [
    pytest.mark.usefixtures("redis_prefix"),
    pytest.mark.browser,
    pytest.mark.gateway,
    pytest.mark.redis,
]

DEMO_AGENTS = ("main", "researcher", "writer")


@pytest.fixture(autouse=True)
def recorded_events(page):
    """Every websocket event the page handled, kept by the page for failure messages."""
    page.add_init_script(
        """document.addEventListener("DOMContentLoaded", () => {
            window.__events = [];
            document.body.addEventListener("agentflow:event", (e) => {
                window.__events.push(Date.now() + " " + JSON.stringify(e.detail).slice(0, 300));
            });
        });"""
    )


def wait_js(page, script: str, timeout: float, what: str, arg=None):
    """page.wait_for_function, failing with what the page saw (its last websocket events)."""
    try:
        return page.wait_for_function(script, arg=arg, timeout=timeout)
    except PlaywrightTimeout:
        events = page.evaluate("window.__events || []")
        raise AssertionError(
            f"timed out waiting for {what}; last events:\n" + "\n".join(events[-25:])
        ) from None


def fresh(gateway: Gateway) -> Gateway:
    return Gateway.objects.get(pk=gateway.pk)


def run_batch(batch, gateway: Gateway):
    return off_loop(batch, fresh(gateway))


def open_live(page, url: str) -> None:
    page.goto(url)
    expect(page.locator("#live-status .label")).to_have_text("Live", timeout=10_000)


def signed_in(page, base_url: str) -> None:
    login(page, base_url, "operator", "operator-pass")
    expect(page.locator("#live-status .label")).to_have_text("Live", timeout=10_000)


def send_from_outside(openclaw, session_key: str, text: str) -> float:
    """chat.send straight to the gateway, as another operator would; returns when it was sent (ms)."""
    client = SyncGatewayClient(openclaw.url, openclaw.token, name="outside")
    try:
        client.connect()
        sent_at = time.time() * 1000
        client.chat_send(session_key, text)
        return sent_at
    finally:
        client.close()


def settled_session(openclaw, session_key: str, timeout: float = 60) -> None:
    """Make sure the gateway knows ``session_key`` and has no run in flight on it.

    A session the gateway has never seen takes it 2-4 s to announce (its first sessions.changed
    comes that long after chat.send, measured on the pinned gateway); a known one, ~0.15 s."""
    client = SyncGatewayClient(openclaw.url, openclaw.token, name="warm-up")
    try:
        client.connect()

        def replies() -> int:
            messages = client.chat_history(session_key, limit=1000).get("messages") or []
            return sum(1 for m in messages if m.get("role") == "assistant")

        before = replies()
        client.chat_send(session_key, "warming up")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = next((r for r in client.sessions_list() if r.get("key") == session_key), None)
            idle = row is not None and not row.get("hasActiveRun") and not row.get("activeRunIds")
            if idle and replies() > before:
                return
            time.sleep(0.5)
        raise AssertionError(f"{session_key} still has a run in flight after {timeout} s")
    finally:
        client.close()


def agent_node(page, gateway: Gateway, agent_id: str):
    return page.locator(f"#gateway-{gateway.pk} li[data-agent-id={agent_id}]")


def test_the_demo_agents_appear_in_the_org_chart_without_a_reload(
    page, live_server_url, gateway_listener, gateway_row, operator
):
    signed_in(page, live_server_url)
    section = page.locator(f"#gateway-{gateway_row.pk}")
    expect(section).to_contain_text("No agents seen yet.")
    expect(section.locator(".health .status .label")).to_have_text("Connected")  # set by the listener

    # BATCH-002 (config + roster) pushes config.changed; the page re-fetches the section.
    run_batch(batches.poll_config, gateway_row)
    for agent_id in DEMO_AGENTS:
        expect(agent_node(page, gateway_row, agent_id)).to_be_visible(timeout=10_000)
    expect(agent_node(page, gateway_row, "researcher")).to_contain_text("Researcher")
    expect(agent_node(page, gateway_row, "writer")).to_contain_text("Writer")
    expect(section.locator(".counts")).to_contain_text("3 agents")
    # BATCH-005 pushes gateway.status; the health card is re-fetched with its latency.
    run_batch(batches.check_health, gateway_row)
    expect(section.locator(".health .metric")).to_contain_text("ms", timeout=10_000)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1  # never reloaded
    assert gateway_row.token not in page.content()


def test_a_message_sent_from_the_chat_panel_streams_its_reply(
    page, live_server_url, gateway_listener, gateway_row, operator, live_openclaw
):
    key = "agent:researcher:main"
    # A session the gateway knows, so the run starts within a few seconds of the send (the gateway
    # takes 2-4 s to start the first run of a brand-new session).
    off_loop(settled_session, live_openclaw, key)
    run_batch(batches.poll_config, gateway_row)
    signed_in(page, live_server_url)
    word = f"zebra{uuid.uuid4().hex[:6]}"
    reply = f"You said: [[slow]] hello from the browser {word}"
    open_live(page, f"{live_server_url}/gateways/{gateway_row.pk}/sessions/{key}/")
    page.fill("#message", f"[[slow]] hello from the browser {word} one two three")
    page.click("#composer button[type=submit]")
    expect(page.locator("#composer textarea")).to_have_value("", timeout=10_000)  # sent: a fresh composer
    expect(page.locator("#composer .error")).to_have_count(0)

    # The reply streams into #stream while the run is in flight (deltas pushed by the listener).
    wait_js(
        page,
        """() => {
            const stream = document.getElementById("stream");
            return !stream.hidden && stream.textContent.includes("[stub:stub-model]");
        }""",
        30_000,
        "the streamed reply",
    )
    # The run's lifecycle events pulse the session head.
    wait_js(page, "() => document.getElementById('session-head').dataset.pulsedAt", 10_000, "a pulse")
    # After the final event the streamed reply stays up (no longer marked as streaming) until
    # the stored messages arrive: the reply never disappears from the page in between.
    wait_js(page, "() => document.getElementById('stream').dataset.done === 'final'", 60_000, "the final")
    expect(page.locator("#stream")).to_be_visible()
    expect(page.locator("#stream .live")).to_be_hidden()
    expect(page.locator("#stream-text")).to_contain_text(reply)

    # Stored history comes from BATCH-003 (chat polling of open panels); its chat.messages push
    # makes the page re-fetch the log. The page registered the panel when it opened.
    def reply_stored():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            gateway = fresh(gateway_row)
            batches.poll_chats(gateway)
            if ChatHistory.objects.filter(gateway=gateway, session_key=key, text__contains=reply).exists():
                return True
            time.sleep(0.5)
        return False

    assert off_loop(reply_stored), "BATCH-003 never stored the reply"
    log = page.locator("#chat-log")
    expect(log.locator("article.role-assistant").filter(has_text=reply)).to_have_count(1)
    expect(log.locator("article.role-user").filter(has_text=word)).to_have_count(1)
    expect(page.locator("#chat-empty")).to_have_count(0)
    # Now that the log has it, the streamed copy goes.
    expect(page.locator("#stream")).to_be_hidden(timeout=5_000)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1


def test_a_message_from_outside_pulses_the_agent_within_two_seconds(
    page, live_server_url, gateway_listener, gateway_row, operator, live_openclaw
):
    off_loop(settled_session, live_openclaw, "agent:writer:main")
    run_batch(batches.poll_config, gateway_row)
    run_batch(batches.check_health, gateway_row)
    signed_in(page, live_server_url)
    writer = agent_node(page, gateway_row, "writer")
    expect(writer).to_be_visible()
    assert writer.get_attribute("data-pulsed-at") is None

    sent_at = off_loop(send_from_outside, live_openclaw, "agent:writer:main", "a ping from outside")
    # The first pulse as the page has it (its node may since have been re-fetched: live/core.js
    # carries the pulse over); returned by the check itself, so a later pulse cannot mask it.
    pulsed = wait_js(
        page,
        """([selector, since]) => {
            const el = document.querySelector(selector);
            const at = Number((el && el.dataset.pulsedAt) || 0);
            return at >= since && at;
        }""",
        5_000,
        "the writer's pulse",
        arg=[f"#gateway-{gateway_row.pk} li[data-agent-id=writer]", sent_at],
    ).json_value()
    events = "\n".join(page.evaluate("window.__events"))
    assert 0 <= pulsed - sent_at <= 2000, (
        f"pulsed {pulsed - sent_at:.0f} ms after the send at {sent_at}:\n{events}"
    )
    # Other agents did not pulse.
    assert agent_node(page, gateway_row, "researcher").get_attribute("data-pulsed-at") is None

    # The session row appears under the writer (a structural change: the section is re-fetched).
    expect(writer.locator("li[data-session-key='agent:writer:main']")).to_be_visible(timeout=10_000)
    run_batch(batches.poll_sessions, gateway_row)
    page.wait_for_timeout(1000)  # let the coalesced re-fetch land before the picture
    path = screenshot(page, "overview-live")
    assert path.stat().st_size > 10_000


def test_a_stopped_gateway_turns_disconnected_and_back_without_a_reload(
    page, live_server_url, gateway_listener, gateway_row, operator, live_openclaw
):
    signed_in(page, live_server_url)
    badge = page.locator(f"#health-{gateway_row.pk} .status .label")
    expect(badge).to_have_text("Connected")
    try:
        stopped_at = time.monotonic()
        live_openclaw.stop()
        expect(badge).to_have_text("Disconnected", timeout=15_000)
        took = time.monotonic() - stopped_at
        assert took <= 20, f"{took:.1f} s"
        expect(page.locator(f"#health-{gateway_row.pk} .reason")).not_to_be_empty()
    finally:
        if not live_openclaw.is_running():
            live_openclaw.start(timeout=120)
    # The listener reconnects with backoff (capped at 30 s) and pushes the new status.
    expect(badge).to_have_text("Connected", timeout=60_000)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1


def test_the_page_says_reconnecting_while_daphne_is_down_and_live_again_after(
    page, daphne, live_server_url, gateway_row, operator
):
    run_batch(batches.check_health, gateway_row)
    signed_in(page, live_server_url)
    status = page.locator("#live-status .label")
    daphne.kill()
    expect(status).to_have_text("Reconnecting…", timeout=10_000)
    assert page.locator("#live-status").get_attribute("data-state") == "connecting"
    daphne.start()
    # htmx's ws extension retries with full-jitter backoff (up to 2^n s for the n-th retry).
    expect(status).to_have_text("Live", timeout=45_000)
    # After the reconnect the page re-fetched its fragments: the section is still there and current.
    expect(page.locator(f"#health-{gateway_row.pk} .status .label")).to_have_text("Connected")
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1


def test_an_idle_page_keeps_its_websocket(page, live_server_url, gateway_row, operator):
    page.add_init_script(
        """document.addEventListener("DOMContentLoaded", () => {
            window.__closes = [];
            document.addEventListener("htmx:wsClose", (e) => window.__closes.push(e.detail.event.code));
        });"""
    )
    signed_in(page, live_server_url)
    page.wait_for_timeout(8_000)
    assert page.evaluate("window.__closes") == []


# --- the core's declarative re-fetch and the status component, with made-up events ----------------
# No gateway runs here: the rows are made by hand and the events sent as the listener would.


def two_gateways():
    from tests.support.factories import make_agent, make_gateway, make_session

    first, second = make_gateway("first"), make_gateway("second")
    for gateway in (first, second):
        agent = make_agent(gateway, "main", name="Main")
        make_session(gateway, "agent:main:main", agent, status="offline")
    return first, second


def test_a_live_session_change_redraws_its_label_and_shape(page, live_server_url, operator):
    from fleet import live

    first, _ = two_gateways()
    signed_in(page, live_server_url)
    row = page.locator(f"#gateway-{first.pk} li[data-session-key='agent:main:main'] > .status")
    expect(row).to_have_attribute("data-status", "offline")
    expect(row).to_have_class(re.compile(r"\bshape-ring\b"))
    change = {
        "session_key": "agent:main:main",
        "agent_id": "main",
        "status": "active",
        "status_label": "Active (as the server words it)",  # the page shows the server's label
        "previous_status": "offline",
        "has_active_run": False,
    }
    off_loop(lambda: live.SESSIONS_CHANGED.send(gateway_id=first.pk, changes=[change]))
    expect(row.locator(".label")).to_have_text("Active (as the server words it)")
    expect(row).to_have_attribute("data-status", "active")
    expect(row).to_have_class(re.compile(r"\bshape-circle\b"))
    expect(row).not_to_have_class(re.compile(r"\bshape-ring\b"))


def test_a_declared_fragment_is_refetched_for_its_own_gateway_only(page, live_server_url, operator):
    from fleet import live
    from fleet.models import Agent

    first, second = two_gateways()
    signed_in(page, live_server_url)
    Agent.objects.filter(agent_id="main").update(name="Renamed")
    # config.changed is declared on the gateway's section (data-refetch-on): no JavaScript names it.
    off_loop(lambda: live.CONFIG_CHANGED.send(gateway_id=first.pk, history_id=1))
    expect(agent_node(page, first, "main")).to_contain_text("Renamed", timeout=5_000)
    page.wait_for_timeout(1_000)  # well past the 300 ms coalescing window
    expect(agent_node(page, second, "main")).not_to_contain_text("Renamed")
    # gateway.status re-fetches the health card (its reason and latency), and sets the badge at once.
    Gateway.objects.filter(pk=second.pk).update(status="auth_failed", status_reason="The token was rejected")
    off_loop(
        lambda: live.GATEWAY_STATUS.send(
            gateway_id=second.pk, status="auth_failed", label="Authentication failed"
        )
    )
    badge = page.locator(f"#health-{second.pk} .status")
    expect(badge.locator(".label")).to_have_text("Authentication failed")
    expect(badge).to_have_class(re.compile(r"\bshape-square\b"))
    expect(page.locator(f"#health-{second.pk} .reason")).to_have_text("The token was rejected")
    expect(page.locator(f"#health-{first.pk} .status .label")).to_have_text("Not checked yet")
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1


def test_a_raised_alert_offers_a_reload_in_the_banner_slot(page, live_server_url, operator):
    from scheduler.live import ALERT_RAISED

    signed_in(page, live_server_url)
    off_loop(ALERT_RAISED.send)
    banner = page.locator("#banners > #alert-live")
    expect(banner).to_be_visible()
    expect(banner).to_have_attribute("role", "alert")
    expect(banner).to_contain_text("A new alert was raised.")
    assert banner.locator("a").get_attribute("href") == page.url
    off_loop(ALERT_RAISED.send)  # a second alert: still one notice
    page.wait_for_timeout(500)
    expect(page.locator("#alert-live")).to_have_count(1)
