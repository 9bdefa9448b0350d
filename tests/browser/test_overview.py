"""The fleet overview in a real browser, against the real gateway."""

from __future__ import annotations

import pytest

from fleet import batches
from tests.support.browser import assert_fits, login, off_loop, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.gateway]


def test_an_operator_logs_in_and_sees_the_demo_fleet(page, live_server_url, gateway_row, operator):
    off_loop(batches.check_health, gateway_row)
    off_loop(batches.poll_config, gateway_row)

    page.goto(f"{live_server_url}/")
    assert "/accounts/login/" in page.url  # login required
    login(page, live_server_url, "operator", "operator-pass")

    section = page.locator(f"#gateway-{gateway_row.pk}")
    assert section.locator(".health .status").inner_text().strip() == "Connected"
    agents = section.locator("li.agent > details > summary")
    names = agents.all_inner_texts()
    assert len(names) == 3, names
    assert any("Researcher" in n for n in names) and any("Writer" in n for n in names)
    body = page.content()
    assert gateway_row.token not in body
    screenshot(page, "overview")


def test_a_wrong_password_shows_an_error_and_no_dashboard(page, live_server_url, operator):
    page.goto(f"{live_server_url}/accounts/login/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "wrong")
    page.click("button[type=submit]")
    assert page.locator("[role=alert]").is_visible()
    assert "/accounts/login/" in page.url


@pytest.mark.parametrize("width", [390, 1400])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_pages_fit_a_phone_and_a_desktop_in_light_and_dark(
    chromium, live_server_url, operator, scheme, width
):
    """390 px (a phone) and 1400 px (a desktop): nothing scrolls sideways, every status has its label
    and shape; screenshots of each page at both widths in both colour schemes land in test-artifacts/."""
    from datetime import timedelta

    from django.utils import timezone

    from fleet import configs
    from fleet.models import ChatHistory
    from tests.support.factories import (
        make_agent,
        make_batch_run,
        make_gateway,
        make_health_sample,
        make_session,
    )

    gateway = make_gateway(
        "phone-gw",
        status="degraded",
        status_reason="config.get took 4.2 s",
        latency_ms=42,
        version="2026.9.6",
    )
    main = make_agent(gateway, "main", name="Main", is_default=True, emoji="🦀", model="stub/stub-model")
    helper = make_agent(gateway, "helper", name="Research Helper", parent=main, model="stub/stub-model-large")
    make_session(
        gateway, "agent:main:main", main, status="active", has_active_run=True, title="Main chat",
        minutes_ago=0.2, total_tokens=12_300, context_tokens=200_000,
        last_message_preview="Drafting the weekly report for the team now",
    )  # fmt: skip
    make_session(
        gateway, "agent:helper:main", helper, status="idle", minutes_ago=3, total_tokens=171_000,
        context_tokens=200_000, last_message_preview="Three sources disagree about the 2019 numbers",
    )  # fmt: skip
    make_session(gateway, "agent:helper:old", helper, status="offline", minutes_ago=600)
    for i, latency in enumerate([12, 14, 11, 30, 13, None, 15, 12, 95, 14, 13, 12]):
        make_health_sample(
            gateway, connected=latency is not None, latency_ms=latency,
            checked_at=timezone.now() - timedelta(minutes=55 - i * 5),
        )  # fmt: skip
    chat = ChatHistory.objects.create(
        gateway=gateway, session_key="agent:main:main", message_id="m1", role="user",
        text="A question long enough to wrap on a narrow screen, " * 3, timestamp=timezone.now(),
    )  # fmt: skip
    ChatHistory.objects.create(
        gateway=gateway, session_key="agent:main:main", message_id="m2", role="assistant",
        text="An answer with a long unbroken token: " + "x" * 120, timestamp=timezone.now(),
    )  # fmt: skip
    make_batch_run("BATCH-001", gateway, duration_ms=12, counts={"sessions": 3})
    make_batch_run("BATCH-005", gateway, status="error", error="TimeoutError: " + "x" * 200)
    make_batch_run("BATCH-004", status="skipped")
    from scheduler.models import Attempt, Job, QueuePause, Run

    job = Job.objects.create(
        name="weekly-report", kind="noop", params={}, priority="high", tags=["reports", "weekly"]
    )
    now = timezone.now()
    for i in range(40):
        done = now - timedelta(minutes=58 - i * 1.4)
        Run.objects.create(
            job=job, job_name=job.name, kind="noop", status="succeeded", trigger="schedule",
            queued_at=done - timedelta(seconds=4 + i % 7), started_at=done - timedelta(seconds=2),
            finished_at=done,
        )  # fmt: skip
    for priority in ("urgent", "high", "normal", "normal", "low"):
        Run.objects.create(kind="noop", priority=priority, job=job, job_name=job.name)
    Run.objects.create(
        kind="noop",
        priority="normal",
        status="running",
        started_at=now - timedelta(minutes=3),
        gateway=str(gateway.pk),
        agent="main",
    )
    failed = Run.objects.create(
        job=job, job_name=job.name, kind="noop", status="failed", gateway=str(gateway.pk), agent="main",
        error_class="server_error", error="HTTP 500 from the provider after 3 attempts " + "y" * 80,
        attempts=3, queued_at=now - timedelta(minutes=10), started_at=now - timedelta(minutes=9),
        finished_at=now - timedelta(minutes=8),
        trigger="user", triggered_by="operator",
        usage={"input_tokens": 1200, "output_tokens": 300}, result="Partial answer " * 40,
    )  # fmt: skip
    for n in (1, 2, 3):
        Attempt.objects.create(
            run=failed, number=n, status="failed", error_class="server_error",
            error="HTTP 500 from the provider", session_key=f"agent:main:run-{n}", worker="worker-1:4242",
            started_at=now - timedelta(minutes=9 - n * 0.3),
            finished_at=now - timedelta(minutes=8.9 - n * 0.3),
        )  # fmt: skip
    Run.objects.create(
        kind="noop",
        status="blocked",
        gateway=str(gateway.pk),
        agent="main",
        provider="anthropic",
        error="401: the provider session expired",
    )
    QueuePause.objects.create(scope="priority", value="low", who="operator", reason="maintenance window")
    configs.record_config(
        gateway, {"hash": "h1", "sourceConfig": {"agents": {"defaults": {"model": "stub"}}}}
    )
    configs.record_config(
        gateway, {"hash": "h2", "sourceConfig": {"agents": {"defaults": {"model": "stub-2"}}}}
    )

    context = chromium.new_context(
        viewport={"width": width, "height": 844 if width < 800 else 900}, color_scheme=scheme
    )
    page = context.new_page()
    try:
        page.goto(f"{live_server_url}/accounts/login/")
        assert_fits(page, "login", width, scheme)
        screenshot(page, f"login-{width}-{scheme}")
        login(page, live_server_url, "operator", "operator-pass")
        pages = {
            "overview": "/",
            "session": f"/gateways/{gateway.pk}/sessions/agent:main:main/",
            "message": f"/gateways/{gateway.pk}/messages/{chat.pk}/",
            "batches": "/batches/",
            "config": f"/gateways/{gateway.pk}/config/",
            "queue": "/queue/",
            "runs": "/runs/",
            "run": f"/runs/{failed.pk}/",
            "jobs": "/jobs/",
            "job": f"/jobs/{job.pk}/",
        }
        for name, path in pages.items():
            page.goto(live_server_url + path)
            page.wait_for_load_state("networkidle")
            assert_fits(page, name, width, scheme)
            statuses = page.locator(".status")
            assert statuses.count() > 0 or name in ("config", "message", "jobs"), name  # those show no status
            for i in range(statuses.count()):
                badge = statuses.nth(i)
                assert badge.locator(".label").inner_text().strip(), f"{name}: a status without a label"
                assert "shape-" in (badge.get_attribute("class") or ""), f"{name}: a status without a shape"
            screenshot(page, f"{name}-{width}-{scheme}")
    finally:
        context.close()


def test_the_navigation_works_from_the_keyboard_and_the_chosen_theme_sticks(
    chromium, live_server_url, operator
):
    """Tab from the top: the skip link first, then every navigation link with a visible focus ring,
    the "soon" pages skipped; the theme switch works from the keyboard and survives a reload; the
    sparkline shows a point's tooltip on hover; an agent always has its initials."""
    from datetime import timedelta

    from django.utils import timezone

    from tests.support.factories import make_agent, make_gateway, make_health_sample

    gateway = make_gateway("kb-gw", status="connected", latency_ms=12)
    make_agent(gateway, "main", name="Main Agent", emoji="🦀")
    for i, latency in enumerate([10, 20, 80, 15]):
        make_health_sample(gateway, latency_ms=latency, checked_at=timezone.now() - timedelta(minutes=10 - i))
    context = chromium.new_context(viewport={"width": 1400, "height": 900}, color_scheme="light")
    page = context.new_page()
    try:
        login(page, live_server_url, "operator", "operator-pass")
        page.keyboard.press("Tab")
        skip = page.evaluate(
            "[document.activeElement.textContent, document.activeElement.getBoundingClientRect().top]"
        )
        assert skip[0] == "Skip to content" and skip[1] >= 0, skip  # shown when focused
        focused = []
        for _ in range(17):
            page.keyboard.press("Tab")
            focused.append(
                page.evaluate(
                    """() => { const el = document.activeElement;
                    return [el.textContent.trim().replace(/\\s+/g, " "), el.getAttribute("aria-current"),
                            getComputedStyle(el).outlineStyle]; }"""
                )
            )
        texts = [text for text, _, _ in focused]
        assert texts[:13] == [
            "AgentFlow", "Fleet", "Queue", "Runs", "Flows", "Jobs", "Stops", "Triggers", "Batches",
            "Notifications", "Alerts", "Automation", "Config kb-gw",
        ], texts  # fmt: skip
        assert focused[1][1] == "page"  # the overview is the current page
        assert all(style != "none" for _, _, style in focused[:13]), focused  # a visible focus ring
        assert not any("Audit" in t or "soon" in t for t in texts), texts  # placeholders are not stops
        assert "Light" in texts and "Dark" in texts and any(t.startswith("Log out") for t in texts), texts

        dark = page.locator("[data-theme-choice=dark]")
        dark.focus()
        page.keyboard.press("Enter")
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        assert dark.get_attribute("aria-pressed") == "true"
        light_bg = "rgb(245, 246, 248)"
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") != light_bg
        page.reload()
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        page.locator("[data-theme-choice=system]").click()
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == light_bg

        avatar = page.locator(f"#gateway-{gateway.pk} .avatar .initials")
        assert avatar.inner_text() == "MA" and avatar.is_visible()
        point = page.locator(f"#health-{gateway.pk} .sparkline .pt").nth(2)
        tip = point.locator(".tip")
        assert tip.text_content().endswith("· 80 ms")
        assert tip.evaluate("el => getComputedStyle(el).opacity") == "0"
        point.locator(".hit").hover()
        assert tip.evaluate("el => getComputedStyle(el).opacity") == "1"
    finally:
        context.close()


def test_on_a_phone_the_navigation_is_a_menu_button(chromium, live_server_url, operator):
    context = chromium.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        login(page, live_server_url, "operator", "operator-pass")
        button = page.locator("#menu-button")
        fleet = page.locator("#nav-panel a.nav-item", has_text="Fleet")
        assert button.get_attribute("aria-expanded") == "false" and not fleet.is_visible()
        button.focus()
        page.keyboard.press("Enter")
        assert button.get_attribute("aria-expanded") == "true" and fleet.is_visible()
        assert (
            page.evaluate("document.activeElement.textContent.trim()") == "Fleet"
        )  # focus moves into the menu
        page.keyboard.press("Escape")
        assert button.get_attribute("aria-expanded") == "false" and not fleet.is_visible()
        assert page.evaluate("document.activeElement.id") == "menu-button"
    finally:
        context.close()
