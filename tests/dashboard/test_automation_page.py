"""The Automation page (/automation/) and ``manage.py automation status``: process heartbeats, the
registered status sections, the automation log, and each gateway's own cron read from the real
gateway (cron.status, cron.list, cron.runs) with its pause / resume switch (admin role, audited;
the gateway token needs operator.admin)."""

from __future__ import annotations

import os
from io import StringIO

import pytest
from django.core.management import call_command

from agentflow.lib import eventlog, heartbeat
from fleet import gateway_cron
from scheduler import audit, automation
from scheduler.automation import StatusSection
from scheduler.models import AuditEntry
from tests.support.gateway import admin_client
from tests.support.html import dom

pytestmark = [pytest.mark.django_db, pytest.mark.redis, pytest.mark.usefixtures("redis_prefix")]

ADMIN = ("operator.read", "operator.write", "operator.admin")


@pytest.fixture
def section():
    automation.register_status(
        StatusSection(
            "test.watches",
            "File watches",
            50,
            [("name", "Watch"), ("directory", "Directory")],
            lambda: [{"name": "pdfs", "directory": "/srv/inbox"}],
        )
    )
    yield
    automation._STATUS.pop("test.watches", None)


def cron_enabled(live_openclaw) -> bool:
    with admin_client(live_openclaw) as client:
        return client.call("cron.status", {})["enabled"]


def test_the_page_needs_a_login(client):
    answer = client.get("/automation/")
    assert answer.status_code == 302 and "/login" in answer["Location"]


def test_it_shows_processes_sections_the_log_and_the_gateways_cron(client, viewer, gateway_row, section):
    heartbeat.beat_once("worker")
    eventlog.emit("trigger.fired", job="morning_report", trigger="cron 0 9 * * *")
    client.force_login(viewer)
    answer = client.get("/automation/")
    assert answer.status_code == 200
    page = dom(answer)
    processes = page.find("section", id="automation-processes").text
    assert "worker" in processes and str(os.getpid()) in processes
    watches = page.find("section", id="automation-testwatches").text
    assert "pdfs" in watches and "/srv/inbox" in watches
    assert "trigger.fired job=morning_report" in page.find("section", id="automation-log").text
    cron = page.find("div", id=f"gateway-cron-{gateway_row.pk}").text
    assert "Memory Dreaming Promotion" in cron  # a fresh gateway's own managed job
    assert "cron 0 3 * * *" in cron and "running" in cron
    assert "Pausing a gateway's cron needs the admin role." in cron
    assert not page.find_all("button", id="cron-pause")  # a viewer gets no switch


def test_without_operator_admin_the_switch_says_why_and_a_pause_is_refused_by_us(
    client, admin_user, gateway_row, live_openclaw, settings
):
    settings.GATEWAY_SCOPES = ("operator.read", "operator.write")
    client.force_login(admin_user)
    page = dom(client.get("/automation/"))
    button = page.find("button", id="cron-pause")
    assert button is not None and "disabled" in button.attrs
    assert "without operator.admin" in page.find("p", id=f"gateway-cron-{gateway_row.pk}-why").text
    answer = client.post(f"/automation/gateways/{gateway_row.pk}/cron", {"action": "pause"}, follow=True)
    assert "not paused: the gateway token lacks operator.admin" in answer.content.decode()
    entry = AuditEntry.objects.get(action="gateway.cron.pause")
    assert entry.result == "error" and "operator.admin" in entry.message
    assert cron_enabled(live_openclaw) is True


def test_an_admin_pauses_and_resumes_the_gateways_cron(
    client, admin_user, gateway_row, live_openclaw, settings
):
    settings.GATEWAY_SCOPES = ADMIN
    client.force_login(admin_user)
    try:
        answer = client.post(f"/automation/gateways/{gateway_row.pk}/cron", {"action": "pause"}, follow=True)
        assert "its cron is paused" in answer.content.decode()
        assert cron_enabled(live_openclaw) is False
        page = dom(client.get("/automation/"))
        assert "paused" in page.find("span", id=f"gateway-cron-{gateway_row.pk}-state").text
        assert page.find("button", id="cron-resume") is not None
        answer = client.post(f"/automation/gateways/{gateway_row.pk}/cron", {"action": "resume"}, follow=True)
        assert "its cron is running again" in answer.content.decode()
        assert cron_enabled(live_openclaw) is True
    finally:
        with admin_client(live_openclaw) as gw:
            if not gw.call("cron.status", {})["enabled"]:
                gateway_cron.resume(audit.Actor.system(), gateway_row)
    rows = list(AuditEntry.objects.filter(action__startswith="gateway.cron.").order_by("id"))
    assert [(r.action, r.result) for r in rows] == [
        ("gateway.cron.pause", "ok"),
        ("gateway.cron.resume", "ok"),
    ]


def test_an_operator_may_not_switch_it(client, operator, gateway_row, live_openclaw, settings):
    settings.GATEWAY_SCOPES = ADMIN
    client.force_login(operator)
    answer = client.post(f"/automation/gateways/{gateway_row.pk}/cron", {"action": "pause"})
    assert answer.status_code == 403
    assert AuditEntry.objects.get(action="gateway.cron.pause").result == "refused"
    assert cron_enabled(live_openclaw) is True


def test_a_gateway_that_does_not_answer_is_shown_with_the_reason(client, viewer):
    from tests.support.factories import make_gateway

    make_gateway("down")  # a loopback port nothing listens on
    client.force_login(viewer)
    page = dom(client.get("/automation/"))
    assert "down did not answer" in page.find("section", id="gateway-cron").text


def test_the_status_command_prints_processes_and_every_section(section):
    heartbeat.beat_once("beat")
    out = StringIO()
    call_command("automation", "status", stdout=out)
    text = out.getvalue()
    assert text.startswith("Processes\n  Process  PID")
    assert "beat" in text and str(os.getpid()) in text
    assert "File watches\n  Watch  Directory\n  pdfs   /srv/inbox" in text
