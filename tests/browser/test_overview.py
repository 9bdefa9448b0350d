"""The fleet overview in a real browser, against the real gateway."""

from __future__ import annotations

import pytest

from fleet import batches
from tests.support.browser import login, off_loop, screenshot

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
    from django.utils import timezone

    from fleet import configs
    from fleet.models import ChatHistory
    from tests.support.factories import make_agent, make_batch_run, make_gateway, make_session

    gateway = make_gateway("phone-gw", status="degraded", status_reason="config.get took 4.2 s")
    main = make_agent(gateway, "main", name="Main", is_default=True)
    helper = make_agent(gateway, "helper", name="Helper", parent=main)
    make_session(gateway, "agent:main:main", main, status="active", has_active_run=True, title="Main chat")
    make_session(gateway, "agent:helper:main", helper, status="idle")
    make_session(gateway, "agent:helper:old", helper, status="offline")
    ChatHistory.objects.create(
        gateway=gateway, session_key="agent:main:main", message_id="m1", role="user",
        text="A question long enough to wrap on a narrow screen, " * 3, timestamp=timezone.now(),
    )  # fmt: skip
    make_batch_run("BATCH-001", gateway, duration_ms=12, counts={"sessions": 3})
    make_batch_run("BATCH-005", gateway, status="error", error="TimeoutError: " + "x" * 200)
    make_batch_run("BATCH-004", status="skipped")
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
        login(page, live_server_url, "operator", "operator-pass")
        pages = {
            "overview": "/",
            "session": f"/gateways/{gateway.pk}/sessions/agent:main:main/",
            "batches": "/batches/",
            "config": f"/gateways/{gateway.pk}/config/",
        }
        for name, path in pages.items():
            page.goto(live_server_url + path)
            page.wait_for_load_state("networkidle")
            scroll_width = page.evaluate("document.documentElement.scrollWidth")
            assert scroll_width <= width, (
                f"{name} scrolls sideways at {width} px in {scheme}: {scroll_width} px"
            )
            statuses = page.locator(".status")
            assert statuses.count() > 0 or name == "config", name  # config history shows no status
            for i in range(statuses.count()):
                badge = statuses.nth(i)
                assert badge.locator(".label").inner_text().strip(), f"{name}: a status without a label"
                assert "shape-" in (badge.get_attribute("class") or ""), f"{name}: a status without a shape"
            screenshot(page, f"{name}-{width}-{scheme}")
    finally:
        context.close()
