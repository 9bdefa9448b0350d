"""The Notifications page in a browser, light and dark at 390 and 1400 px: it fits, and pressing
"Send test" sends to a real local receiver (from the Daphne process) and shows the result."""

from __future__ import annotations

import pytest

from tests.support.browser import assert_fits, login, screenshot
from tests.support.receivers import make_channel, receiver, whsec

pytestmark = [pytest.mark.browser]

SLACK_PATH = "/services/T0BROWSER/B0BROWSER/browser-secret-token"


@pytest.mark.parametrize("width", [390, 1400])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_notifications_page_fits_and_send_test_shows_the_result(
    chromium, live_server_url, operator, scheme, width
):
    from scheduler.models import Delivery, Notification

    with receiver(200) as slack:
        channel = make_channel("ops slack", "slack", secret=slack.url + SLACK_PATH, events=["stop.engaged"])
        hook = make_channel(
            "audit webhook",
            "webhook",
            url="http://127.0.0.1:9/agentflow/hooks",
            secret=whsec(),
            min_level="error",
        )
        make_channel(
            "on-call mail", "email", recipients="oncall@example.com, lead@example.com", enabled=False
        )
        n = Notification.objects.create(
            kind="alert.raised", level="error", subject="Error rate 3.2 % over 5 min"
        )
        Delivery.objects.create(
            notification=n,
            channel=hook,
            status="pending",
            attempts=2,
            response_status=503,
            response_body="upstream unavailable",
            error="POST http://127.0.0.1:9/…: HTTP 503 (upstream unavailable)",
            history=[
                {"n": 1, "status": 500, "ms": 12.0, "result": "retry", "error": "HTTP 500", "note": ""},
                {"n": 2, "status": 503, "ms": 9.0, "result": "retry", "error": "HTTP 503", "note": ""},
            ],
        )
        context = chromium.new_context(
            viewport={"width": width, "height": 844 if width < 800 else 900}, color_scheme=scheme
        )
        page = context.new_page()
        try:
            login(page, live_server_url, "operator", "operator-pass")
            page.goto(f"{live_server_url}/notifications/")
            screenshot(page, f"notifications-{width}-{scheme}")
            assert_fits(page, "notifications", width, scheme)
            page.once("dialog", lambda d: d.accept())
            page.click(f"#test-{channel.pk}")
            page.wait_for_selector("#deliveries tr.highlight")
            assert "Test sent to ops slack: HTTP 200." in page.inner_text("#banners")
            row = page.inner_text("#deliveries tr.highlight")
            assert "Test notification" in row and "HTTP 200" in row and "Sent" in row
            screenshot(page, f"notifications-tested-{width}-{scheme}")
            assert_fits(page, "notifications after a test", width, scheme)
            assert SLACK_PATH not in page.content()
        finally:
            context.close()
    assert len(slack.requests) == 1 and slack.requests[0].path == SLACK_PATH
