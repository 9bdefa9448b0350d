"""The Triggers page (/triggers/), a schedule's page (next 10 fire times, fire history) and the
operator controls enable / disable / fire now (role checked, audited)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine

from scheduler.models import AuditEntry, Job, Run, Schedule, ScheduleFire
from scheduler.triggers import schedule
from tests.support.html import dom

pytestmark = [pytest.mark.django_db, pytest.mark.redis, pytest.mark.usefixtures("redis_prefix")]


@pytest.fixture
def web(client, operator):
    client.force_login(operator)
    return client


def make(name="morning", **fields) -> Schedule:
    job = Job.objects.get_or_create(name=fields.pop("job", "report"), defaults={"kind": "noop"})[0]
    s = Schedule(job=job, name=name, **{"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin", **fields})
    s.full_clean()
    s.save()
    return s


def test_the_page_lists_each_schedule_with_its_sentence_next_and_last_fire(web):
    with time_machine.travel(datetime(2026, 12, 4, 7, 59, 30, tzinfo=UTC), tick=False):  # Friday 08:59 CET
        s = make()
        paused = make("nightly", cron="30 2 * * *", pause_after_failures=3)
        Schedule.objects.filter(pk=paused.pk).update(
            paused_at=datetime(2026, 12, 3, tzinfo=UTC),
            paused_reason="paused after 3 consecutive failed runs",
        )
    with time_machine.travel(datetime(2026, 12, 4, 8, 0, 1, tzinfo=UTC), tick=False):
        schedule.fire_due()
        page = dom(web.get("/triggers/"))
    row = page.find("tr", id=f"schedule-{s.pk}")
    text = " ".join(row.text.split())
    assert "0 9 * * 1-5" in text and "Europe/Berlin" in text and "At 09:00, Monday through Friday" in text
    assert "Mon 2026-12-07 09:00 CET" in text  # the next fire, in the trigger's zone
    run = Run.objects.get()
    assert row.has("a", href=f"/runs/{run.pk}/") and "Fired" in text
    other = " ".join(page.find("tr", id=f"schedule-{paused.pk}").text.split())
    assert "Paused" in other and "paused after 3 consecutive failed runs" in other
    nav = page.find("a", cls="nav-item", aria_current="page")
    assert nav.attrs["href"] == "/triggers/" and nav.text.strip() == "Triggers"


def test_a_schedules_page_shows_ten_next_times_and_the_fire_history(web):
    with time_machine.travel(datetime(2026, 12, 2, 9, 30, tzinfo=UTC), tick=False):
        s = make(cron="0 * * * *", timezone="UTC")
    with time_machine.travel(datetime(2026, 12, 2, 12, 20, tzinfo=UTC), tick=False):
        schedule.fire_due()  # 10:00 and 11:00 missed, 12:00 caught up
        page = dom(web.get(f"/triggers/schedules/{s.pk}/"))
    times = page.find("ol", id="schedule-preview").find_all("li")
    assert len(times) == 10 and times[0].text.strip() == "Wed 2026-12-02 13:00 UTC"
    rows = page.find("table", id="schedule-fires").find("tbody").find_all("tr")
    assert [r.find("span", cls="status").text.strip() for r in rows] == ["Caught up", "Missed", "Missed"]
    assert "1 caught up, 2 missed" in page.find("section", id="schedule-definition").text


def test_an_operator_disables_enables_and_fires_now_each_audited(web):
    s = make()
    assert web.post(f"/triggers/schedules/{s.pk}/disable").status_code == 302
    s.refresh_from_db()
    assert not s.enabled and s.state == "disabled"
    web.post(f"/triggers/schedules/{s.pk}/enable", {"back": "list"})
    s.refresh_from_db()
    assert s.enabled and s.next_due_at is not None
    response = web.post(f"/triggers/schedules/{s.pk}/fire")
    assert response.status_code == 302 and response.url == f"/triggers/schedules/{s.pk}/"
    fire = ScheduleFire.objects.get(trigger=s)
    assert fire.outcome == "manual" and fire.run.trigger == "schedule"
    actions = list(AuditEntry.objects.order_by("id").values_list("action", "result"))
    assert actions == [("schedule.disable", "ok"), ("schedule.enable", "ok"), ("schedule.fire_now", "ok")]


def test_a_viewer_sees_no_controls_and_is_refused_with_an_audit_row(client, viewer):
    s = make()
    client.force_login(viewer)
    page = dom(client.get("/triggers/"))
    assert not page.has("button", id=f"fire-{s.pk}")
    client.post(f"/triggers/schedules/{s.pk}/fire")
    assert not ScheduleFire.objects.exists()
    assert AuditEntry.objects.get().result == "refused"


def test_the_pages_need_a_login(client):
    s = make()
    assert client.get("/triggers/").status_code == 302
    assert client.get(f"/triggers/schedules/{s.pk}/").status_code == 302
    assert client.post(f"/triggers/schedules/{s.pk}/fire").status_code in (302, 403)
    assert not ScheduleFire.objects.exists()


def test_an_unknown_schedule_is_404(web):
    assert web.get("/triggers/schedules/999999/").status_code == 404
    assert web.post("/triggers/schedules/999999/fire").status_code == 404
