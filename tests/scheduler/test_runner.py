"""scheduler.runner: every run ends as one BatchRun row, one log line and one metrics increment;
a batch never overlaps itself (Redis lock with expiry)."""

from __future__ import annotations

import logging
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentflow.lib.locks import lock
from agentflow.lib.redis import get_redis, key
from fleet import batches
from scheduler import runner
from scheduler.models import BatchRun
from scheduler.runner import Outcome, Skip
from tests.support.factories import make_gateway

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

SECRET_TOKEN = "runner-test-token-77a1c0"


@pytest.fixture
def gateway(db):
    return make_gateway("alpha", token=SECRET_TOKEN)


def ok(_gateway) -> Outcome:
    return Outcome("3 sessions, 1 changed", {"sessions": 3, "changed": 1})


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


# --- recording -----------------------------------------------------------------------------------


def test_it_records_every_run_with_its_duration_and_counts(redis_prefix, gateway):
    def slow(_gateway):
        time.sleep(0.02)
        return ok(_gateway)

    run = runner.run(batches.SESSION_POLLING, gateway, slow)
    assert run.pk is not None
    assert (run.batch, run.target_id, run.target_name, run.status, run.error) == (
        "BATCH-001",
        gateway.pk,
        gateway.name,
        "ok",
        "",
    )
    assert run.counts == {"sessions": 3, "changed": 1}
    assert run.duration_ms >= 20
    assert BatchRun.objects.get() == run


def test_it_records_a_skip_with_its_reason(redis_prefix, gateway):
    def unreachable(_gateway):
        raise Skip("gateway unreachable")

    run = runner.run(batches.CONFIG_POLLING, gateway, unreachable)
    assert run.status == BatchRun.Status.SKIPPED
    assert run.error == "gateway unreachable"


def test_it_records_an_error_and_the_process_keeps_going(redis_prefix, gateway, caplog):
    def broken(_gateway):
        raise RuntimeError("boom")

    failed = runner.run(batches.CHAT_POLLING, gateway, broken)
    assert failed.status == BatchRun.Status.ERROR
    assert failed.error == "RuntimeError: boom"
    assert "Traceback" in caplog.text  # the failure is logged with its traceback

    after = runner.run(batches.CHAT_POLLING, gateway, ok)  # the lock was released: the next run works
    assert after.status == BatchRun.Status.OK
    assert list(BatchRun.objects.values_list("status", flat=True).order_by("started_at")) == ["error", "ok"]


def test_it_keeps_long_error_texts_bounded(redis_prefix, gateway):
    def verbose(_gateway):
        raise ValueError("x" * 20_000)

    assert len(runner.run(batches.CHAT_POLLING, gateway, verbose).error) == 5000


def test_it_runs_a_global_batch_without_a_gateway(redis_prefix, db):
    run = runner.run(batches.HISTORY_CLEANUP, None, lambda _g: Outcome("config=0, chat=0", {"config": 0}))
    assert run.target_id is None and run.scope == "" and run.status == "ok"


def test_it_logs_one_line_in_the_design_wording(redis_prefix, gateway, caplog):
    caplog.set_level(logging.INFO, logger="agentflow.scheduler")
    runner.run(batches.SESSION_POLLING, gateway, ok)
    lines = [r.getMessage() for r in caplog.records if r.name == "agentflow.scheduler"]
    assert len(lines) == 1
    assert lines[0].startswith("[BATCH-001] Session polling: 3 sessions, 1 changed gateway=alpha (")
    assert lines[0].endswith("ms)")
    assert SECRET_TOKEN not in caplog.text


def test_it_logs_skips_and_errors_with_their_batch_id(redis_prefix, gateway, caplog):
    caplog.set_level(logging.INFO, logger="agentflow.scheduler")

    def unreachable(_gateway):
        raise Skip("timed out")

    def broken(_gateway):
        raise RuntimeError("boom")

    runner.run(batches.HEALTH_CHECK, gateway, unreachable)
    runner.run(batches.CONFIG_POLLING, gateway, broken)
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "agentflow.scheduler"]
    assert (logging.INFO, "[BATCH-005] Health check: skipped (timed out) gateway=alpha") in [
        (level, text.rsplit(" (", 1)[0]) for level, text in messages
    ]
    errors = [text for level, text in messages if level == logging.ERROR]
    assert any(text.startswith("[BATCH-002] Config polling: error: boom gateway=alpha") for text in errors)


# --- never overlapping ----------------------------------------------------------------------------


def test_it_skips_a_run_while_the_previous_one_holds_the_lock(redis_prefix, gateway):
    calls = []
    with lock(batches.SESSION_POLLING, gateway.pk, 60) as acquired:
        assert acquired
        run = runner.run(batches.SESSION_POLLING, gateway, lambda g: calls.append(g) or ok(g))
    assert calls == []
    assert run.status == BatchRun.Status.SKIPPED
    assert run.counts == {"reason": "locked"}
    assert run.error == "previous run still holds the lock"


def test_it_skips_a_run_started_from_inside_the_same_batch(redis_prefix, gateway):
    inner = []

    def outer(g):
        inner.append(runner.run(batches.SESSION_POLLING, g, ok))
        return ok(g)

    run = runner.run(batches.SESSION_POLLING, gateway, outer)
    assert run.status == "ok"
    assert inner[0].status == "skipped"


def test_the_lock_is_per_batch_and_per_gateway(redis_prefix, gateway):
    other = make_gateway("beta")
    with lock(batches.SESSION_POLLING, gateway.pk, 60):
        assert runner.run(batches.SESSION_POLLING, other, ok).status == "ok"
        assert runner.run(batches.CONFIG_POLLING, gateway, ok).status == "ok"
        assert runner.run(batches.SESSION_POLLING, gateway, ok).status == "skipped"


def test_it_releases_the_lock_after_a_run_even_when_it_failed(redis_prefix, gateway):
    def broken(_gateway):
        raise RuntimeError("boom")

    runner.run(batches.SESSION_POLLING, gateway, broken)
    assert not get_redis().exists(key("lock", batches.SESSION_POLLING, gateway.pk))
    with lock(batches.SESSION_POLLING, gateway.pk, 60) as acquired:
        assert acquired


def test_the_lock_expires_so_a_dead_worker_cannot_block_the_batch_forever(redis_prefix, gateway):
    name = key("lock", batches.SESSION_POLLING, gateway.pk)
    get_redis().set(name, "a-worker-that-died", px=300)
    assert runner.run(batches.SESSION_POLLING, gateway, ok).status == "skipped"
    time.sleep(0.4)
    assert runner.run(batches.SESSION_POLLING, gateway, ok).status == "ok"


def test_the_lock_is_taken_with_the_given_expiry(redis_prefix, gateway):
    name = key("lock", "BATCH-004", "global")
    with lock("BATCH-004", "global", 3600) as acquired:
        assert acquired
        assert 3590 < get_redis().ttl(name) <= 3600
    assert not get_redis().exists(name)


def test_a_run_that_outlived_its_lock_never_frees_the_next_holders_lock(redis_prefix, gateway):
    name = key("lock", batches.SESSION_POLLING, gateway.pk)
    with lock(batches.SESSION_POLLING, gateway.pk, 60) as acquired:
        assert acquired
        get_redis().set(name, "the-next-run")  # ours expired and another run took the lock
    assert get_redis().get(name) == b"the-next-run"


# --- metrics --------------------------------------------------------------------------------------


def test_it_counts_runs_errors_and_durations_for_metrics(redis_prefix, gateway, client):
    def broken(_gateway):
        raise RuntimeError("boom")

    def unreachable(_gateway):
        raise Skip("down")

    runner.run(batches.SESSION_POLLING, gateway, ok)
    runner.run(batches.SESSION_POLLING, gateway, ok)
    runner.run(batches.SESSION_POLLING, gateway, broken)
    runner.run(batches.HEALTH_CHECK, gateway, unreachable)

    response = client.get("/metrics")
    assert response.status_code == 200
    body = response.content.decode()
    values = samples(body)
    assert values[("batch_execution_count_total", (("batch", "BATCH-001"), ("status", "ok")))] == 2
    assert values[("batch_execution_count_total", (("batch", "BATCH-001"), ("status", "error")))] == 1
    assert values[("batch_execution_count_total", (("batch", "BATCH-005"), ("status", "skipped")))] == 1
    assert values[("batch_error_count_total", (("batch", "BATCH-001"),))] == 1
    # A batch that never failed is exported at zero (alert rules see the series before the first error).
    assert values[("batch_error_count_total", (("batch", "BATCH-005"),))] == 0
    assert values[("batch_execution_duration_seconds_count", (("batch", "BATCH-001"),))] == 3
    assert values[("batch_execution_duration_seconds_bucket", (("batch", "BATCH-001"), ("le", "+Inf")))] == 3
    assert values[("batch_execution_duration_seconds_bucket", (("batch", "BATCH-001"), ("le", "60.0")))] == 3
    assert 0 < values[("batch_execution_duration_seconds_sum", (("batch", "BATCH-001"),))] < 10
    assert "# TYPE batch_execution_duration_seconds histogram" in body
    assert SECRET_TOKEN not in body


def test_buckets_are_cumulative(redis_prefix, gateway, client):
    def slow(_gateway):
        time.sleep(0.03)
        return ok(_gateway)

    runner.run(batches.CHAT_POLLING, gateway, ok)
    runner.run(batches.CHAT_POLLING, gateway, slow)
    values = samples(client.get("/metrics").content.decode())

    def bucket(le: str) -> float:
        return values[("batch_execution_duration_seconds_bucket", (("batch", "BATCH-003"), ("le", le)))]

    assert bucket("0.025") <= 1  # the slow run is not under 25 ms
    assert bucket("0.05") == 2
    assert bucket("0.005") <= bucket("0.01") <= bucket("0.025") <= bucket("0.05") <= bucket("+Inf")
