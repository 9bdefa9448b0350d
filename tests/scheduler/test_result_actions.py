"""What happens with a run's result (scheduler/results.py): a job's result actions on success and
on failure, against real local receivers (a Slack-shaped webhook, the GitHub-shaped API of
tests/support/github.py), retried, logged (the automation log) and recorded per run."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from agentflow.lib import eventlog
from scheduler import queue, results
from scheduler.models import Delivery, Job, ResultAction, ResultDelivery, Run
from tests.support.github import fake_github
from tests.support.receivers import eager_celery, make_channel, receiver

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

WORKER = "test:1"
TOKEN = "ghp_result_test_token_0123456789"
PR_PAYLOAD = {
    "action": "opened",
    "number": 7,
    "pull_request": {"number": 7, "title": "Add the thing"},
    "repository": {"full_name": "acme/widgets"},
}


@pytest.fixture(autouse=True)
def _setup(redis_prefix, settings):
    settings.AGENTFLOW_NOTIFY_RETRY_BASE_SECONDS = 2.0
    settings.AGENTFLOW_NOTIFY_MAX_ATTEMPTS = 3
    settings.AGENTFLOW_NOTIFY_TIMEOUT_SECONDS = 3.0
    settings.AGENTFLOW_RESULT_MAX_ATTEMPTS = 3
    settings.AGENTFLOW_GITHUB_TOKEN = TOKEN
    settings.AGENTFLOW_GITHUB_TIMEOUT_SECONDS = 3.0
    with eager_celery():
        yield


def job(name: str = "morning_report", fail: str = "", **fields) -> Job:
    params = {"fail": fail} if fail else {}
    return Job.objects.create(
        name=name,
        kind="noop",
        params=params,
        prompt_template=fields.pop("prompt", "All good today."),
        **fields,
    )


def finish(capture, the_job: Job, input=None) -> Run:
    """Queue a run of the job and run it in this process; its result actions go on commit."""
    with capture(execute=True):
        run = queue.enqueue(the_job, input=input)
    with capture(execute=True):
        queue.start_next(WORKER)
    run.refresh_from_db()
    assert run.is_final
    return run


def test_success_delivers_the_reply_to_a_slack_channel_and_failure_actions_wait(
    django_capture_on_commit_callbacks,
):
    with receiver(200) as slack:
        channel = make_channel("reports", "slack", secret=slack.url + "/services/T0/B0/secretpath")
        report = job()
        ResultAction.objects.create(job=report, when="success", kind="channel", channel=channel)
        other = Job.objects.create(name="on_fail", kind="noop")
        ResultAction.objects.create(job=report, when="failure", kind="run_job", target_job=other)
        run = finish(django_capture_on_commit_callbacks, report)
    assert run.status == "succeeded"
    (request,) = slack.requests
    body = json.loads(request.body)
    assert body["blocks"][0]["text"]["text"] == f"morning_report: run {run.pk} succeeded"
    assert body["blocks"][1]["text"]["text"] == "All good today."
    (row,) = ResultDelivery.objects.filter(run=run)
    assert (row.kind, row.when, row.status, row.target) == ("channel", "success", "sent", "channel reports")
    assert row.notification_delivery is not None and row.notification_delivery.status == Delivery.Status.SENT
    assert row.shown_status == "sent"
    assert not Run.objects.filter(job=other).exists()


def test_failure_runs_another_job_with_the_error_as_input_and_a_chain_stops(
    django_capture_on_commit_callbacks,
):
    broken = job("broken", fail="invalid_request")
    handler = job("handler")
    ResultAction.objects.create(job=broken, when="failure", kind="run_job", target_job=handler)
    ResultAction.objects.create(job=broken, when="success", kind="run_job", target_job=handler)
    # A loop: the handler's success runs its partner, whose success runs the handler again...
    partner = job("partner")
    ResultAction.objects.create(job=handler, when="success", kind="run_job", target_job=partner)
    ResultAction.objects.create(job=partner, when="success", kind="run_job", target_job=handler)
    run = finish(django_capture_on_commit_callbacks, broken)  # eager Celery: the chain runs now
    assert run.status == "failed"
    (row,) = ResultDelivery.objects.filter(run=run)
    assert row.status == "sent" and row.started_run is not None
    started = row.started_run
    assert started.job == handler and started.triggered_by == f"result of run {run.pk}"
    assert started.input == {
        "result": "",
        "error": run.error,
        "status": "failed",
        "job": "broken",
        "from_run": run.pk,
        "depth": 1,
    }
    # ...until the chain is MAX_DEPTH runs deep.
    assert Run.objects.filter(job__in=[handler, partner]).count() == results.MAX_DEPTH
    skipped = ResultDelivery.objects.get(status="skipped")
    assert "deeper than 5" in skipped.note


def test_a_review_is_posted_as_a_pr_comment_and_retried_after_a_500(
    django_capture_on_commit_callbacks, settings
):
    review = job("review_pr", prompt="Looks fine: {{ input.payload.pull_request.title }}.")
    ResultAction.objects.create(job=review, when="success", kind="github_comment")
    with fake_github() as github:
        settings.AGENTFLOW_GITHUB_API_URL = github.url
        github.issues[7] = {"number": 7, "state": "open", "title": "Add the thing"}
        github.fail_with = 500
        run = finish(django_capture_on_commit_callbacks, review, input={"payload": PR_PAYLOAD})
        row = ResultDelivery.objects.get(run=run)
        assert row.status == "pending" and row.attempts == 1 and row.response_status == 500
        assert row.history[0]["result"] == "retry" and "HTTP 500" in row.error
        assert TOKEN not in row.error
        github.fail_with = None
        later = timezone.now() + timedelta(minutes=5)
        assert results.attempt(row.pk, now=later) is None
    row.refresh_from_db()
    assert (row.status, row.attempts, row.response_status) == ("sent", 2, 201)
    assert row.note == "commented on acme/widgets#7"
    post = github.of("POST")[-1]
    assert post.path == "/repos/acme/widgets/issues/7/comments"
    assert post.headers["Authorization"] == f"Bearer {TOKEN}"
    assert post.body["body"].startswith("Looks fine: Add the thing.")
    assert f"run [{run.pk}]" in post.body["body"]


def test_a_comment_without_a_pr_is_skipped_and_a_4xx_is_final(django_capture_on_commit_callbacks, settings):
    review = job("review_pr")
    ResultAction.objects.create(job=review, when="success", kind="github_comment")
    run = finish(django_capture_on_commit_callbacks, review, input={"path": "/tmp/x.pdf"})
    row = ResultDelivery.objects.get(run=run)
    assert row.status == "skipped" and "names no GitHub repository" in row.note
    with fake_github() as github:
        settings.AGENTFLOW_GITHUB_API_URL = github.url  # issue 7 does not exist there: 404
        run = finish(django_capture_on_commit_callbacks, review, input=PR_PAYLOAD)
    row = ResultDelivery.objects.get(run=run)
    assert (row.status, row.attempts, row.response_status) == ("failed", 1, 404)


def test_the_payload_shapes_a_webhook_run_may_carry():
    assert results.github_target(PR_PAYLOAD) == ("acme/widgets", 7)
    assert results.github_target({"body": json.dumps(PR_PAYLOAD)}) == ("acme/widgets", 7)
    issue = {"issue": {"number": 3}, "repository": {"full_name": "a/b"}}
    assert results.github_target({"payload": issue}) == ("a/b", 3)
    assert results.github_target({"repository": {"full_name": "a/b"}}) is None
    assert results.github_target("text") is None


def test_the_tick_resends_a_delivery_whose_message_was_lost(settings):
    report = job()
    run = Run.objects.create(job=report, job_name=report.name, kind="noop", status="succeeded", result="x")
    handler = job("handler")
    action = ResultAction.objects.create(job=report, when="success", kind="run_job", target_job=handler)
    old = timezone.now() - timedelta(seconds=settings.AGENTFLOW_REDISPATCH_AFTER_SECONDS + 5)
    row = ResultDelivery.objects.create(
        run=run, action=action, kind="run_job", when="success", next_attempt_at=old
    )
    assert results.redispatch_due(timezone.now()) == 1
    row.refresh_from_db()
    assert row.status == "sent" and Run.objects.filter(job=handler).count() == 1
    assert results.redispatch_due(timezone.now()) == 0


def test_a_second_signal_records_nothing_twice(django_capture_on_commit_callbacks):
    report = job()
    ResultAction.objects.create(job=report, when="success", kind="run_job", target_job=job("handler"))
    run = finish(django_capture_on_commit_callbacks, report)
    results.record(run)
    assert ResultDelivery.objects.filter(run=run).count() == 1


def test_runs_and_their_results_are_in_the_automation_log(django_capture_on_commit_callbacks):
    report = job()
    ResultAction.objects.create(job=report, when="success", kind="run_job", target_job=job("handler"))
    run = finish(django_capture_on_commit_callbacks, report)
    lines = eventlog.read(50, run=run.pk)
    assert [line["event"] for line in lines] == ["run.queued", "run.started", "run.finished", "result.sent"]
    assert lines[2]["status"] == "succeeded" and lines[3]["action"] == "run_job"
    out = StringIO()
    call_command("automation", "logs", "--job", "morning_report", stdout=out)
    text = out.getvalue()
    assert f"run.finished run_id={run.pk} job=morning_report status=succeeded" in text
    assert "job=handler" not in text
    out = StringIO()
    call_command("automation", "logs", "--json", "-n", "1", stdout=out)
    (newest,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert newest["id"] == eventlog.last_id() and {"ts", "event", "run_id", "job"} <= set(newest)


def test_the_runs_page_shows_each_delivery(django_capture_on_commit_callbacks, client, viewer):
    from tests.support.html import dom

    with receiver(500) as slack:
        channel = make_channel("reports", "slack", secret=slack.url + "/services/T0/B0/secretpath")
        report = job()
        ResultAction.objects.create(job=report, when="success", kind="channel", channel=channel)
        ResultAction.objects.create(job=report, when="success", kind="github_comment")
        run = finish(django_capture_on_commit_callbacks, report, input={"path": "x"})
    client.force_login(viewer)
    table = dom(client.get(f"/runs/{run.pk}/")).find("table", id="result-deliveries")
    rows = [" ".join(r.text.split()) for r in table.find_all("tr")[1:]]
    assert len(rows) == 2
    assert "Deliver to a notification channel (channel reports)" in rows[0] and "Pending" in rows[0]
    assert "HTTP 500" in rows[0] and "delivery log" in rows[0]
    assert "Comment on the GitHub PR or issue" in rows[1] and "Skipped" in rows[1]
    assert "names no GitHub repository" in rows[1]


def test_a_chain_runs_in_eager_celery_whatever_the_brokers_lists_hold(
    django_capture_on_commit_callbacks, settings
):
    """Eager Celery puts nothing on the broker, so stale messages left in a priority's list (by
    earlier processes) must not make the wake-up think enough dispatches already wait."""
    from agentflow.lib.redis import get_redis

    settings.AGENTFLOW_DISPATCH_PENDING_MAX = 2
    settings.CELERY_BROKER_URL = settings.REDIS_URL
    first = job("first")
    second = job("second")
    ResultAction.objects.create(job=first, when="success", kind="run_job", target_job=second)
    stale = [f"stale-{n}-not-a-message" for n in range(3)]
    lists = [queue.queue_name(p) for p in ("urgent", "high", "normal", "low", "scheduled")]
    redis = get_redis()
    for name in lists:
        redis.rpush(name, *stale)
    try:
        finish(django_capture_on_commit_callbacks, first)
        (chained,) = Run.objects.filter(job=second)
        assert chained.is_final and chained.status == "succeeded"
    finally:
        for name in lists:
            for item in stale:
                redis.lrem(name, 0, item)
