"""The emergency-stop API (/api/v1/control/…) and its commands: engage, status, release and
requeue for admins only (refusals audited), clear 400s for bad scopes, 404 for unknown stops."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from scheduler import audit, queue, stops
from scheduler.models import AuditEntry, EmergencyStop, Run
from tests.support.factories import bearer

pytestmark = [pytest.mark.django_db, pytest.mark.redis, pytest.mark.usefixtures("redis_prefix")]


def post(client, url, body, **headers):
    return client.post(url, body, content_type="application/json", **headers)


@pytest.fixture
def admin_token(django_user_model):
    user = django_user_model.objects.create_superuser("boss", "boss@example.invalid", "pw")
    return bearer(user, "admin")


def test_engage_status_release_and_requeue_through_the_api(client, admin_token):
    waiting = queue.enqueue(kind="noop", params={})
    response = post(
        client, "/api/v1/control/emergency-stop/", {"reason": "runaway", "scope": "global"}, **admin_token
    )
    assert response.status_code == 200, response.content
    stop = response.json()
    assert stop["engaged"] is True and stop["parked"] == 1 and stop["label"] == "everything"
    status = client.get("/api/v1/control/status/", **admin_token).json()
    assert [s["id"] for s in status["engaged"]] == [stop["id"]]
    assert (
        post(
            client, "/api/v1/control/emergency-release/", {"reason": "ok", "id": 999}, **admin_token
        ).status_code
        == 404
    )
    released = post(
        client, "/api/v1/control/emergency-release/", {"reason": "ok", "id": stop["id"]}, **admin_token
    )
    assert released.status_code == 200 and released.json()["released"][0]["engaged"] is False
    assert client.get("/api/v1/control/status/", **admin_token).json()["held_runs"] == 1
    out = post(client, "/api/v1/control/requeue/", {"runs": "all"}, **admin_token).json()
    assert out == {"requeued": 1, "cancelled": 0, "skipped": []}
    assert Run.objects.get(pk=waiting.pk).status == "queued"
    assert [
        a for a in AuditEntry.objects.order_by("id").values_list("action", flat=True) if a.startswith("stop.")
    ] == [
        "stop.engage",
        "stop.release",
        "stop.release",
        "stop.requeue",
    ]


def test_release_with_requeue_in_one_call(client, admin_token):
    waiting = [queue.enqueue(kind="noop", params={}) for _ in range(3)]
    stop = post(client, "/api/v1/control/emergency-stop/", {"reason": "x"}, **admin_token).json()
    bad = post(
        client,
        "/api/v1/control/emergency-release/",
        {"reason": "ok", "id": stop["id"], "requeue": "yes"},
        **admin_token,
    )
    assert bad.status_code == 400 and "'requeue' must be true or false" in bad.json()["error"]
    assert EmergencyStop.objects.get().is_engaged  # nothing happened
    out = post(
        client,
        "/api/v1/control/emergency-release/",
        {"reason": "ok", "id": stop["id"], "requeue": True},
        **admin_token,
    ).json()
    assert out["requeued"] == 3 and out["skipped"] == [] and out["released"][0]["engaged"] is False
    assert set(Run.objects.filter(pk__in=[r.pk for r in waiting]).values_list("status", flat=True)) == {
        "queued"
    }
    assert client.get("/api/v1/control/status/", **admin_token).json()["held_runs"] == 0


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"scope": "global"}, 400, "reason"),
        ({"reason": "x", "scope": "planet"}, 400, "'scope' must be 'global'"),
        ({"reason": "x", "gateway": "a", "agent": "b"}, 400, "give one scope"),
        ({"reason": "x", "priority": "asap"}, 400, "unknown priority"),
        ({"reason": "x", "colour": "red"}, 400, "colour"),
    ],
)
def test_bad_stop_requests_get_a_clear_400(client, admin_token, body, status, fragment):
    response = post(client, "/api/v1/control/emergency-stop/", body, **admin_token)
    assert response.status_code == status, response.content
    assert fragment in response.json()["error"]
    assert not EmergencyStop.objects.exists()


def test_an_operator_may_not_stop_the_fleet_and_the_refusal_is_audited(client, operator):
    response = post(
        client, "/api/v1/control/emergency-stop/", {"reason": "x"}, **bearer(operator, "operator")
    )
    assert response.status_code == 403
    assert not EmergencyStop.objects.exists()
    assert AuditEntry.objects.get(action="stop.engage").result == "refused"
    assert client.get("/api/v1/control/status/", **bearer(operator, "operator")).status_code == 200


def test_the_commands_engage_list_release_and_decide(capsys):
    queue.enqueue(kind="noop", params={})
    with pytest.raises(CommandError, match="--reason is required"):
        call_command("emergency_stop")
    call_command("emergency_stop", "--scope", "priority", "--value", "normal", "--reason", "drill")
    assert "engaged for priority queue normal" in capsys.readouterr().out
    call_command("emergency_stop", "--status")
    assert "drill" in capsys.readouterr().out
    with pytest.raises(CommandError, match="no such engaged"):
        call_command("emergency_release", "--scope", "agent", "--value", "nobody", "--reason", "x")
    call_command("emergency_release", "--all", "--reason", "drill over")
    assert "1 run(s) wait" in capsys.readouterr().out
    call_command("emergency_release", "--cancel", "all")
    assert "1 cancelled" in capsys.readouterr().out
    assert Run.objects.get().status == "cancelled"
    second = queue.enqueue(kind="noop", params={})
    call_command("emergency_stop", "--reason", "again")
    capsys.readouterr()
    call_command("emergency_release", "--all", "--reason", "over", "--and-requeue")
    out = capsys.readouterr().out
    assert "released" in out and "1 requeued" in out
    assert Run.objects.get(pk=second.pk).status == "queued"


def test_the_stop_page_releases_and_requeues_when_its_box_is_ticked(client, django_user_model):
    user = django_user_model.objects.create_superuser("chief", "chief@example.invalid", "pw")
    client.force_login(user)
    waiting = queue.enqueue(kind="noop", params={})
    stop = stops.engage(audit.Actor.system(), "global", reason="incident")
    page = client.get(f"/stops/{stop.pk}/")
    assert page.status_code == 200 and b'id="release-requeue"' in page.content
    response = client.post(f"/stops/{stop.pk}/release", {"reason": "fixed", "requeue": "on"}, follow=True)
    assert response.status_code == 200
    assert "Released everything and requeued 1 run(s)." in response.content.decode()
    assert Run.objects.get(pk=waiting.pk).status == "queued"
    again = stops.engage(audit.Actor.system(), "global", reason="again")
    response = client.post(f"/stops/{again.pk}/release", {"reason": "fixed"}, follow=True)
    assert "Nothing was replayed: 1 run(s) wait" in response.content.decode()
    assert Run.objects.get(pk=waiting.pk).status == "parked"
