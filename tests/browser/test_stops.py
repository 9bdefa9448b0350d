"""The emergency stop in a browser, against the real gateway: press the header's stop, confirm with
a reason; another open page shows the banner within a second; a run streaming on the gateway ends
aborted there; the gateway's cron is off; releasing restores it and the stop's page lists the
parked runs for requeue or cancel. Screenshots of the dialog and both pages, light and dark, at
390 px and 1400 px."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.support.browser import login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.gateway]

ADMIN_SCOPES = "operator.read,operator.write,operator.admin"


@pytest.fixture
def server_env(server_env):
    server_env["AGENTFLOW_GATEWAY_SCOPES"] = ADMIN_SCOPES  # the server may switch the gateway's cron
    return server_env


def cron_of(client) -> tuple[bool, object]:
    parsed = client.config_get().get("parsed") or {}
    cron = parsed.get("cron") if isinstance(parsed.get("cron"), dict) else {}
    return "enabled" in cron, cron.get("enabled")


def test_the_header_stop_aborts_on_the_gateway_shows_everywhere_and_release_restores(
    redis_prefix, chromium, live_server_url, admin_user, gateway_row, live_openclaw, settings
):
    from playwright.sync_api import expect

    from scheduler import queue
    from scheduler.models import EmergencyStop, Run
    from tests.support.factories import make_agent
    from tests.support.gateway import admin_client, wait_for

    settings.GATEWAY_SCOPES = tuple(ADMIN_SCOPES.split(","))
    make_agent(gateway_row, "main", model="stub/stub-model")
    # Two windows (a background tab of one window is hidden: it would only note the event).
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    other = chromium.new_context(viewport={"width": 1400, "height": 900})
    first, second = context.new_page(), other.new_page()
    with admin_client(live_openclaw) as client:
        before = cron_of(client)
        try:
            login(first, live_server_url, "boss", "boss-pass")
            login(second, live_server_url, "boss", "boss-pass")
            second.goto(f"{live_server_url}/runs/")
            expect(second.locator("#live-status .label")).to_have_text("Live", timeout=10_000)
            first.goto(f"{live_server_url}/queue/")
            expect(first.locator("#live-status .label")).to_have_text("Live", timeout=10_000)
            # A run streaming on the gateway, and one waiting (no worker runs here).
            run = queue.enqueue(
                kind="agent.prompt",
                params={"gateway": gateway_row.name, "agent": "main"},
                prompt=f"[[slow:30]] browser-stop-{uuid.uuid4().hex[:8]}",
                max_attempts=1,
            )
            assert queue.start_next("test-host:1").pk == run.pk
            key = run.attempt_set.get().session_key
            describe = lambda: client.call("sessions.describe", {"key": key}).get("session") or {}  # noqa: E731
            wait_for(
                lambda: describe().get("status") == "running", 90, what="the run streaming on the gateway"
            )
            waiting = queue.enqueue(kind="noop", params={})

            first.click("#stop-button")
            expect(first.locator("#stop-dialog")).to_be_visible()
            screenshot(first, "stop-dialog-1400-light")
            first.fill("#dialog-reason", "browser test: runaway agent")
            clicked = time.monotonic()
            first.click("#stop-confirm", no_wait_after=True)  # not until the POST's answer: time the banner
            # The other open page shows the banner within a second of the confirmation.
            expect(second.locator("#stop-banners .alert-stop")).to_be_visible(timeout=5_000)
            shown_after = time.monotonic() - clicked
            stop = EmergencyStop.objects.get()
            assert shown_after <= 1.0, (
                f"the banner reached the other page after {shown_after:.2f} s: {stop.steps}"
            )
            first.wait_for_url(f"{live_server_url}/stops/{stop.pk}/")
            assert "runaway agent" in second.inner_text("#stop-banners")
            run.refresh_from_db()
            assert (run.status, run.stop_id) == ("aborted", stop.pk)
            wait_for(lambda: describe().get("status") != "running", 10, what="the run to end on the gateway")
            assert describe().get("abortedLastRun") is True
            assert cron_of(client) == (True, False)
            assert Run.objects.get(pk=waiting.pk).status == "parked"
            screenshot(first, "stop-engaged-1400-light")

            first.fill("#release-reason", "browser test: fixed")
            first.click("#release-submit")
            expect(first.locator("#stop-state")).to_have_text("released")
            assert cron_of(client) == before
            expect(second.locator("#stop-banners .alert-stop")).to_have_count(0, timeout=5_000)
            held = first.locator("#held-list tbody tr")
            assert held.count() == 2  # the aborted run and the parked one, for a decision
            expect(first.locator(f"#held-{waiting.pk}")).to_be_visible()
            screenshot(first, "stop-released-1400-light")
            first.check(f"#pick-{waiting.pk}")
            first.click("#requeue-selected")
            expect(first.locator("#banners")).to_contain_text("1 run(s) requeued")
            assert Run.objects.get(pk=waiting.pk).status == "queued"
        finally:
            context.close()
            other.close()


@pytest.mark.parametrize("width", [390, 1400])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_stop_pages_fit_a_phone_and_a_desktop_in_light_and_dark(
    redis_prefix, chromium, live_server_url, admin_user, scheme, width
):
    from django.utils import timezone

    from scheduler.models import EmergencyStop, Run
    from tests.support.browser import assert_fits

    now = timezone.now()
    old = EmergencyStop.objects.create(
        scope="gateway", value="prod", reason="a bad deploy looped every agent on prod", who="boss",
        released_at=now, released_by="boss", release_reason="rolled back", completed_at=now,
        steps=[{"step": "hook:fleet", "ms": 41.2, "note": "prod: 3 runs, 1 other session aborted, cron off"}],
    )  # fmt: skip
    for status in ("parked", "parked", "aborted"):
        Run.objects.create(kind="noop", status=status, stop=old, agent="main", job_name="nightly-report")
    EmergencyStop.objects.create(scope="global", reason="provider incident: stop everything", who="boss")
    context = chromium.new_context(
        viewport={"width": width, "height": 844 if width < 800 else 900}, color_scheme=scheme
    )
    page = context.new_page()
    try:
        login(page, live_server_url, "boss", "boss-pass")
        for name, path in {"stops": "/stops/", "stop": f"/stops/{old.pk}/"}.items():
            page.goto(live_server_url + path)
            page.wait_for_load_state("networkidle")
            assert page.locator("#stop-banners .alert-stop").count() == 1  # the engaged one, on every page
            assert_fits(page, name, width, scheme)
            screenshot(page, f"{name}-{width}-{scheme}")
        page.keyboard.press("Escape")
        page.goto(f"{live_server_url}/stops/")
        page.focus("#stop-button")
        page.keyboard.press("Enter")
        assert page.locator("#stop-dialog").is_visible()
        assert page.evaluate("document.activeElement.id") == "dialog-reason"
        screenshot(page, f"stop-dialog-{width}-{scheme}")
        page.keyboard.press("Escape")
        assert not page.locator("#stop-dialog").is_visible()
    finally:
        context.close()
