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
    assert section.locator(".badge").inner_text().strip() == "Connected"
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
