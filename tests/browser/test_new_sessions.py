"""A session created straight on the gateway appears on an open overview (the newcomer's first hour:
the page stayed at "0 sessions / Offline" until a reload). Real gateway, listener, Daphne, Chromium."""

from __future__ import annotations

import time
import uuid

import pytest
from playwright.sync_api import expect

from fleet import batches
from tests.browser.test_live import (  # noqa: F401 (recorded_events: autouse, records the events)
    agent_node,
    recorded_events,
    run_batch,
    send_from_outside,
    signed_in,
    wait_js,
)

pytestmark = [
    pytest.mark.usefixtures("redis_prefix"),
    pytest.mark.browser,
    pytest.mark.gateway,
    pytest.mark.redis,
]


def test_a_new_session_of_an_agent_with_none_appears_within_two_seconds_with_the_counts(
    page, live_server_url, gateway_listener, gateway_row, operator, live_openclaw
):
    run_batch(batches.poll_config, gateway_row)  # the roster: three agents, no session stored yet
    signed_in(page, live_server_url)
    writer = agent_node(page, gateway_row, "writer")
    expect(writer.locator("summary")).to_contain_text("0 sessions")
    counts = page.locator(f"#counts-{gateway_row.pk}")
    counts_before = counts.inner_text()
    assert "0 active" in counts_before

    key = f"agent:writer:newcomer-{uuid.uuid4().hex[:8]}"
    sent_at = off_loop_send(live_openclaw, key)
    # When the page first heard of the session (the gateway announces a new one 1-4 s after the send).
    announced = wait_js(
        page,
        """(key) => {
            const hit = (window.__events || [])
                .find((e) => e.includes('"sessions.changed"') && e.includes(key));
            return hit && Number(hit.split(" ")[0]);
        }""",
        30_000,
        "the gateway's sessions.changed for the new session",
        arg=key,
    ).json_value()
    row = writer.locator(f"li[data-session-key='{key}']")
    expect(row).to_be_visible(timeout=10_000)
    shown_at = time.time() * 1000
    events = "\n".join(page.evaluate("window.__events"))
    assert shown_at - announced <= 2000, (
        f"shown {shown_at - announced:.0f} ms after the announcement "
        f"({announced - sent_at:.0f} ms after the send):\n{events}"
    )
    # The agent's summary and the gateway's counts line follow, without a reload.
    expect(writer.locator("summary")).to_contain_text("1 session", timeout=2_000)
    expect(writer.locator("summary")).not_to_contain_text("Offline")
    expect(counts).not_to_have_text(counts_before, timeout=2_000)
    expect(counts).to_contain_text("1 active")
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1


def off_loop_send(openclaw, key: str) -> float:
    from tests.support.browser import off_loop

    return off_loop(send_from_outside, openclaw, key, "hello from a newcomer")


def test_the_session_page_follows_runs_abort_state_and_tokens_live(page, live_server_url, operator):
    """Made-up events as the listener sends them; the gateway row points at a closed loopback port."""
    from fleet import live
    from fleet.models import AgentSession, Gateway
    from tests.support.browser import off_loop
    from tests.support.factories import make_agent, make_chat, make_gateway, make_session

    gateway = make_gateway("alpha", status=Gateway.Status.CONNECTED)
    agent = make_agent(gateway, "main", name="Main")
    key = "agent:main:main"
    make_chat(gateway, key, "hi")
    make_session(gateway, key, agent, title="Launch plan", total_tokens=10)
    signed_in(page, live_server_url)
    page.goto(f"{live_server_url}/gateways/{gateway.pk}/sessions/{key}/")
    expect(page.locator("#live-status .label")).to_have_text("Live", timeout=10_000)
    expect(page.locator("h1")).to_have_text("Launch plan")
    expect(page.locator(".crumbs")).to_have_text("Fleet › alpha › Main")
    abort = page.locator("#abort")
    expect(abort).to_be_disabled()
    assert abort.get_attribute("title") == "no run in flight"

    def run(phase: str) -> None:
        live.AGENT_RUN.send(gateway_id=gateway.pk, agent_id="main", session_key=key, run_id="r1", phase=phase)

    off_loop(run, "start")
    expect(abort).to_be_enabled(timeout=5_000)
    page.on("dialog", lambda d: d.accept())
    abort.click()
    result = page.locator("#abort-result")
    expect(result).not_to_be_empty(timeout=10_000)  # the gateway is unreachable: it says why
    expect(result).to_be_empty(timeout=8_000)  # and the answer clears on its own
    off_loop(run, "end")
    expect(abort).to_be_disabled(timeout=5_000)

    AgentSession.objects.filter(session_key=key).update(total_tokens=4321)
    change = {"session_key": key, "agent_id": "main", "status": "idle", "status_label": "Idle",
              "previous_status": "active", "has_active_run": False}  # fmt: skip
    off_loop(lambda: live.SESSIONS_CHANGED.send(gateway_id=gateway.pk, changes=[change]))
    expect(page.locator("#session-meta")).to_contain_text("4321 tokens", timeout=5_000)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
