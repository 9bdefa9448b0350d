"""The Automation page (/automation/) in a browser: AgentFlow's processes from their heartbeats,
the status sections (schedules, webhook endpoints, file watches), the automation log and the real
gateway's own cron jobs (cron.list, cron.runs) with the switch that pauses them. Light and dark,
390 px and 1400 px (nothing scrolls sideways; screenshots in test-artifacts/); the switch from the
keyboard, as an admin whose gateway token has operator.admin."""

from __future__ import annotations

import os
import time

import pytest

from tests.support.browser import assert_fits, login, off_loop, page_checked, screenshot
from tests.support.gateway import admin_client

pytestmark = [pytest.mark.browser, pytest.mark.gateway, pytest.mark.redis]


@pytest.fixture
def server_env(redis_prefix, server_env):
    """The server's token may switch the gateway's cron (operator.admin), as in production."""
    return {**server_env, "AGENTFLOW_GATEWAY_SCOPES": "operator.read,operator.write,operator.admin"}


def make_automation(root) -> None:
    """A schedule, a webhook endpoint and a watch (one row in each section), a worker's and a
    watcher's heartbeat, and a few log lines."""
    from agentflow.lib import eventlog, heartbeat
    from scheduler.models import Job, Schedule, Watch
    from webhooks.models import Endpoint

    report = Job.objects.create(name="morning_report", kind="noop")
    review = Job.objects.create(name="review-every-pull-request-of-the-monorepo", kind="noop")
    schedule = Schedule(job=report, name="weekdays", cron="0 9 * * 1-5", timezone="Europe/Berlin")
    schedule.full_clean()
    schedule.save()
    Endpoint.objects.create(
        slug="github-pull-requests-of-the-monorepo", provider="github", secret="s" * 32,
        events=["pull_request"], job=review,
    )  # fmt: skip
    inbox = root / "incoming" / "invoices-from-the-accounting-department"
    inbox.mkdir(parents=True)
    Watch.objects.create(
        name="invoices", directory=str(inbox), patterns=["*.pdf"], events=["created"], job=review
    )
    heartbeat.beat_once("worker", started_at=time.time() - 7260)
    eventlog.emit(
        "trigger.fired", job="morning_report", trigger="cron 0 9 * * 1-5", due="2026-12-02T09:00+01:00"
    )
    eventlog.emit(
        "webhook.accepted", job=review.name, endpoint="github-pull-requests-of-the-monorepo",
        delivery="439a7cccf03641b6b832fbe364091897-3da1b0cfba55436da790e0144aba3253",
    )  # fmt: skip


def gateway_cron_enabled(live_openclaw) -> bool:
    with admin_client(live_openclaw) as client:
        return client.call("cron.status", {})["enabled"]


def resume_if_paused(live_openclaw, gateway_row) -> None:
    from fleet import gateway_cron
    from scheduler import audit

    if not gateway_cron_enabled(live_openclaw):
        gateway_cron.resume(audit.Actor.system(), gateway_row)


@pytest.mark.parametrize("width", [390, 1400])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_automation_page_fits_a_phone_and_a_desktop_in_light_and_dark(
    redis_prefix, chromium, gateway_row, live_server_url, admin_user, scheme, width, tmp_path
):
    off_loop(make_automation, tmp_path)
    context = chromium.new_context(
        viewport={"width": width, "height": 844 if width < 800 else 900}, color_scheme=scheme
    )
    page = context.new_page()
    try:
        login(page, live_server_url, "boss", "boss-pass")
        page.goto(f"{live_server_url}/automation/")
        page.wait_for_load_state("networkidle")
        processes = page.locator("#automation-processes").inner_text()
        assert "worker" in processes and str(os.getpid()) in processes and "2 h 1 min" in processes
        assert "weekdays" in page.locator("#automation-schedules").inner_text()
        assert (
            "/webhooks/github-pull-requests-of-the-monorepo/"
            in page.locator("#automation-webhooks").inner_text()
        )
        assert "invoices" in page.locator("#automation-watches").inner_text()
        cron = page.locator(f"#gateway-cron-{gateway_row.pk}")
        assert "Memory Dreaming Promotion" in cron.inner_text()  # a fresh gateway's own job
        assert cron.locator("tbody tr").count() >= 3
        assert "running" in page.locator(f"#gateway-cron-{gateway_row.pk}-state").inner_text()
        assert page.locator("#cron-pause").is_enabled()
        assert "trigger.fired job=morning_report" in page.locator("#automation-log").inner_text()
        page_checked(page, "automation", width, scheme)
    finally:
        context.close()


def test_the_gateway_cron_switch_works_from_the_keyboard(
    redis_prefix, chromium, gateway_row, live_server_url, live_openclaw, admin_user, tmp_path
):
    from scheduler.models import AuditEntry

    off_loop(make_automation, tmp_path)
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        login(page, live_server_url, "boss", "boss-pass")
        page.goto(f"{live_server_url}/automation/")
        page.on("dialog", lambda dialog: dialog.accept())  # each switch asks first
        page.focus("#cron-pause")
        assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
        page.keyboard.press("Enter")
        page.wait_for_selector("text=its cron is paused")
        assert gateway_cron_enabled(live_openclaw) is False
        state = page.locator(f"#gateway-cron-{gateway_row.pk}-state")
        assert "paused" in state.inner_text()
        assert "paused" in page.locator(f"#gateway-cron-{gateway_row.pk} tbody").inner_text()  # next runs
        assert_fits(page, "automation-paused", 1400, "light")
        screenshot(page, "automation-paused-1400-light")

        page.focus("#cron-resume")
        page.keyboard.press("Enter")
        page.wait_for_selector("text=its cron is running again")
        assert gateway_cron_enabled(live_openclaw) is True
        assert "running" in page.locator(f"#gateway-cron-{gateway_row.pk}-state").inner_text()
    finally:
        context.close()
        off_loop(resume_if_paused, live_openclaw, gateway_row)
    rows = AuditEntry.objects.filter(action__startswith="gateway.cron.").order_by("id")
    assert [(r.action, r.result, r.actor_label) for r in rows] == [
        ("gateway.cron.pause", "ok", "boss"),
        ("gateway.cron.resume", "ok", "boss"),
    ]
