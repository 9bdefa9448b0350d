"""Duplicate deliveries that race: the same delivery (the same ``X-GitHub-Delivery``, the same Slack
``event_id`` with ``X-Slack-Retry-Num``) posted N times at once over real HTTP to two Daphne
processes (8 request threads each) on the test database. Whatever the interleaving, one copy is
accepted with one run and every other copy answers 200 duplicate pointing at that run. Runs on
SQLite (one writer at a time) and PostgreSQL (concurrent writers: the unique indexes decide)."""

from __future__ import annotations

import http.client
import json
import threading
import uuid
from collections import Counter

import pytest

from scheduler.models import Run
from tests.support.daphne import DaphneServer, live_env
from tests.support.webhooks import request_for
from tests.webhooks.conftest import make_endpoint
from webhooks.models import Delivery

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

COPIES = 12  # more than one server's 8 request threads, so copies also wait for a thread
ROUNDS = 6


@pytest.fixture
def servers(transactional_db, redis_prefix, own_queues, tmp_path):
    """Two web processes on the test database; the runs' wake-ups go to this test's queues."""
    started = []
    try:
        for n in (1, 2):
            server = DaphneServer(live_env(), tmp_path / f"daphne-{n}.log")
            server.start()
            started.append(server)
        yield started
    finally:
        for server in started:
            server.stop()


def post_at_once(
    servers: list[DaphneServer], path: str, copies: list[tuple[bytes, dict[str, str]]]
) -> list[tuple[int, dict]]:
    """Each copy on its own connection, alternating between the servers, all connected first and
    released together by a barrier; returns (status, JSON answer) per copy, in order."""
    barrier = threading.Barrier(len(copies))
    answers: list[tuple[int, dict] | BaseException | None] = [None] * len(copies)

    def send(i: int, body: bytes, headers: dict[str, str]) -> None:
        server = servers[i % len(servers)]
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            conn.connect()
            barrier.wait(timeout=30)
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            answers[i] = (response.status, json.loads(response.read() or b"{}"))
        except BaseException as exc:  # reported by the test, not lost in the thread
            answers[i] = exc
        finally:
            conn.close()

    threads = [
        threading.Thread(target=send, args=(i, body, headers)) for i, (body, headers) in enumerate(copies)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    problems = [a for a in answers if not isinstance(a, tuple)]
    assert not problems, problems
    return [a for a in answers if isinstance(a, tuple)]


def assert_one_run(endpoint, delivery_id: str, answers: list[tuple[int, dict]]) -> Run:
    statuses = Counter(status for status, _ in answers)
    assert statuses == {202: 1, 200: len(answers) - 1}, answers
    accepted = next(answer for status, answer in answers if status == 202)
    duplicates = [answer for status, answer in answers if status == 200]
    assert all(a["status"] == "duplicate" and a["run"] == accepted["run"] for a in duplicates), answers
    run = Run.objects.get(dedupe_key=f"webhook:{endpoint.pk}:{delivery_id}")
    assert run.pk == accepted["run"]
    rows = Delivery.objects.filter(endpoint=endpoint, delivery_id=delivery_id)
    assert Counter(rows.values_list("verdict", flat=True)) == {"accepted": 1, "duplicate": len(answers) - 1}
    assert set(rows.values_list("run_id", flat=True)) == {run.pk}  # every copy points at the one run
    assert rows.get(verdict="accepted").pk == accepted["delivery"]
    return run


def test_the_same_github_delivery_posted_concurrently_makes_one_run(servers, job):
    endpoint = make_endpoint(job, events=["pull_request"])
    for _ in range(ROUNDS):
        delivery = f"race-{uuid.uuid4()}"
        body, headers = request_for("github", endpoint.secret, delivery=delivery)
        answers = post_at_once(servers, endpoint.path, [(body, headers)] * COPIES)
        assert_one_run(endpoint, delivery, answers)
    assert Run.objects.count() == ROUNDS
    assert Delivery.objects.count() == ROUNDS * COPIES


def test_a_slack_event_and_its_retries_arriving_together_make_one_run(servers, job):
    endpoint = make_endpoint(job, provider="slack")
    for _ in range(ROUNDS):
        event_id = f"Ev{uuid.uuid4().hex[:12].upper()}"
        body, headers = request_for("slack", endpoint.secret, delivery=event_id)
        copies = [(body, headers)] + [
            (body, {**headers, "X-Slack-Retry-Num": str(n), "X-Slack-Retry-Reason": "http_timeout"})
            for n in range(1, COPIES)
        ]
        answers = post_at_once(servers, endpoint.path, copies)
        assert_one_run(endpoint, event_id, answers)
        retries = Delivery.objects.filter(delivery_id=event_id).exclude(retry=0)
        assert sorted(retries.values_list("retry", flat=True)) == list(range(1, COPIES))
    assert Run.objects.count() == ROUNDS


def test_different_deliveries_posted_concurrently_each_make_their_run(servers, job):
    """The other side of the claim: distinct ids at the same moment are never taken for copies."""
    endpoint = make_endpoint(job, events=["pull_request"])
    copies = [request_for("github", endpoint.secret, delivery=f"distinct-{i}") for i in range(COPIES)]
    answers = post_at_once(servers, endpoint.path, copies)
    assert [status for status, _ in answers] == [202] * COPIES, answers
    assert Run.objects.count() == COPIES
    assert set(Delivery.objects.values_list("verdict", flat=True)) == {"accepted"}
