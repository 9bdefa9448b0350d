"""The Alerts page in a browser: light and dark, 390 px and 1400 px (nothing scrolls sideways,
screenshots in test-artifacts/), filtered from the keyboard; an alert raised by the rules while a
page is open shows the live notice."""

from __future__ import annotations

from datetime import timedelta

import pytest
from playwright.sync_api import expect

from tests.support.browser import assert_fits, login, off_loop, screenshot

pytestmark = [pytest.mark.browser]


def make_alerts() -> None:
    from django.utils import timezone

    from scheduler import alert_rules
    from scheduler.models import Alert

    alert_rules.ensure_rules()
    now = timezone.now()
    rows = [
        ("critical", "provider-blocked", "gw-1:main:anthropic",
         "provider anthropic of agent main (gateway gw-1) is blocked: 401 the provider session expired; "
         "re-authenticate, then unblock", 25, None),
        ("error", "error-rate", "", "error rate 4.1 % over the last 5 min: 24 of 590 finished runs failed or "
         "were lost (threshold 1 %)", 8, None),
        ("warning", "gateway-latency", "gateway-with-a-rather-long-name-for-phones",
         "gateway gateway-with-a-rather-long-name-for-phones: call latency p95 8.6 s over the last 5 min "
         "(29 health checks; threshold 5 s)", 3, None),
        ("warning", "queue-length", "normal", "1,746 runs queued at priority normal (threshold 1,000)", 90,
         now - timedelta(minutes=30)),
        ("error", "", "", "History cleanup failed: OperationalError: database is locked", 200,
         now - timedelta(hours=2)),
    ]  # fmt: skip
    for level, rule, subject, message, minutes, resolved in rows:
        Alert.objects.create(
            level=level, rule=rule, subject=subject, message=message,
            source=(f"{rule}:{subject}" if rule else "BATCH-004")[:50],
            created_at=now - timedelta(minutes=minutes), last_seen=now - timedelta(seconds=5),
            count=minutes * 6, resolved_at=resolved, reopened=1 if rule == "error-rate" else 0,
        )  # fmt: skip


@pytest.mark.parametrize("width", [390, 1400])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_alerts_page_fits_a_phone_and_a_desktop_in_light_and_dark(
    chromium, live_server_url, operator, scheme, width
):
    make_alerts()
    context = chromium.new_context(
        viewport={"width": width, "height": 844 if width < 800 else 900}, color_scheme=scheme
    )
    page = context.new_page()
    try:
        login(page, live_server_url, "operator", "operator-pass")
        page.goto(f"{live_server_url}/alerts/")
        page.wait_for_load_state("networkidle")
        assert page.locator("#alerts-open tbody tr[id^=alert-]").count() == 3
        assert page.locator("#alerts-history tbody tr[id^=alert-]").count() == 2
        assert page.locator("#alerts-open .status").first.inner_text().strip() == "Critical"
        assert_fits(page, "alerts", width, scheme)
        screenshot(page, f"alerts-{width}-{scheme}")
        page.goto(f"{live_server_url}/")
        page.wait_for_load_state("networkidle")
        banner = page.locator("#banners p.alert").first
        assert "Critical:" in banner.inner_text() and "first seen 25 min ago" in banner.inner_text()
        assert_fits(page, "overview with alerts", width, scheme)
        screenshot(page, f"alerts-banners-{width}-{scheme}")
    finally:
        context.close()


def test_the_alerts_are_filtered_from_the_keyboard(page, live_server_url, operator):
    make_alerts()
    login(page, live_server_url, "operator", "operator-pass")
    page.goto(f"{live_server_url}/alerts/")
    page.focus("#alerts-level")
    page.keyboard.press("Tab")  # to the rule
    assert page.evaluate("document.activeElement.id") == "alerts-rule"
    page.focus("#alerts-level")
    page.select_option("#alerts-level", "warning")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")  # the Filter button
    assert page.evaluate("document.activeElement.textContent.trim()") == "Filter"
    page.keyboard.press("Enter")
    page.wait_for_url("**/alerts/?level=warning**")
    rows = page.locator("#alerts-open tbody tr[id^=alert-]")
    assert rows.count() == 1 and "call latency p95" in rows.first.inner_text()
    assert page.locator("#alerts-history tbody tr[id^=alert-]").count() == 1


def test_an_alert_raised_by_the_rules_shows_the_live_notice_on_an_open_page(page, live_server_url, operator):
    from scheduler import alert_rules
    from scheduler.models import ProviderBlock

    login(page, live_server_url, "operator", "operator-pass")
    page.goto(f"{live_server_url}/runs/")
    expect(page.locator("#live-status .label")).to_have_text("Live", timeout=10_000)
    ProviderBlock.objects.create(gateway="1", agent="main", provider="anthropic", reason="401 expired")
    off_loop(alert_rules.evaluate)  # commits: the notice goes out on commit
    page.wait_for_selector("#alert-live", timeout=5000)
    assert "A new alert was raised." in page.inner_text("#banners")
    ProviderBlock.objects.update(ended_at=ProviderBlock.objects.first().started_at)
    off_loop(alert_rules.evaluate)
    page.wait_for_selector("#alert-resolved-live", timeout=5000)
    screenshot(page, "alerts-live-notices")
