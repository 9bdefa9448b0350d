"""bench_webhooks' own checks, which decide its "0 lost, 0 duplicated": they must see a lost
delivery, a second run and a wrong answer when there is one. The sends it builds verify as
GitHub deliveries, and its resends repeat a delivery sent about a second earlier."""

from __future__ import annotations

import pytest

from bench import bench_webhooks as bench
from scheduler import queue
from scheduler.models import Job, Run
from tests.webhooks.conftest import make_endpoint
from webhooks import intake
from webhooks.models import Delivery
from webhooks.providers import PROVIDERS, Incoming

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


@pytest.fixture(autouse=True)
def _isolated(redis_prefix):
    return redis_prefix


def test_the_sends_are_signed_github_deliveries_and_resends_repeat_an_earlier_one():
    deliveries = bench.Deliveries("s3cret", rate=20, seconds=10, tag="t")
    assert (
        deliveries.total == 200 and deliveries.resends == 8
    )  # one in 25 (from the 25th: after the first second)
    assert deliveries.count + deliveries.resends == deliveries.total
    seen: dict[str, int] = {}
    for i in range(deliveries.total):
        body, headers, delivery, resend = deliveries.request(i)
        lowered = {k.lower(): v for k, v in headers.items()}
        verified = PROVIDERS["github"].verify(Incoming(lowered, body, "application/json"), ["s3cret"], 0)
        assert (verified.delivery_id, verified.event) == (delivery, "pull_request")
        assert abs(len(body) - bench.BODY_BYTES) < 100
        if resend:
            assert i - seen[delivery] >= 20  # first sent at least a second (20 sends) before
        else:
            assert delivery not in seen
            seen[delivery] = i
    assert len(seen) == deliveries.count


def test_the_answer_check_wants_one_202_per_delivery_and_200_duplicate_for_the_rest():
    ok = [("202", "accepted", "a", False, 1.0, 1.0), ("200", "duplicate", "a", True, 1.0, 1.0)]
    assert bench.check_answers(ok) == {
        "answered_duplicate": 1,
        "ids_answered_wrong": 0,
        "errors": 0,
        "resends_answered_duplicate": 1,
    }
    twice = [("202", "accepted", "a", False, 1.0, 1.0), ("202", "accepted", "a", True, 1.0, 1.0)]
    assert bench.check_answers(twice)["ids_answered_wrong"] == 1
    failed = [("503", "error", "b", False, 1.0, 1.0), ("ConnectionResetError", "", "c", False, 1.0, 1.0)]
    assert bench.check_answers(failed) == {
        "answered_duplicate": 0,
        "ids_answered_wrong": 2,
        "errors": 2,
        "resends_answered_duplicate": 0,
    }


def deliver(endpoint, deliveries: bench.Deliveries, i: int) -> int:
    body, headers, _, _ = deliveries.request(i)
    outcome = intake.receive(endpoint.slug, headers, lambda n: body[:n], content_length=len(body))
    return outcome.status


def test_the_database_check_counts_lost_deliveries_and_second_runs():
    job = Job.objects.create(name="bench-check", kind="noop")
    endpoint = make_endpoint(job, slug=bench.SLUG, events=["pull_request"], input_template=bench.INPUT)
    deliveries = bench.Deliveries(endpoint.secret, rate=5, seconds=2, tag="c")
    statuses = [deliver(endpoint, deliveries, i) for i in range(deliveries.total)]
    assert statuses == [202] * 10
    expected = {deliveries.delivery_id(n) for n in range(deliveries.count)}
    clean = bench.check_database(endpoint.pk, expected, deliveries.total)
    assert (clean["lost"], clean["duplicated"], clean["runs"], clean["requests_not_recorded"]) == (
        0,
        0,
        10,
        0,
    )

    # A delivery recorded but its run gone is lost; one never received is lost too.
    Run.objects.filter(dedupe_key=f"webhook:{endpoint.pk}:{deliveries.delivery_id(3)}").delete()
    assert bench.check_database(endpoint.pk, expected | {"never-sent"}, deliveries.total)["lost"] == 2
    # A second run for one delivery id (the first finished, so the dedupe key was free again).
    key = f"webhook:{endpoint.pk}:{deliveries.delivery_id(4)}"
    Run.objects.filter(dedupe_key=key).update(status="succeeded")
    queue.enqueue(job, dedupe_key=key, trigger=Run.Trigger.WEBHOOK)
    assert bench.check_database(endpoint.pk, expected, deliveries.total)["duplicated"] == 1
    # A request with no delivery row.
    Delivery.objects.filter(delivery_id=deliveries.delivery_id(5)).delete()
    assert bench.check_database(endpoint.pk, expected, deliveries.total)["requests_not_recorded"] == 1
