"""End to end: a GitHub ``pull_request`` delivery, signed as GitHub signs it, POSTed over HTTP to a
real Daphne; the endpoint's job is an agent prompt on the real OpenClaw gateway (the session
fixture), taken by a real Celery worker and completed by the real fleet listener from the
gateway's events. The run's input and prompt come from the payload through the endpoint's
template; the delivery log row points at the run, which ends with the agent's reply."""

from __future__ import annotations

import http.client
import json
import uuid

import pytest

from agentflow.celery import app
from scheduler.models import Attempt, Job, Run
from tests.support.celery import celery_env, logs, start_worker
from tests.support.daphne import DaphneServer, live_env
from tests.support.factories import make_agent
from tests.support.gateway import STUB_REPLY, admin_client, wait_for
from tests.support.listening import listening
from tests.support.processes import stop_group
from tests.support.webhooks import new_secret, signed
from webhooks.models import Delivery, Endpoint

pytestmark = [pytest.mark.gateway, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

PROMPT = (
    'Review pull request #{{ input.pr }} "{{ input.title }}" in {{ input.repository }} ({{ input.diff_url }})'
)
INPUT = {
    "repository": "{{ payload.repository.full_name }}",
    "pr": "{{ payload.number }}",
    "title": "{{ payload.pull_request.title }}",
    "diff_url": "{{ payload.pull_request.diff_url }}",
    "author": "{{ payload.pull_request.user.login }}",
}


def pull_request(number: int, title: str) -> dict:
    """The fields of GitHub's pull_request "opened" payload that matter here, as GitHub nests them."""
    html = f"https://github.example.test/acme/app/pull/{number}"
    return {
        "action": "opened",
        "number": number,
        "pull_request": {
            "number": number,
            "title": title,
            "state": "open",
            "html_url": html,
            "diff_url": f"{html}.diff",
            "user": {"login": "octocat"},
            "head": {"ref": "feature/retries", "sha": "9f1c0de"},
            "base": {"ref": "main"},
        },
        "repository": {"full_name": "acme/app", "default_branch": "main"},
        "sender": {"login": "octocat"},
    }


def post(url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", path, body=body, headers={**headers, "User-Agent": "GitHub-Hookshot/e2e"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_a_signed_pull_request_over_http_runs_the_review_on_the_real_gateway(
    gateway_row, live_openclaw, own_queues, redis_prefix, tmp_path, client, operator
):
    make_agent(gateway_row, "main", model="stub/stub-model")
    job = Job(
        name="review-pr",
        kind="agent.prompt",
        params={"gateway": gateway_row.name, "agent": "main"},
        prompt_template=PROMPT,
        max_attempts=1,
        timeout_seconds=120,
    )
    job.full_clean()
    job.save()
    endpoint = Endpoint(
        slug="github-reviews",
        provider="github",
        secret=new_secret("github"),
        events=["github.pull_request"],
        filters={"action": "opened"},
        branch="main",
        job=job,
        input_template=INPUT,
    )
    endpoint.full_clean()
    endpoint.save()
    mark = uuid.uuid4().hex[:8]
    title = f"Retry the flaky upload {mark}"
    body = json.dumps(pull_request(4242, title)).encode()
    delivery_id = str(uuid.uuid4())
    headers = signed("github", endpoint.secret, body, delivery=delivery_id, event="pull_request")

    server = DaphneServer(live_env(), tmp_path / "daphne.log")
    worker = start_worker(
        celery_env(redis_prefix, app.conf.broker_url), tmp_path / "worker.log", redis_prefix
    )
    server.start()
    try:
        with listening():
            status, answer = post(server.url, endpoint.path, body, headers)
            assert status == 202, answer
            assert answer["status"] == "accepted"
            run = Run.objects.get(pk=answer["run"])

            def finished():
                run.refresh_from_db()
                return run.status in Run.FINAL

            try:
                wait_for(finished, 120, what=f"run {run.pk} to finish on the gateway")
            except AssertionError:
                raise AssertionError(logs(tmp_path)) from None
        # A resend of the same delivery (GitHub's "Redeliver" keeps the id) starts nothing.
        status, again = post(server.url, endpoint.path, body, headers)
        assert (status, again["status"], again["run"]) == (200, "duplicate", run.pk)
    finally:
        stop_group(worker)
        server.stop()

    assert run.status == Run.Status.SUCCEEDED, (run.error_class, run.error)
    assert (run.trigger, run.triggered_by, run.job_id) == ("webhook", "webhook github-reviews", job.pk)
    assert run.input == {
        "repository": "acme/app",
        "pr": "4242",
        "title": title,
        "diff_url": "https://github.example.test/acme/app/pull/4242.diff",
        "author": "octocat",
    }
    prompt = f'Review pull request #4242 "{title}" in acme/app (https://github.example.test/acme/app/pull/4242.diff)'
    assert run.prompt == prompt
    assert run.result == STUB_REPLY + prompt  # the stub model echoes what the gateway gave it
    # The gateway ran it: one model call with the templated prompt, in the attempt's session.
    assert sum(1 for a in live_openclaw.stub_server.arrivals() if mark in a.text) == 1
    attempt = Attempt.objects.get(run=run)
    with admin_client(live_openclaw) as gateway:
        history = gateway.call("chat.history", {"sessionKey": attempt.session_key})
    assert mark in json.dumps(history)

    # The delivery log: the accepted row links the run and its result; the resend points at it.
    accepted = Delivery.objects.get(endpoint=endpoint, verdict="accepted")
    assert (accepted.delivery_id, accepted.event, accepted.status_code) == (delivery_id, "pull_request", 202)
    assert accepted.pk == answer["delivery"] and accepted.run_id == run.pk
    assert accepted.run.result == run.result
    assert accepted.headers["x-hub-signature-256"].startswith("•••• masked")
    duplicate = Delivery.objects.get(endpoint=endpoint, verdict="duplicate")
    assert duplicate.run_id == run.pk
    client.force_login(operator)
    page = client.get(f"/triggers/webhooks/deliveries/{accepted.pk}/").content.decode()
    assert f'href="/runs/{run.pk}/"' in page and "succeeded" in page.lower()
