"""The triggers API (/api/v1/triggers/, webhooks/, watches/): schedules listed, created, read,
changed and deleted through the audited controls (operator role; a viewer's try is a 403 and
audited), an invalid cron or an unknown zone a 400 saying what is wrong (the parser and check the
admin and the import use), a preview without saving, the webhook endpoints and delivery log
(never a secret) with redeliver, and the file watches."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
import time_machine
from django.test import Client

from scheduler.models import AuditEntry, Job, Run, Schedule, ScheduleFire, Watch
from scheduler.triggers import schedule
from tests.support.factories import bearer
from tests.webhooks.conftest import make_endpoint
from tests.webhooks.conftest import post as deliver
from webhooks.models import Delivery

pytestmark = [pytest.mark.django_db, pytest.mark.redis, pytest.mark.usefixtures("redis_prefix")]

SECRET = "api-secret-never-answered-0123456789abcdef"
PREVIOUS = "api-previous-secret-never-answered-987654"


@pytest.fixture
def op(operator):
    return bearer(operator, "operator")


@pytest.fixture
def view(viewer):
    return bearer(viewer, "viewer")


@pytest.fixture
def job(db):
    return Job.objects.create(name="report", kind="noop")


def send(client, method, url, body=None, **headers):
    if method == "get":
        return client.get(url, **headers)
    payload = json.dumps(body) if body is not None else ""
    return getattr(client, method)(url, payload, content_type="application/json", **headers)


def make(job, name="morning", **fields) -> Schedule:
    s = Schedule(job=job, name=name, **{"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin", **fields})
    s.full_clean()
    s.save()
    return s


# --- the list -------------------------------------------------------------------------------------------


def test_the_list_shows_each_trigger_with_its_sentence_policies_next_and_last_fire(client, view, job):
    with time_machine.travel(datetime(2026, 12, 4, 7, 59, 30, tzinfo=UTC), tick=False):  # Fri 08:59 CET
        s = make(job, jitter_seconds=20, pause_after_failures=3, overlap="buffer")
        other = make(Job.objects.create(name="backup", kind="noop"), "nightly", cron="30 2 * * *")
        schedule.set_enabled(schedule_actor(), other, False)
    with time_machine.travel(datetime(2026, 12, 4, 8, 0, 30, tzinfo=UTC), tick=False):
        schedule.fire_due()
        body = client.get("/api/v1/triggers/", **view).json()
    assert [r["label"] for r in body["results"]] == ["backup:nightly", "report:morning"]
    row = body["results"][1]
    run = Run.objects.get()
    assert row["id"] == s.pk and row["job"] == "report" and row["name"] == "morning"
    assert row["kind"] == "cron" and row["cron"] == "0 9 * * 1-5" and row["every"] is None
    assert row["timezone"] == "Europe/Berlin" and row["sentence"] == "At 09:00, Monday through Friday"
    assert row["enabled"] is True and row["state"] == "active"
    assert row["policies"] == {
        "overlap": "buffer",
        "catch_up": "once",
        "catch_up_window": 3600,
        "jitter": 20,
        "pause_after_failures": 3,
    }
    assert row["next_due_at"] == "2026-12-07T09:00:00+01:00"  # Monday, in the trigger's zone
    assert row["last_fire"] == {
        "due_at": "2026-12-04T09:00:00+01:00",
        "outcome": "fired",
        "run_id": run.pk,
        "run_status": "queued",
    }
    assert row["last_run_id"] == run.pk and row["url"] == f"http://testserver/api/v1/triggers/{s.pk}/"
    disabled = body["results"][0]
    assert disabled["enabled"] is False and disabled["state"] == "disabled" and disabled["last_fire"] is None

    def labels(query):
        return [r["label"] for r in client.get(f"/api/v1/triggers/?{query}", **view).json()["results"]]

    assert labels("job=report") == ["report:morning"]
    assert labels("enabled=false") == ["backup:nightly"] and labels("enabled=1") == ["report:morning"]
    assert labels("job=nope") == []
    bad = client.get("/api/v1/triggers/?enabled=maybe", **view)
    assert (
        bad.status_code == 400
        and bad.json()["error"] == "'enabled' must be true or false (1 or 0), not 'maybe'"
    )


def schedule_actor():
    from scheduler.audit import Actor

    return Actor.system()


# --- create -----------------------------------------------------------------------------------------------


def test_an_operator_creates_a_cron_trigger_201_with_ten_next_times_audited(client, op, job):
    with time_machine.travel(datetime(2026, 3, 27, 12, tzinfo=UTC), tick=False):
        response = send(
            client,
            "post",
            "/api/v1/triggers/",
            {"job": "report", "cron": "30 2 * * *", "timezone": "Europe/Berlin", "jitter": "1m"},
            **op,
        )
    assert response.status_code == 201, response.content
    body = response.json()
    s = Schedule.objects.get()
    assert body["id"] == s.pk and body["name"] == "schedule" and s.cron == "30 2 * * *"
    assert s.jitter_seconds == 60 and body["policies"]["jitter"] == 60
    assert body["sentence"] == "At 02:30"
    # DST: the spring-forward night (29 March 2026) fires at 03:00 CEST, once.
    assert body["next_fires"][:3] == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]
    assert len(body["next_fires"]) == 10 and body["recent_fires"] == []
    entry = AuditEntry.objects.get(action="schedule.create")
    assert entry.result == "ok" and entry.source == "api" and entry.target_label == "report:schedule"
    assert f"schedule {s.pk}: 30 2 * * * (Europe/Berlin)" in entry.message
    assert entry.actor_label.startswith("api token 'operator token'")


def test_intervals_daily_times_and_one_off_times_are_created_in_the_config_words(client, op, job):
    with time_machine.travel(datetime(2026, 12, 2, 10, tzinfo=UTC), tick=False):
        every = send(client, "post", "/api/v1/triggers/", {"job": "report", "every": "30m"}, **op).json()
        daily = send(
            client,
            "post",
            "/api/v1/triggers/",
            {"job": "report", "every": "1d", "at": "09:00", "timezone": "Asia/Tokyo", "enabled": False},
            **op,
        ).json()
        once = send(
            client,
            "post",
            "/api/v1/triggers/",
            {"job": "report", "name": "launch", "at": "2026-12-24T18:00", "timezone": "Europe/Paris"},
            **op,
        ).json()
    assert every["kind"] == "interval" and every["every"] == "30m" and every["every_seconds"] == 1800
    assert every["sentence"] == "Every 30 minutes" and every["next_fires"][0] == "2026-12-02T10:30:00+00:00"
    assert every["name"] == "schedule" and daily["name"] == "schedule-2"  # the next free name
    assert (
        daily["kind"] == "interval" and daily["at"] == "09:00" and daily["sentence"] == "Every day at 09:00"
    )
    assert daily["enabled"] is False and daily["state"] == "disabled"
    assert daily["next_fires"][0] == "2026-12-03T09:00:00+09:00"
    assert once["kind"] == "at" and once["at"] == "2026-12-24T18:00:00+01:00"
    assert once["next_fires"] == ["2026-12-24T18:00:00+01:00"] and once["expression"] == "at 2026-12-24 18:00"
    assert AuditEntry.objects.filter(action="schedule.create", result="ok").count() == 3


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (
            {"cron": "61 * * * *"},
            "invalid_schedule",
            "cron: invalid cron '61 * * * *': minute 61 is out of range (0-59)",
        ),
        (
            {"cron": "0 9 * * *", "timezone": "Mars/Olympus"},
            "invalid_schedule",
            "timezone: unknown time zone 'Mars/Olympus' (an IANA name such as Europe/Berlin or UTC)",
        ),
        (
            {"cron": "0 9 * * *", "timezone": "Europe/Berln"},
            "invalid_schedule",
            "timezone: unknown time zone 'Europe/Berln'; did you mean Europe/Berlin?",
        ),
        (
            {"cron": "0 9 * *"},
            "invalid_schedule",
            "cron: '0 9 * *' has 4 field(s); a cron expression has 5: minute hour day-of-month month "
            "day-of-week",
        ),
        (
            {"every": "soon"},
            "invalid_schedule",
            "every: cannot read every = 'soon': say e.g. 30s, 30m, 2h, 1d (with at = \"09:00\"), "
            '"every Monday 00:00"',
        ),
        (
            {"every": "2h", "at": "09:00"},
            "invalid_schedule",
            "every: at = '09:00' needs an interval of whole days (every = \"1d\", \"7d\"…), not '2h'",
        ),
        ({"every": "99999d"}, "invalid_schedule", "every: an interval is at most 3650 days"),
        (
            {"at": "next week"},
            "invalid_schedule",
            "at: 'next week' is not a date and time (2026-12-24T18:00)",
        ),
        ({"cron": "0 9 * * *", "jitter": "8d"}, "invalid_schedule", "jitter: a jitter is at most 7 days"),
        (
            {"cron": "0 9 * * *", "overlap": "queue"},
            "invalid_schedule",
            "overlap: unknown overlap 'queue' (one of skip, buffer, allow, cancel)",
        ),
        (
            {"cron": "0 9 * * *", "name": "two words"},
            "invalid_schedule",
            "name: a name of letters, digits, - and _",
        ),
        ({"timezone": "UTC"}, "invalid_schedule", "cron: give cron, every or at (a one-off date and time)"),
        ({"cron": "0 9 * * *", "enabled": "yes"}, "bad_field", "'enabled' must be true or false"),
        ({"cron": 5}, "bad_field", "'cron' must be a string"),
        (
            {"cron": "0 9 * * *", "jitter": [1]},
            "bad_field",
            "'jitter' must be seconds (a whole number) or a duration such as 30s, 10m",
        ),
        (
            {"cron": "0 9 * * *", "kind": "cron"},
            "bad_field",
            "unknown field(s) kind (allowed: job, name, cron",
        ),
    ],
)
def test_an_invalid_definition_is_a_400_saying_what_is_wrong_and_saves_nothing(
    client, op, job, body, code, message
):
    response = send(client, "post", "/api/v1/triggers/", {"job": "report", **body}, **op)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == code
    assert response.json()["error"].startswith(message), response.json()["error"]
    assert not Schedule.objects.exists()


def test_a_missing_or_unknown_job_or_a_taken_name_is_a_400(client, op, job):
    missing = send(client, "post", "/api/v1/triggers/", {"cron": "0 9 * * *"}, **op)
    assert missing.status_code == 400 and missing.json()["error"] == "'job' is required"
    unknown = send(client, "post", "/api/v1/triggers/", {"job": "nope", "cron": "0 9 * * *"}, **op)
    assert unknown.status_code == 400 and unknown.json() == {
        "error": "no job named 'nope'",
        "code": "unknown_job",
    }
    make(job, "morning")
    taken = send(
        client, "post", "/api/v1/triggers/", {"job": "report", "name": "morning", "cron": "0 9 * * *"}, **op
    )
    assert taken.status_code == 400
    assert taken.json()["error"] == "name: job 'report' already has a trigger named 'morning'"
    assert Schedule.objects.count() == 1
    errors = AuditEntry.objects.filter(action="schedule.create", result="error")
    assert [e.message for e in errors] == ["name: job 'report' already has a trigger named 'morning'"]


# --- who may -----------------------------------------------------------------------------------------------


def test_anonymous_callers_get_401_json_everywhere(client, job):
    s = make(job)
    for method, url in [
        ("get", "/api/v1/triggers/"),
        ("post", "/api/v1/triggers/"),
        ("get", f"/api/v1/triggers/{s.pk}/"),
        ("patch", f"/api/v1/triggers/{s.pk}/"),
        ("delete", f"/api/v1/triggers/{s.pk}/"),
        ("get", "/api/v1/triggers/preview/?cron=0+9+*+*+*"),
        ("get", "/api/v1/webhooks/"),
        ("get", "/api/v1/webhooks/deliveries/"),
        ("get", "/api/v1/webhooks/deliveries/1/"),
        ("post", "/api/v1/webhooks/deliveries/1/redeliver/"),
        ("get", "/api/v1/watches/"),
    ]:
        response = send(client, method, url, {"cron": "0 10 * * *"} if method != "get" else None)
        assert response.status_code == 401, (method, url)
        assert response.json()["code"] == "unauthenticated", (method, url)
    assert Schedule.objects.get().cron == "0 9 * * 1-5"


def test_a_viewer_reads_but_every_write_is_a_403_and_audited(client, view, job):
    s = make(job)
    assert client.get("/api/v1/triggers/", **view).status_code == 200
    assert client.get(f"/api/v1/triggers/{s.pk}/", **view).status_code == 200
    assert client.get("/api/v1/triggers/preview/?cron=0+9+*+*+*", **view).status_code == 200
    for method, url, body in [
        ("post", "/api/v1/triggers/", {"job": "report", "cron": "0 10 * * *"}),
        ("post", "/api/v1/triggers/", {"job": "report", "cron": "61 * * * *"}),  # 403 before 400
        ("patch", f"/api/v1/triggers/{s.pk}/", {"cron": "0 10 * * *"}),
        ("patch", f"/api/v1/triggers/{s.pk}/", {"enabled": True}),  # as it is: still refused
        ("patch", f"/api/v1/triggers/{s.pk}/", {"paused": True}),
        ("delete", f"/api/v1/triggers/{s.pk}/", None),
    ]:
        response = send(client, method, url, body, **view)
        assert response.status_code == 403, (method, body, response.content)
        assert response.json()["code"] == "forbidden" and "operator role" in response.json()["error"]
    s.refresh_from_db()
    assert Schedule.objects.count() == 1 and s.cron == "0 9 * * 1-5" and s.enabled and s.paused_at is None
    refused = AuditEntry.objects.filter(result="refused").order_by("id").values_list("action", flat=True)
    assert list(refused) == [
        "schedule.create",
        "schedule.create",
        "schedule.change",
        "schedule.enable",
        "schedule.pause",
        "schedule.delete",
    ]


def test_a_cookie_write_needs_the_csrf_token(operator, job):
    s = make(job)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(operator)
    refused = send(browser, "patch", f"/api/v1/triggers/{s.pk}/", {"cron": "0 10 * * *"})
    assert refused.status_code == 403 and refused.json()["code"] == "csrf"
    browser.get("/")
    token = browser.cookies["csrftoken"].value
    ok = send(browser, "patch", f"/api/v1/triggers/{s.pk}/", {"cron": "0 10 * * *"}, HTTP_X_CSRFTOKEN=token)
    assert ok.status_code == 200 and ok.json()["cron"] == "0 10 * * *"
    assert AuditEntry.objects.get(action="schedule.change").source == "api"


# --- one trigger: read, change, delete -----------------------------------------------------------------


def test_the_detail_has_the_next_ten_times_and_the_last_fires_and_unknown_ids_are_404(client, view, job):
    with time_machine.travel(datetime(2026, 12, 2, 9, 30, tzinfo=UTC), tick=False):
        s = make(job, cron="0 * * * *", timezone="UTC")
    with time_machine.travel(datetime(2026, 12, 2, 12, 20, tzinfo=UTC), tick=False):
        schedule.fire_due()  # 10:00 and 11:00 missed, 12:00 caught up
        body = client.get(f"/api/v1/triggers/{s.pk}/", **view).json()
    assert body["next_fires"][:2] == ["2026-12-02T13:00:00+00:00", "2026-12-02T14:00:00+00:00"]
    assert len(body["next_fires"]) == 10
    assert [f["outcome"] for f in body["recent_fires"]] == ["caught_up", "missed", "missed"]
    assert body["recent_fires"][0]["run_id"] == Run.objects.get().pk
    assert body["last_fire"]["outcome"] == "caught_up"
    for method in ("get", "patch", "delete"):
        body = {"cron": "0 9 * * *"} if method == "patch" else None
        missing = send(client, method, "/api/v1/triggers/424242/", body, **view)
        assert missing.status_code == 404 and missing.json() == {
            "error": "no trigger 424242",
            "code": "not_found",
        }
    other = client.put(f"/api/v1/triggers/{s.pk}/", "{}", content_type="application/json", **view)
    assert other.status_code == 405 and "allowed: GET, PATCH, DELETE" in other.json()["error"]


def test_patch_changes_fields_replans_and_says_what_changed_in_the_audit(client, op, job):
    with time_machine.travel(datetime(2026, 12, 2, 10, tzinfo=UTC), tick=False):
        s = make(job)
        response = send(
            client,
            "patch",
            f"/api/v1/triggers/{s.pk}/",
            {"cron": "0 18 * * *", "timezone": "UTC", "overlap": "allow", "catch_up_window": "2h"},
            **op,
        )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["cron"] == "0 18 * * *" and body["sentence"] == "At 18:00" and body["timezone"] == "UTC"
    assert body["policies"]["overlap"] == "allow" and body["policies"]["catch_up_window"] == 7200
    assert body["next_due_at"] == "2026-12-02T18:00:00+00:00"
    s.refresh_from_db()
    assert s.next_due_at == datetime(2026, 12, 2, 18, tzinfo=UTC) and s.jitter_seconds == 0
    entry = AuditEntry.objects.get(action="schedule.change")
    assert entry.result == "ok" and "cron '0 9 * * 1-5' → '0 18 * * *'" in entry.message
    assert "timezone 'Europe/Berlin' → 'UTC'" in entry.message and "overlap 'skip' → 'allow'" in entry.message

    # A policy alone keeps the definition; a new definition replaces it whole (cron → interval).
    send(client, "patch", f"/api/v1/triggers/{s.pk}/", {"jitter": 30}, **op)
    s.refresh_from_db()
    assert s.jitter_seconds == 30 and s.cron == "0 18 * * *" and s.catch_up_window_seconds == 7200
    moved = send(
        client, "patch", f"/api/v1/triggers/{s.pk}/", {"every": "1d", "at": "07:15", "name": "early"}, **op
    )
    assert (
        moved.json()["kind"] == "interval"
        and moved.json()["at"] == "07:15"
        and moved.json()["name"] == "early"
    )
    s.refresh_from_db()
    assert s.kind == "interval" and s.cron == "" and s.every_seconds == 86400 and s.jitter_seconds == 30


def test_a_bad_patch_is_a_400_and_changes_nothing(client, op, job):
    s = make(job)
    for body, message in [
        ({"cron": "61 * * * *"}, "cron: invalid cron '61 * * * *': minute 61 is out of range (0-59)"),
        ({"timezone": "Mars/Olympus"}, "timezone: unknown time zone 'Mars/Olympus'"),
        ({"at": "09:00"}, "at: '09:00' is not a date and time"),  # at alone is a one-off time
        ({}, "nothing to change: give one of name, cron, every"),
        ({"paused": "yes"}, "'paused' must be true or false"),
    ]:
        response = send(client, "patch", f"/api/v1/triggers/{s.pk}/", body, **op)
        assert response.status_code == 400, body
        assert response.json()["error"].startswith(message), response.json()["error"]
    s.refresh_from_db()
    assert s.cron == "0 9 * * 1-5" and s.timezone == "Europe/Berlin" and s.kind == "cron"


def test_enable_disable_pause_and_resume_through_patch_each_audited(client, op, job):
    s = make(job)

    def patch(body):
        response = send(client, "patch", f"/api/v1/triggers/{s.pk}/", body, **op)
        assert response.status_code == 200, response.content
        return response.json()

    assert patch({"enabled": False})["state"] == "disabled"
    assert patch({"enabled": True})["state"] == "active"
    paused = patch({"paused": True, "reason": "maintenance"})
    assert paused["state"] == "paused" and paused["enabled"] is True
    assert paused["paused_reason"] == "paused by api token 'operator token' (operator): maintenance"
    assert paused["paused_at"] is not None
    fire = Schedule.objects.filter(pk=s.pk).values_list("fire_at", flat=True).get()
    assert schedule.fire_due(now=fire).fired == 0  # paused: nothing fires
    resumed = patch({"paused": False})
    assert resumed["state"] == "active" and resumed["paused_reason"] == "" and resumed["next_due_at"]
    actions = list(AuditEntry.objects.order_by("id").values_list("action", "result", "reason"))
    assert actions == [
        ("schedule.disable", "ok", ""),
        ("schedule.enable", "ok", ""),
        ("schedule.pause", "ok", "maintenance"),
        ("schedule.resume", "ok", ""),
    ]


def test_delete_removes_the_trigger_and_its_fires_audited(client, op, job):
    s = make(job)
    ScheduleFire.objects.create(trigger=s, due_at=datetime(2026, 1, 1, tzinfo=UTC), outcome="missed")
    response = send(client, "delete", f"/api/v1/triggers/{s.pk}/", {"reason": "retired"}, **op)
    assert response.status_code == 200 and response.json() == {"deleted": s.pk, "label": "report:morning"}
    assert not Schedule.objects.exists() and not ScheduleFire.objects.exists()
    entry = AuditEntry.objects.get(action="schedule.delete")
    assert entry.result == "ok" and entry.reason == "retired" and "1 fire(s) recorded" in entry.message
    assert client.delete(f"/api/v1/triggers/{s.pk}/", **op).status_code == 404


# --- preview --------------------------------------------------------------------------------------------


def test_the_preview_answers_ten_times_and_the_sentence_without_saving(client, view):
    with time_machine.travel(datetime(2026, 10, 23, 12, tzinfo=UTC), tick=False):
        body = client.get(
            "/api/v1/triggers/preview/", {"cron": "30 2 * * *", "timezone": "Europe/Berlin"}, **view
        ).json()
        daily = client.get("/api/v1/triggers/preview/", {"every": "1d", "at": "09:00"}, **view).json()
        weekly = client.get("/api/v1/triggers/preview/", {"every": "every Monday 00:00"}, **view).json()
    assert body["kind"] == "cron" and body["sentence"] == "At 02:30" and len(body["next_fires"]) == 10
    # DST: the fall-back night (25 October 2026) fires once, at the first 02:30 (CEST).
    assert body["next_fires"][:3] == [
        "2026-10-24T02:30:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    assert daily["sentence"] == "Every day at 09:00" and daily["next_fires"][0] == "2026-10-24T09:00:00+00:00"
    assert weekly["kind"] == "cron" and weekly["expression"] == "0 0 * * 1"
    assert not Schedule.objects.exists() and not AuditEntry.objects.exists()


def test_an_invalid_preview_is_a_400_saying_what_is_wrong(client, view):
    for query, message in [
        ({"cron": "61 * * * *"}, "cron: invalid cron '61 * * * *': minute 61 is out of range (0-59)"),
        ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "timezone: unknown time zone 'Mars/Olympus'"),
        ({"every": "0m"}, "every: an interval is at least 1 second"),
        ({}, "cron: give cron, every or at"),
        ({"at": "9999-12-31T23:59"}, "at: a one-off time lies between the years 1970 and 9000"),
    ]:
        response = client.get("/api/v1/triggers/preview/", query, **view)
        assert response.status_code == 400, query
        assert response.json()["error"].startswith(message), response.json()["error"]


# --- webhooks ---------------------------------------------------------------------------------------------


@pytest.fixture
def hook(job):
    endpoint = make_endpoint(job, slug="gh-reviews", secret=PREVIOUS, events=["pull_request"])
    from datetime import timedelta

    endpoint.rotate_secret(SECRET, timedelta(hours=1))  # both secrets valid: neither is answered
    return endpoint


def _never_a_secret(text: str) -> None:
    for secret in (SECRET, PREVIOUS):
        assert secret not in text
        assert secret[:12] not in text
    # nor the signature made from it
    for raw in Delivery.objects.values_list("body", flat=True):
        digest = hmac.new(SECRET.encode(), raw.encode(), hashlib.sha256).hexdigest()
        assert digest not in text


def test_the_endpoints_list_never_has_a_secret(client, view, hook, settings):
    settings.AGENTFLOW_PUBLIC_URL = "https://agentflow.example.test"
    deliver(client, hook, secret=SECRET)
    response = client.get("/api/v1/webhooks/", **view)
    assert response.status_code == 200
    (row,) = response.json()["results"]
    assert row["slug"] == "gh-reviews" and row["provider"] == "github" and row["events"] == ["pull_request"]
    assert row["job"] == "report" and row["enabled"] is True
    assert row["url"] == "https://agentflow.example.test/webhooks/gh-reviews/"
    assert row["last_delivery"]["verdict"] == "accepted" and row["last_delivery"]["received_at"]
    assert not {k for k in row if "secret" in k}
    _never_a_secret(response.content.decode())
    assert client.get("/api/v1/webhooks/?job=other", **view).json()["results"] == []


def test_the_delivery_log_filters_masks_headers_and_never_has_a_secret(client, view, hook):
    deliver(client, hook, secret=SECRET, delivery="d-1")
    deliver(client, hook, secret="wrong", delivery="d-2")  # refused: its sender's id is not kept
    log = client.get("/api/v1/webhooks/deliveries/", **view)
    assert log.status_code == 200
    rows = log.json()["results"]
    assert [(r["delivery_id"], r["verdict"]) for r in rows] == [("", "bad_signature"), ("d-1", "accepted")]
    accepted = rows[1]
    assert accepted["endpoint"] == "gh-reviews" and accepted["run_id"] == Run.objects.get().pk
    assert accepted["headers"]["x-hub-signature-256"].startswith("•••• masked")
    assert accepted["headers"]["x-github-event"] == "pull_request" and "body" not in accepted
    for query, ids in [
        ("verdict=accepted", ["d-1"]),
        ("endpoint=gh-reviews", ["", "d-1"]),
        (f"endpoint={hook.pk}", ["", "d-1"]),
        ("since=1h", ["", "d-1"]),
        ("since=2099-01-01T00:00:00Z", []),
    ]:
        got = client.get(f"/api/v1/webhooks/deliveries/?{query}", **view).json()["results"]
        assert [r["delivery_id"] for r in got] == ids, query
    for query, status, words in [
        ("verdict=great", 400, "'verdict' must be one of accepted, duplicate"),
        ("since=yesterday", 400, "'since' must be an ISO 8601 time or one of 1h, 24h, 7d"),
        ("endpoint=nope", 404, "no webhook endpoint 'nope'"),
    ]:
        response = client.get(f"/api/v1/webhooks/deliveries/?{query}", **view)
        assert response.status_code == status and words in response.json()["error"], query
    detail = client.get(accepted["url"], **view)
    assert detail.status_code == 200 and '"acme/app"' in detail.json()["body"]
    assert client.get("/api/v1/webhooks/deliveries/424242/", **view).status_code == 404
    for response in (log, detail):
        _never_a_secret(response.content.decode())


def test_redeliver_is_the_log_pages_control_operator_only_and_audited(client, op, view, hook):
    deliver(client, hook, secret=SECRET, delivery="d-1")
    deliver(client, hook, secret="wrong", delivery="d-2")
    good = Delivery.objects.get(delivery_id="d-1")
    bad = Delivery.objects.get(verdict="bad_signature")
    refused = send(client, "post", f"/api/v1/webhooks/deliveries/{good.pk}/redeliver/", **view)
    assert refused.status_code == 403 and Run.objects.count() == 1
    response = send(client, "post", f"/api/v1/webhooks/deliveries/{good.pk}/redeliver/", **op)
    assert response.status_code == 201, response.content
    again = response.json()
    assert again["redelivery_of"] == good.pk and again["verdict"] == "accepted" and again["id"] != good.pk
    assert again["run_id"] == Run.objects.order_by("-id").first().pk and Run.objects.count() == 2
    assert again["headers"]["x-hub-signature-256"].startswith("•••• masked")
    _never_a_secret(response.content.decode())
    unverified = send(client, "post", f"/api/v1/webhooks/deliveries/{bad.pk}/redeliver/", **op)
    assert unverified.status_code == 400
    assert (
        unverified.json()["error"]
        == "only a verified delivery can be redelivered (this one is bad signature)"
    )
    assert send(client, "post", "/api/v1/webhooks/deliveries/424242/redeliver/", **op).status_code == 404
    results = list(
        AuditEntry.objects.filter(action="webhook.redeliver").order_by("id").values_list("result", flat=True)
    )
    assert results == ["refused", "ok", "error"]


# --- watches ----------------------------------------------------------------------------------------------


def test_the_watches_list_shows_directory_patterns_events_and_state(client, view, job, tmp_path):
    ok = Watch.objects.create(
        name="pdfs", directory=str(tmp_path), patterns=["*.pdf", "**/*.csv"], events=["created"], job=job
    )
    Watch.objects.filter(pk=ok.pk).update(state="watching")
    Watch.objects.create(
        name="gone",
        directory=str(tmp_path / "missing"),
        events=["created", "deleted"],
        job=job,
        state="missing",
        state_detail="the directory does not exist",
        enabled=False,
    )
    rows = client.get("/api/v1/watches/", **view).json()["results"]
    assert [r["name"] for r in rows] == ["gone", "pdfs"]
    gone, pdfs = rows
    assert pdfs["directory"] == str(tmp_path) and pdfs["patterns"] == ["*.pdf", "**/*.csv"]
    assert pdfs["events"] == ["created"] and pdfs["job"] == "report"
    assert pdfs["state"] == "watching" and pdfs["problem"] is False
    assert gone["state"] == "missing" and gone["problem"] is True
    assert gone["state_detail"] == "the directory does not exist"
    assert [r["name"] for r in client.get("/api/v1/watches/?enabled=true", **view).json()["results"]] == [
        "pdfs"
    ]


# --- the schema -------------------------------------------------------------------------------------------


def test_the_schema_describes_the_new_endpoints_and_their_methods(client, view):
    paths = client.get("/api/v1/schema/", **view).json()["paths"]
    expected = {
        "/api/v1/triggers/": {"get", "post"},
        "/api/v1/triggers/preview/": {"get"},
        "/api/v1/triggers/{trigger_id}/": {"get", "patch", "delete"},
        "/api/v1/webhooks/": {"get"},
        "/api/v1/webhooks/deliveries/": {"get"},
        "/api/v1/webhooks/deliveries/{delivery_id}/": {"get"},
        "/api/v1/webhooks/deliveries/{delivery_id}/redeliver/": {"post"},
        "/api/v1/watches/": {"get"},
    }
    for path, methods in expected.items():
        assert set(paths[path]) == methods, path
    patch = paths["/api/v1/triggers/{trigger_id}/"]["patch"]
    assert patch["operationId"] == "trigger-patch" and "403" in patch["responses"]
    assert (
        paths["/api/v1/triggers/preview/"]["get"]["description"] == "Give at least one of: cron, every, at."
    )
    endpoint = paths["/api/v1/webhooks/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert not [k for k in endpoint["properties"]["results"]["items"]["properties"] if "secret" in k]
