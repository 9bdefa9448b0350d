"""The trace waterfall and the Flows page in a browser: light and dark, 390 px and 1400 px (nothing
scrolls sideways or is cut off; screenshots in test-artifacts/); on a phone each span's bar runs
under its name, on a desktop beside it; the rows and their links are reached with the keyboard."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.support.browser import login, page_checked

pytestmark = [pytest.mark.browser]

SOURCE = """name: coding_assistant
description: Fix a bug from a change request, test it, review it.
steps:
  - id: inspect
    type: workspace_inspector
    with: {root: examples/multi_agent/coding_assistant/app}
  - id: draft
    type: agent
    with: {prompt: "fix it"}
  - id: test
    type: set
    with: {values: {b: 2}}
  - id: review
    type: agent
    with: {prompt: "review it"}
"""


def make_traces() -> dict[str, int]:
    """A finished coding-assistant flow run (a failed test step, two agent steps with tokens and
    sessions), one still running, and a plain agent run that needed a second attempt."""
    from django.utils import timezone

    from flows.models import Flow
    from tests.support.factories import (
        make_attempt,
        make_flow_run,
        make_gateway,
        make_retried_agent_run,
        make_run,
        make_span,
    )  # fmt: skip

    gateway = make_gateway("kb-gw")
    Flow.objects.create(
        name="coding_assistant", description="Fix a bug from a change request.", source=SOURCE
    )
    Flow.objects.create(
        name="support_bot", description="Answer from the FAQ, hand off when unsure.", source=SOURCE
    )
    t0 = timezone.now() - timedelta(minutes=3)
    ns0 = int(t0.timestamp() * 1e9)
    run = make_run(
        "flow",
        job_name="coding_assistant",
        status="succeeded",
        queued_at=t0,
        started_at=t0,
        finished_at=t0 + timedelta(seconds=14),
    )
    fr = make_flow_run(
        run,
        "coding_assistant",
        source=SOURCE,
        status="succeeded",
        position="end",
        steps_done=4,
        started_at=t0,
        started_ns=ns0,
        finished_at=t0 + timedelta(seconds=14),
    )

    def agent_child(step, start, end, tokens_in, tokens_out, cost, key):
        child_run = make_run(
            "agent.prompt",
            status="succeeded",
            gateway=str(gateway.pk),
            agent="main",
            params={"gateway": str(gateway.pk), "agent": "main"},
        )
        make_attempt(child_run, 1, status="succeeded", session_key=key)
        make_span(
            fr,
            "agent main",
            start,
            end,
            parent_span_id=step.span_id,
            kind="agent",
            child_run=child_run,
            attributes={
                "gen_ai.request.model": "stub/stub-model",
                "gen_ai.usage.input_tokens": tokens_in,
                "gen_ai.usage.output_tokens": tokens_out,
                "agentflow.cost": cost,
                "agentflow.session_key": key,
            },
        )

    make_span(fr, "flow coding_assistant", 0, 14_000, span_id=fr.root_span_id, parent_span_id="", kind="flow")
    make_span(fr, "step inspect", 0, 180)
    draft = make_span(fr, "step draft", 180, 6_200)
    agent_child(draft, 220, 6_150, 3_412, 611, 0.0183, "agent:main:flow-draft-7f3a")
    make_span(
        fr,
        "step test",
        6_200,
        9_100,
        status="error",
        status_message="pytest exited 1: tests/test_calc.py::test_divide_by_zero FAILED (ZeroDivisionError)",
        attributes={"flow.step.type": "test_executor", "flow.step.attempts": 2},
    )
    review = make_span(
        fr,
        "step review",
        9_100,
        13_900,
        events=[{"name": "audit", "time_ns": ns0 + 13_800_000_000, "attributes": {"action": "flow.audit"}}],
    )
    agent_child(review, 9_150, 13_850, 2_120, 95, 0.0071, "agent:main:flow-review-7f3a")

    running = make_run("flow", job_name="support_bot", status="running", queued_at=t0, started_at=t0)
    make_flow_run(
        running,
        "support_bot",
        status="waiting",
        position="answer",
        step_attempt=2,
        started_at=timezone.now() - timedelta(seconds=40),
    )

    plain = make_retried_agent_run(
        gateway="kb-gw",
        t0=t0,
        first=(2, 10),
        second=(12, 21),
        error="no reply within 8 s; the gateway's run was aborted",
        usage={"input_tokens": 5_230, "output_tokens": 1_040, "cost": 0.0412},
        job_name="nightly-report",
    )
    return {"flow": run.pk, "plain": plain.pk}


@pytest.mark.parametrize("width", [390, 1400])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_trace_and_flows_pages_fit_a_phone_and_a_desktop_in_light_and_dark(
    chromium, live_server_url, operator, scheme, width
):
    ids = make_traces()
    context = chromium.new_context(
        viewport={"width": width, "height": 844 if width < 800 else 900}, color_scheme=scheme
    )
    page = context.new_page()
    try:
        login(page, live_server_url, "operator", "operator-pass")
        page.goto(f"{live_server_url}/runs/{ids['flow']}/trace/")
        rows = page.locator("#waterfall tbody tr")
        assert rows.count() == 7
        name = rows.nth(3).locator(".wf-name").bounding_box()
        bar = rows.nth(3).locator("rect.wf-bar").bounding_box()
        track = rows.nth(3).locator("svg.wf-track").bounding_box()
        assert bar["width"] > 0.35 * track["width"]  # the draft's agent: 5.9 s of 14 s
        if width < 800:  # a phone: the bar runs under the name, the whole card wide
            assert bar["y"] > name["y"] + name["height"] - 1
            assert track["width"] > 0.8 * width - 64
            assert page.locator(".wf-axis-phone").is_visible()
        else:  # a desktop: beside it, on the head's axis
            assert track["x"] > name["x"] + name["width"] - 1
            assert abs(bar["y"] - name["y"]) < name["height"]
            assert not page.locator(".wf-axis-phone").is_visible()
        page_checked(page, "trace-flow", width, scheme)
        page.goto(f"{live_server_url}/runs/{ids['plain']}/trace/")
        assert page.locator("#waterfall tbody tr").count() == 5
        page_checked(page, "trace-run", width, scheme)
        page.goto(f"{live_server_url}/flows/")
        assert page.locator("#flows-list tbody tr").count() == 2
        assert page.locator("#flow-runs tbody tr").count() == 2
        page_checked(page, "flows", width, scheme)
        page.goto(f"{live_server_url}/flows/coding_assistant/")
        page_checked(page, "flow", width, scheme)
        page.goto(f"{live_server_url}/flows/run/?flow=examples/flows/policies.yaml")
        page.fill("#flow-context", "{not json")
        page.click("#flow-run-form button[type=submit]")
        assert "The context is not JSON" in page.locator("#form-errors").inner_text()
        assert page.input_value("#flow-ref") == "examples/flows/policies.yaml"
        page_checked(page, "flow-run", width, scheme)
    finally:
        context.close()


def test_the_waterfalls_rows_and_links_are_reached_from_the_keyboard(page, live_server_url, operator):
    ids = make_traces()
    login(page, live_server_url, "operator", "operator-pass")
    page.goto(f"{live_server_url}/runs/{ids['flow']}/trace/")
    page.locator("#waterfall tbody tr").first.focus()
    stops = []
    for _ in range(8):
        stops.append(
            page.evaluate(
                """() => { const el = document.activeElement;
                return [el.tagName, el.id || el.textContent.trim(), getComputedStyle(el).outlineStyle]; }"""
            )
        )
        page.keyboard.press("Tab")
    tags = [tag for tag, _, _ in stops]
    texts = [text for _, text, _ in stops]
    # flow, inspect, draft, its agent; the agent's run, trace and session links; then the test step
    assert tags == ["TR", "TR", "TR", "TR", "A", "A", "A", "TR"], stops
    assert texts[4].startswith("run #") and texts[5:7] == ["its trace", "session"], stops
    assert all(style != "none" for _, _, style in stops), stops  # a visible focus ring on rows and links
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")  # back to the session link
    page.keyboard.press("Enter")
    page.wait_for_url("**/gateways/*/sessions/agent:main:flow-draft-7f3a/")
