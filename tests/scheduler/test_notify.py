"""Notifications end to end against real local receivers (scheduler.notify → the records →
the Celery task, eager here → the sender → a real HTTP server on 127.0.0.1): Slack, a Standard
Webhooks receiver verified with the ``standardwebhooks`` package, a GitHub-shaped API, email
through Django's locmem backend; retries with backoff, failure after N attempts, the tick
picking up what is due, subscriptions, and the secret never leaving its column."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.db import transaction
from django.utils import timezone
from standardwebhooks import Webhook

from agentflow.lib import crypto, http
from scheduler import audit, notify
from scheduler.models import AuditEntry, Channel, ChannelThread, Delivery, Notification
from scheduler.notifications import delivery
from tests.support.github import fake_github
from tests.support.ports import free_port
from tests.support.receivers import eager_celery, make_channel, receiver, whsec

pytestmark = [pytest.mark.django_db]

SLACK_PATH = "/services/T0AGENT/B0FLOW/s3cr3t-slack-path-token"
GITHUB_TOKEN = "ghp_notify_test_token_0123456789"


@pytest.fixture(autouse=True)
def _fast(settings):
    settings.AGENTFLOW_NOTIFY_RETRY_BASE_SECONDS = 2.0
    settings.AGENTFLOW_NOTIFY_RETRY_CAP_SECONDS = 30.0
    settings.AGENTFLOW_NOTIFY_MAX_ATTEMPTS = 3
    settings.AGENTFLOW_NOTIFY_TIMEOUT_SECONDS = 3.0
    settings.AGENTFLOW_PUBLIC_URL = "http://127.0.0.1:8000"
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    with eager_celery():
        yield


def send(django_capture_on_commit_callbacks, event: notify.Event) -> Notification:
    """notify.send inside a transaction, as callers do; the records are written on commit."""
    before = Notification.objects.count()
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        notify.send(event)
        assert Notification.objects.count() == before  # nothing before the commit
    return Notification.objects.latest("created_at")


def event(kind: str = "alert.raised", **fields) -> notify.Event:
    return notify.Event(kind=kind, subject=fields.pop("subject", f"{kind} happened"), **fields)


def test_slack_gets_text_and_blocks_and_the_delivery_is_logged(django_capture_on_commit_callbacks):
    with receiver(200) as slack:
        channel = make_channel("ops slack", "slack", secret=slack.url + SLACK_PATH)
        n = send(
            django_capture_on_commit_callbacks,
            event(
                "stop.engaged", subject="Emergency stop engaged", text="by alice: *runaway*", link="/queue/"
            ),
        )
    (request,) = slack.requests
    assert request.path == SLACK_PATH and request.headers["content-type"] == "application/json"
    body = json.loads(request.body)
    assert body["text"] == "Emergency stop engaged — http://127.0.0.1:8000/queue/"
    assert body["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Emergency stop engaged", "emoji": True},
    }
    assert body["blocks"][1]["text"]["text"] == "by alice: *runaway*"
    assert "<http://127.0.0.1:8000/queue/|open in AgentFlow>" in body["blocks"][2]["elements"][0]["text"]
    d = Delivery.objects.get(notification=n, channel=channel)
    assert (d.status, d.attempts, d.response_status, d.response_body) == ("sent", 1, 200, "ok")
    assert d.sent_at is not None and d.duration_ms > 0 and d.next_attempt_at is None
    assert [line["status"] for line in d.history] == [200]


def test_a_webhook_is_signed_the_standard_webhooks_way(django_capture_on_commit_callbacks):
    secret = whsec()
    with receiver(200, answer=b'{"received": true}') as hook:
        channel = make_channel("hook", "webhook", url=hook.url + "/agentflow?source=test", secret=secret)
        n = send(django_capture_on_commit_callbacks, event("job.failed", level="error", data={"job": 7}))
    (request,) = hook.requests
    assert request.path == "/agentflow?source=test"
    payload = Webhook(secret).verify(request.body, request.headers)  # raises on a bad signature
    assert payload["type"] == "job.failed"
    assert payload["data"]["subject"] == "job.failed happened" and payload["data"]["data"] == {"job": 7}
    assert payload["data"]["level"] == "error" and payload["data"]["id"] == n.pk
    d = Delivery.objects.get(channel=channel)
    assert request.headers["webhook-id"] == d.webhook_id
    # the same body under another secret does not verify
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(whsec()).verify(request.body, request.headers)
    assert d.response_body == '{"received": true}'


def test_500_then_200_is_retried_with_backoff_and_the_log_shows_both(django_capture_on_commit_callbacks):
    secret = whsec()
    with receiver(500, 200) as hook:
        make_channel("flaky", "webhook", url=hook.url + "/in", secret=secret)
        started = timezone.now()
        send(django_capture_on_commit_callbacks, event())
        d = Delivery.objects.get()
        assert (d.status, d.attempts, d.response_status) == ("pending", 1, 500)
        assert d.error.endswith("HTTP 500 (server trouble)") and d.response_body == "server trouble"
        # full jitter: the first retry waits within [0, base] seconds
        assert started <= d.next_attempt_at <= timezone.now() + timedelta(seconds=2.0)
        assert delivery.attempt(d.pk, now=d.next_attempt_at - timedelta(milliseconds=1)) is None  # not due
        with time_machine.travel(d.next_attempt_at + timedelta(seconds=1)):
            assert delivery.redispatch_due(timezone.now() + timedelta(seconds=10)) == 1  # the tick's pass
        d.refresh_from_db()
    assert (d.status, d.attempts, d.response_status, d.error) == ("sent", 2, 200, "")
    assert [(line["n"], line["status"], line["result"]) for line in d.history] == [
        (1, 500, "retry"),
        (2, 200, "sent"),
    ]
    assert "HTTP 500" in d.history[0]["error"]
    # the retry is the same message: the same webhook-id, a valid signature each time
    first, second = hook.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == d.webhook_id
    Webhook(secret).verify(second.body, second.headers)


def test_a_receiver_that_is_down_fails_after_n_attempts_and_never_raises(
    django_capture_on_commit_callbacks, settings
):
    down = f"http://127.0.0.1:{free_port()}"
    make_channel("down", "slack", secret=down + SLACK_PATH)
    send(django_capture_on_commit_callbacks, event("provider.blocked"))  # no exception here
    d = Delivery.objects.get()
    waits = []
    while d.status == "pending":
        waits.append((d.next_attempt_at - d.last_attempt_at).total_seconds())
        with time_machine.travel(d.next_attempt_at + timedelta(milliseconds=10)):
            delivery.deliver(d.pk)
        d.refresh_from_db()
    assert (d.status, d.attempts, d.response_status) == ("failed", 3, None)
    assert len(waits) == 2 and 0 <= waits[0] <= 2.0 and 0 <= waits[1] <= 4.0  # base·2^(n-1), jittered
    assert "Connection refused" in d.error and d.error.startswith("POST http://127.0.0.1:")
    assert SLACK_PATH not in d.error and all(SLACK_PATH not in line["error"] for line in d.history)
    assert d.next_attempt_at is None
    assert delivery.attempt(d.pk) is None  # final: nothing more


def test_a_4xx_answer_is_final_at_once(django_capture_on_commit_callbacks):
    with receiver(404) as hook:
        make_channel("gone", "webhook", url=hook.url + "/nope", secret=whsec())
        send(django_capture_on_commit_callbacks, event())
    d = Delivery.objects.get()
    assert (d.status, d.attempts, d.response_status) == ("failed", 1, 404)


def test_a_github_thread_opens_an_issue_comments_and_closes_it(django_capture_on_commit_callbacks):
    with fake_github() as github:
        channel = make_channel(
            "issues",
            "github",
            repository="acme/ops",
            api_url=github.url,
            secret=GITHUB_TOKEN,
            events=list(notify.EVENTS),
        )
        thread = "provider-block:41"
        send(
            django_capture_on_commit_callbacks,
            event("provider.blocked", subject="provider x blocked", thread=thread),
        )
        (opened,) = github.requests
        assert (opened.method, opened.path) == ("POST", "/repos/acme/ops/issues")
        headers = {k.lower(): v for k, v in opened.headers.items()}
        assert headers["accept"] == "application/vnd.github+json"
        assert headers["x-github-api-version"] == "2022-11-28"
        assert headers["authorization"] == f"Bearer {GITHUB_TOKEN}"
        assert headers["content-type"] == "application/json"
        assert opened.body["title"] == "AgentFlow: provider x blocked"
        assert f"AgentFlow thread `{thread}`" in opened.body["body"]
        row = ChannelThread.objects.get(channel=channel, thread=thread)
        assert (row.issue_number, row.state) == (1, "open") and row.issue_url.endswith("/acme/ops/issues/1")
        d = Delivery.objects.get()
        assert d.response_status == 201 and "opened issue #1" in d.history[0]["note"]

        send(
            django_capture_on_commit_callbacks, event("alert.raised", subject="still blocked", thread=thread)
        )
        comment = github.requests[1]
        assert (comment.method, comment.path) == ("POST", "/repos/acme/ops/issues/1/comments")
        assert comment.body["body"].startswith("**Alert raised**: still blocked")

        send(
            django_capture_on_commit_callbacks,
            event("provider.restored", subject="x restored", thread=thread),
        )
        assert [(r.method, r.path) for r in github.requests[2:]] == [
            ("POST", "/repos/acme/ops/issues/1/comments"),
            ("PATCH", "/repos/acme/ops/issues/1"),
        ]
        assert github.requests[3].body == {"state": "closed", "state_reason": "completed"}
        assert github.issues[1]["state"] == "closed"
        assert ChannelThread.objects.get(pk=row.pk).state == "closed"
        assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}
        # an event of another thread opens its own issue
        send(django_capture_on_commit_callbacks, event("stop.engaged", thread="stop:3"))
        assert github.requests[-1].path == "/repos/acme/ops/issues" and len(github.issues) == 2


def test_an_issue_closed_on_github_is_seen_once_as_the_try_again_signal(django_capture_on_commit_callbacks):
    with fake_github() as github:
        make_channel("issues", "github", repository="acme/ops", api_url=github.url, secret=GITHUB_TOKEN)
        send(django_capture_on_commit_callbacks, event("provider.blocked", thread="provider-block:9"))
        assert delivery.thread_issue_closed("provider-block:9") is False
        github.close_issue(1)  # the operator closes it
        assert delivery.thread_issue_closed("provider-block:9") is True
        assert delivery.thread_issue_closed("provider-block:9") is False  # seen once
        assert github.of("GET")[-1].path == "/repos/acme/ops/issues/1"


def test_email_goes_to_the_channel_recipients(django_capture_on_commit_callbacks):
    make_channel("oncall", "email", recipients="ops@example.com,\nlead@example.com")
    send(
        django_capture_on_commit_callbacks,
        event("stop.released", subject="Stop released", text="released by bob", link="/queue/"),
    )
    (message,) = mail.outbox
    assert message.subject == "[AgentFlow] Stop released"
    assert message.to == ["ops@example.com", "lead@example.com"]
    assert "released by bob" in message.body and "http://127.0.0.1:8000/queue/" in message.body
    d = Delivery.objects.get()
    assert d.status == "sent" and d.response_body == "sent to 2 recipient(s)"


def test_a_channel_receives_only_the_events_and_levels_it_subscribes_to(django_capture_on_commit_callbacks):
    stops = make_channel(
        "stops", "email", recipients="a@example.com", events=["stop.engaged", "stop.released"]
    )
    every = make_channel("every", "email", recipients="b@example.com")
    loud = make_channel("loud", "email", recipients="c@example.com", min_level="error")
    make_channel("off", "email", recipients="d@example.com", enabled=False)
    send(django_capture_on_commit_callbacks, event("alert.raised", level="warning"))
    assert set(Delivery.objects.values_list("channel__name", flat=True)) == {"every"}
    send(django_capture_on_commit_callbacks, event("stop.engaged", level="critical"))
    latest = Notification.objects.latest("created_at")
    assert {d.channel for d in latest.deliveries.all()} == {stops, every, loud}
    assert sorted(m.to[0] for m in mail.outbox) == [
        "a@example.com",
        "b@example.com",
        "b@example.com",
        "c@example.com",
    ]


def test_no_channel_still_records_the_notification(django_capture_on_commit_callbacks):
    n = send(django_capture_on_commit_callbacks, event("job.failed", data={"run": 3}))
    assert n.kind == "job.failed" and n.data == {"run": 3} and not n.deliveries.exists()


def test_an_event_sent_in_a_rolled_back_transaction_is_not_recorded(django_capture_on_commit_callbacks):
    make_channel("every", "email", recipients="b@example.com")
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        notify.send(event())
        raise RuntimeError("the caller's work failed")
    assert not Notification.objects.exists() and not mail.outbox


def test_a_broken_channel_never_raises_into_the_caller(django_capture_on_commit_callbacks, caplog):
    channel = make_channel("hook", "webhook", url="http://127.0.0.1:9/x", secret=whsec())
    Channel.objects.filter(pk=channel.pk).update(url="not a url at all")  # past the form's checks
    send(django_capture_on_commit_callbacks, event())
    d = Delivery.objects.get()
    assert d.status == "pending" and "only http and https" in d.error


def test_the_test_action_sends_to_one_channel_and_is_audited(operator, viewer):
    with receiver(200) as slack:
        channel = make_channel("ops", "slack", secret=slack.url + SLACK_PATH, events=["job.failed"])
        make_channel("other", "slack", secret=slack.url + "/other")
        sent = delivery.send_test(audit.Actor.of_user(operator, source="web"), channel)
    assert sent.status == "sent" and sent.channel == channel and sent.notification.kind == notify.TEST
    assert len(slack.requests) == 1 and slack.requests[0].path == SLACK_PATH
    entry = AuditEntry.objects.get(action="notification.test")
    assert (entry.result, entry.target_label, entry.actor_label) == ("ok", "ops", operator.username)
    with pytest.raises(audit.Refused):
        delivery.send_test(audit.Actor.of_user(viewer, source="web"), channel)
    assert AuditEntry.objects.filter(action="notification.test", result="refused").count() == 1
    assert Delivery.objects.count() == 1


def test_a_failed_test_is_final_and_recorded_as_an_error(operator):
    channel = make_channel("down", "slack", secret=f"http://127.0.0.1:{free_port()}{SLACK_PATH}")
    sent = delivery.send_test(audit.Actor.of_user(operator, source="web"), channel)
    assert (sent.status, sent.attempts) == ("failed", 1)
    entry = AuditEntry.objects.get(action="notification.test")
    assert (
        entry.result == "error" and "Connection refused" in entry.message and SLACK_PATH not in entry.message
    )


def test_the_secret_is_encrypted_at_rest_and_never_logged_or_kept(django_capture_on_commit_callbacks, caplog):
    caplog.set_level(logging.DEBUG)
    with fake_github() as github:
        github.fail_with = 500
        channel = make_channel(
            "issues", "github", repository="acme/ops", api_url=github.url, secret=GITHUB_TOKEN
        )
        with receiver(500) as slack:
            make_channel("slack", "slack", secret=slack.url + SLACK_PATH)
            send(django_capture_on_commit_callbacks, event("stop.engaged"))
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM scheduler_channel WHERE id = %s", [channel.pk])
        (stored,) = cursor.fetchone()
    assert crypto.is_encrypted(stored) and GITHUB_TOKEN not in stored
    for d in Delivery.objects.all():
        text = json.dumps([d.error, d.response_body, d.history])
        assert GITHUB_TOKEN not in text and SLACK_PATH not in text and "s3cr3t" not in text
        assert d.status == "pending" and d.response_status == 500
    assert GITHUB_TOKEN not in caplog.text and SLACK_PATH not in caplog.text


def test_http_errors_name_the_host_only():
    assert http.redact("https://hooks.example.test/services/T/B/XYZ") == "https://hooks.example.test/…"
    assert http.redact("http://127.0.0.1:8080") == "http://127.0.0.1:8080/"
    with pytest.raises(http.Unreachable) as info:
        http.request("POST", f"http://127.0.0.1:{free_port()}/hook/tok3n?key=s3cret", body=b"{}", timeout=2)
    assert "tok3n" not in str(info.value) and "s3cret" not in str(info.value)
    with pytest.raises(http.Unreachable, match="only http and https"):
        http.request("GET", "file:///etc/passwd")
