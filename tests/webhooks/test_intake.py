"""The intake's answers, through the Django test client: 202 queues one run through the engine's
queue, 200 for a duplicate (the same delivery id, a Slack retry) and for an event or payload the
endpoint does not run, 401 a bad signature or a replay outside the window, 404 an unknown or
disabled endpoint, 413 a body over the cap, 429 past the rate limit; an emergency stop parks
the run and the delivery is still recorded; the log masks signatures; never a 500."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from scheduler import audit, stops
from scheduler.models import AuditEntry, Run
from tests.support.webhooks import as_meta, new_secret, request_for, signed
from tests.webhooks.conftest import make_endpoint, post
from webhooks import intake
from webhooks.models import Delivery, Endpoint

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

GITHUB_INPUT = {
    "repository": "{{ payload.repository.full_name }}",
    "pr": "{{ payload.number }}",
    "diff_url": "{{ payload.pull_request.diff_url }}",
}


def test_a_verified_pull_request_queues_one_run_with_the_templated_input(client, job):
    endpoint = make_endpoint(job, events=["github.pull_request"], input_template=GITHUB_INPUT)
    response = post(client, endpoint, delivery="d-1")
    assert response.status_code == 202, response.content
    answer = response.json()
    run = Run.objects.get(pk=answer["run"])
    assert (run.trigger, run.triggered_by, run.job_id) == (Run.Trigger.WEBHOOK, "webhook github-hook", job.pk)
    assert run.input == {
        "repository": "acme/app",
        "pr": "7",
        "diff_url": "https://example.test/acme/app/pull/7.diff",
    }
    assert run.prompt == "Review acme/app #7"
    assert run.dedupe_key == f"webhook:{endpoint.pk}:d-1"
    delivery = Delivery.objects.get(pk=answer["delivery"])
    assert (delivery.verdict, delivery.status_code, delivery.event, delivery.run_id) == (
        "accepted",
        202,
        "pull_request",
        run.pk,
    )
    assert delivery.duration_ms is not None and delivery.duration_ms < 1000


def test_without_a_template_the_run_gets_the_whole_delivery(client, job):
    endpoint = make_endpoint(job, provider="stripe")
    response = post(client, endpoint, delivery="evt_1", event="invoice.paid")
    run = Run.objects.get(pk=response.json()["run"])
    assert run.input["event"] == "invoice.paid" and run.input["delivery"] == "evt_1"
    assert run.input["payload"]["data"]["object"]["amount_paid"] == 1200


@pytest.mark.parametrize("provider", ["github", "slack", "stripe", "standard", "hmac"])
def test_the_same_delivery_twice_is_one_run_and_a_200(client, job, provider):
    endpoint = make_endpoint(job, provider=provider)
    body, headers = request_for(provider, endpoint.secret, delivery="same-id")
    first = post(client, endpoint, body=body, headers=headers)
    again = post(client, endpoint, body=body, headers=headers)  # a replay inside the window
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["status"] == "duplicate" and again.json()["run"] == first.json()["run"]
    assert Run.objects.count() == 1
    assert list(Delivery.objects.order_by("pk").values_list("verdict", flat=True)) == [
        "accepted",
        "duplicate",
    ]


def test_a_slack_retry_is_recognised_as_the_same_event(client, job):
    endpoint = make_endpoint(job, provider="slack")
    first = post(client, endpoint, delivery="Ev123")
    retry = post(
        client,
        endpoint,
        delivery="Ev123",
        headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"},
    )
    assert (first.status_code, retry.status_code) == (202, 200)
    logged = Delivery.objects.get(verdict="duplicate")
    assert logged.retry == 1 and logged.run_id == first.json()["run"]
    assert Run.objects.count() == 1


@pytest.mark.parametrize("provider", ["slack", "stripe", "standard", "hmac"])
def test_a_replay_outside_the_window_is_refused(client, job, provider):
    endpoint = make_endpoint(job, provider=provider)
    response = post(client, endpoint, timestamp=int(time.time()) - 600)
    assert response.status_code == 401
    delivery = Delivery.objects.get()
    assert delivery.verdict == "bad_signature" and "window" in delivery.reason
    assert not Run.objects.exists()


def test_a_bad_signature_is_401_recorded_with_the_signature_masked(client, job):
    endpoint = make_endpoint(job)
    response = post(client, endpoint, secret="not-the-secret", headers={"Authorization": "Bearer xyz"})
    assert response.status_code == 401
    delivery = Delivery.objects.get()
    assert delivery.verdict == "bad_signature" and "does not match" in delivery.reason
    assert delivery.headers["x-hub-signature-256"].startswith("•••• masked")
    assert delivery.headers["authorization"].startswith("•••• masked")
    assert delivery.headers["x-github-event"] == "pull_request"
    assert "sha256=" not in json.dumps(delivery.headers)


def test_a_missing_signature_header_is_401(client, job):
    endpoint = make_endpoint(job)
    body, headers = request_for("github", endpoint.secret)
    del headers["X-Hub-Signature-256"]
    assert post(client, endpoint, body=body, headers=headers).status_code == 401


def test_an_unknown_endpoint_is_404_and_nothing_is_recorded(client, job):
    response = client.post("/webhooks/nobody-here/", b"{}", content_type="application/json")
    assert response.status_code == 404
    assert not Delivery.objects.exists()


def test_a_disabled_endpoint_is_404_but_recorded(client, job):
    endpoint = make_endpoint(job, enabled=False)
    assert post(client, endpoint).status_code == 404
    assert Delivery.objects.get().verdict == "disabled"


def test_a_body_over_the_cap_is_413_and_kept_cut(client, job):
    endpoint = make_endpoint(job, max_body_bytes=2000)
    body = json.dumps({"big": "x" * 10_000}).encode()
    response = post(client, endpoint, body=body, headers=signed("github", endpoint.secret, body))
    assert response.status_code == 413
    delivery = Delivery.objects.get()
    assert delivery.verdict == "too_large" and delivery.body_bytes == len(body) and len(delivery.body) <= 4096
    assert not Run.objects.exists()


def test_the_default_cap_is_the_setting(client, job, settings):
    settings.AGENTFLOW_WEBHOOK_MAX_BODY = 100
    endpoint = make_endpoint(job)
    assert post(client, endpoint).status_code == 413


def test_a_body_without_a_length_is_read_only_up_to_the_cap(job):
    endpoint = make_endpoint(job, max_body_bytes=50)
    body = b"{" + b" " * 200 + b"}"
    reads = []

    def read(n: int) -> bytes:
        reads.append(n)
        return body[:n]

    outcome = intake.receive(
        endpoint.slug, signed("github", endpoint.secret, body), read, content_length=None
    )
    assert outcome.status == 413 and reads == [51]


def test_past_the_rate_limit_it_answers_429_with_retry_after(client, job):
    endpoint = make_endpoint(job, rate_limit_per_minute=3)
    answers = [post(client, endpoint) for _ in range(5)]
    assert [a.status_code for a in answers] == [202, 202, 202, 429, 429]
    assert answers[3]["Retry-After"] == "10"
    assert Run.objects.count() == 3
    assert Delivery.objects.filter(verdict="rate_limited").count() == 2


def test_unsigned_noise_does_not_use_up_the_rate_limit(client, job):
    endpoint = make_endpoint(job, rate_limit_per_minute=2)
    for _ in range(5):
        assert post(client, endpoint, secret="wrong").status_code == 401
    assert post(client, endpoint).status_code == 202


def test_an_event_the_endpoint_does_not_run_is_recorded_and_acknowledged(client, job):
    endpoint = make_endpoint(job, events=["push"])
    response = post(client, endpoint, event="issues")
    assert response.status_code == 200 and response.json()["status"] == "ignored"
    delivery = Delivery.objects.get()
    assert delivery.verdict == "ignored" and "'issues'" in delivery.reason
    assert not Run.objects.exists()


def test_filters_and_the_branch_decide_which_deliveries_run(client, job):
    endpoint = make_endpoint(job, events=["pull_request"], filters={"action": "opened"}, branch="main")
    assert post(client, endpoint).status_code == 202
    endpoint.filters = {"action": ["closed", "reopened"]}
    endpoint.save()
    response = post(client, endpoint)
    assert response.status_code == 200 and "filter action" in Delivery.objects.first().reason
    endpoint.filters, endpoint.branch = {}, "release/*"
    endpoint.save()
    assert post(client, endpoint).status_code == 200
    assert "branch main is not release/*" in Delivery.objects.first().reason
    assert Run.objects.count() == 1


def test_github_ping_and_slack_url_verification_are_answered(client, job):
    github = make_endpoint(job)
    body = json.dumps({"zen": "Design for failure.", "hook_id": 9}).encode()
    response = post(client, github, body=body, headers=signed("github", github.secret, body, event="ping"))
    assert response.status_code == 200 and response.json()["pong"] == "Design for failure."
    slack = make_endpoint(job, provider="slack")
    body = json.dumps({"type": "url_verification", "challenge": "c-42", "token": "legacy"}).encode()
    response = post(client, slack, body=body, headers=signed("slack", slack.secret, body))
    assert response.status_code == 200 and response.json() == {"challenge": "c-42"}
    assert list(Delivery.objects.values_list("verdict", flat=True)) == ["answered", "answered"]
    assert not Run.objects.exists()


def test_an_emergency_stop_parks_the_run_and_the_delivery_is_still_recorded(client, job):
    stops.engage(audit.Actor.system(), "global", reason="test")
    endpoint = make_endpoint(job)
    response = post(client, endpoint)
    assert response.status_code == 202
    run = Run.objects.get()
    assert run.status == Run.Status.PARKED and run.stop_id is not None
    assert response.json()["run_status"] == "parked"
    assert "parked by an emergency stop" in Delivery.objects.get().reason


def test_during_a_rotation_the_previous_secret_works_until_its_time(client, job):
    old = new_secret("github")
    endpoint = make_endpoint(job, secret=old)
    endpoint.rotate_secret(new_secret("github"), timedelta(hours=1))
    assert post(client, endpoint, secret=old).status_code == 202
    assert post(client, endpoint).status_code == 202  # the new one
    Endpoint.objects.filter(pk=endpoint.pk).update(
        previous_secret_until=timezone.now() - timedelta(seconds=1)
    )
    assert post(client, endpoint, secret=old).status_code == 401


def test_a_disabled_job_records_the_delivery_as_not_run(client, job):
    endpoint = make_endpoint(job)
    job.enabled = False
    job.save()
    response = post(client, endpoint)
    assert response.status_code == 200 and response.json()["status"] == "not_run"
    assert "disabled" in Delivery.objects.get().reason


def test_get_is_405_and_a_body_that_is_not_json_is_400(client, job):
    endpoint = make_endpoint(job)
    assert client.get(endpoint.path).status_code == 405
    body = b"not json"
    response = post(client, endpoint, body=body, headers=signed("github", endpoint.secret, body))
    assert response.status_code == 400 and Delivery.objects.get().verdict == "malformed"


def test_a_database_failure_is_a_503_never_a_500(client, job, monkeypatch):
    endpoint = make_endpoint(job)

    def broken(*args, **kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr(intake.Endpoint.objects, "select_related", broken)
    response = post(client, endpoint)
    assert response.status_code == 503 and response.json()["status"] == "error"


def test_an_endpoint_without_a_secret_refuses_everything(client, job):
    endpoint = make_endpoint(job)
    Endpoint.objects.filter(pk=endpoint.pk).update(secret="")
    response = client.post(endpoint.path, b"{}", content_type="application/json", headers=as_meta({}))
    assert response.status_code == 401 and "no secret" in Delivery.objects.get().reason


def test_the_secret_is_encrypted_at_rest(job):
    from django.db import connection

    endpoint = make_endpoint(job, secret="plain-secret-value")
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM webhooks_endpoint WHERE id = %s", [endpoint.pk])
        stored = cursor.fetchone()[0]
    assert stored.startswith("fernet:") and "plain-secret-value" not in stored


def test_redelivery_queues_a_new_run_audited_and_needs_the_operator_role(client, job, operator, viewer):
    endpoint = make_endpoint(job, input_template=GITHUB_INPUT)
    post(client, endpoint)
    original = Delivery.objects.get()
    again = intake.redeliver(audit.Actor.of_user(operator, source="web"), original)
    assert again.redelivery_of_id == original.pk and again.run_id not in (None, original.run_id)
    assert again.run.input["repository"] == "acme/app"
    entry = AuditEntry.objects.get(action="webhook.redeliver")
    assert entry.result == "ok" and entry.actor == operator
    with pytest.raises(audit.Refused):
        intake.redeliver(audit.Actor.of_user(viewer, source="web"), original)
    assert AuditEntry.objects.filter(action="webhook.redeliver", result="refused").count() == 1


def test_a_refused_delivery_cannot_be_redelivered(client, job, operator):
    from django.core.exceptions import ValidationError

    endpoint = make_endpoint(job)
    post(client, endpoint, secret="wrong")
    with pytest.raises(ValidationError, match="only a verified delivery"):
        intake.redeliver(audit.Actor.of_user(operator), Delivery.objects.get())
    assert AuditEntry.objects.get(action="webhook.redeliver").result == "error"


@pytest.mark.parametrize(
    ("lookup", "key"),
    [
        (lambda: intake.claims(1, "a-delivery-id"), "delivery_id"),  # every delivery, before its row
        (lambda: Run.objects.filter(dedupe_key="webhook:1:x", status__in=Run.NOT_FINAL), "dedupe_key"),
    ],
)
def test_the_lookups_of_every_delivery_search_an_index_on_the_id(lookup, key):
    """SQLite cannot use the partial unique indexes for these (it proves their WHERE only against
    literals, the ORM binds parameters): without plain indexes each delivery searched every
    delivery of the log (by ``redelivery_of IS NULL``) and every queued run (by status).
    PostgreSQL is told not to prefer a scan of these small tables, so its plan shows whether an
    index on the id fits."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL enable_seqscan = off")
        plan = lookup().explain()
    searched = [line for line in plan.splitlines() if "SEARCH" in line or "Index Cond" in line]
    assert searched and all(key in line for line in searched), plan
