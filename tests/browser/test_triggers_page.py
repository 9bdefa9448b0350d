"""The Triggers page and a schedule's page in a browser: light and dark, 390 px and 1400 px
(nothing scrolls sideways, screenshots in test-artifacts/); "Fire now" from the keyboard."""

from __future__ import annotations

import pytest

from tests.support.browser import login, page_checked

pytestmark = [pytest.mark.browser]


def make_schedules() -> list[int]:
    from datetime import time, timedelta

    from django.utils import timezone

    from scheduler.models import Job, Schedule
    from scheduler.triggers import schedule

    report = Job.objects.create(name="morning_report", kind="noop")
    review = Job.objects.create(name="weekly-dependency-review-of-every-repository", kind="noop")
    rows = [
        Schedule(job=report, name="weekdays", cron="0 9 * * 1-5", timezone="Europe/Berlin"),
        Schedule(job=report, name="half-hourly", cron="*/30 * * * *", timezone="America/New_York",
                 overlap="buffer"),
        Schedule(job=review, name="daily", kind="interval", every_seconds=86400, at_time=time(2, 30),
                 timezone="Asia/Kolkata", pause_after_failures=3),
        Schedule(job=review, name="once", kind="at", at_datetime=timezone.now() + timedelta(days=3)),
    ]  # fmt: skip
    for s in rows:
        s.full_clean()
        s.save()
    Schedule.objects.filter(pk=rows[2].pk).update(
        paused_at=timezone.now(),
        paused_reason="paused after 3 consecutive failed runs (the last: run 41, timeout: no answer)",
    )
    from scheduler.audit import Actor

    schedule.fire_now(Actor.system(), rows[0])
    return [s.pk for s in rows]


@pytest.mark.parametrize("width", [390, 1400])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_triggers_pages_fit_a_phone_and_a_desktop_in_light_and_dark(
    chromium, live_server_url, operator, scheme, width
):
    ids = make_schedules()
    context = chromium.new_context(
        viewport={"width": width, "height": 844 if width < 800 else 900}, color_scheme=scheme
    )
    page = context.new_page()
    try:
        login(page, live_server_url, "operator", "operator-pass")
        page.goto(f"{live_server_url}/triggers/")
        page.wait_for_load_state("networkidle")
        assert page.locator("#schedules tbody tr[id^=schedule-]").count() == 4
        assert "At 09:00, Monday through Friday" in page.inner_text(f"#schedule-{ids[0]}")
        page_checked(page, "triggers", width, scheme)
        page.goto(f"{live_server_url}/triggers/schedules/{ids[0]}/")
        page.wait_for_load_state("networkidle")
        assert page.locator("#schedule-preview li").count() == 10
        page_checked(page, "schedule", width, scheme)
    finally:
        context.close()


def test_fire_now_from_the_keyboard(page, live_server_url, operator):
    from scheduler.models import ScheduleFire

    ids = make_schedules()
    login(page, live_server_url, "operator", "operator-pass")
    page.goto(f"{live_server_url}/triggers/schedules/{ids[1]}/")
    page.once("dialog", lambda dialog: dialog.accept())
    page.focus("#schedule-fire")
    page.keyboard.press("Enter")
    page.wait_for_selector("#schedule-fires tbody tr[id^=fire-]")
    assert "fired: run" in page.inner_text("main")
    assert ScheduleFire.objects.filter(trigger_id=ids[1], outcome="manual").count() == 1
