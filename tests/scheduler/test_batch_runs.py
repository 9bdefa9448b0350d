"""The five batches through the runs table (scheduler/batch_runs.py): every batch execution is a
Run of kind ``batch`` next to its BatchRun, on its own path (never behind the queue's backlog),
lost with it; one undeletable system job per batch."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from fleet import batches
from scheduler import batch_runs, queue, runner, tick
from scheduler.models import Attempt, BatchRun, Job, Run
from scheduler.runner import Outcome, Skip
from tests.support.factories import make_gateway

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

BATCH_IDS = ("BATCH-001", "BATCH-002", "BATCH-003", "BATCH-004", "BATCH-005")


def test_the_system_jobs_exist_after_migrate_and_cannot_be_deleted(admin_client):
    jobs = {j.name: j for j in Job.objects.filter(system=True)}
    assert set(jobs) >= {b.lower() for b in BATCH_IDS}
    polling = jobs["batch-001"]
    assert (polling.kind, polling.params, polling.on_error) == ("batch", {"batch": "BATCH-001"}, "nothing")
    with pytest.raises(ValidationError, match="system job"):
        polling.delete()
    # The admin refuses too: no delete link, and the bulk action leaves system jobs alone.
    page = admin_client.get(f"/admin/scheduler/job/{polling.pk}/delete/")
    assert page.status_code == 403
    admin_client.post(
        "/admin/scheduler/job/",
        {"action": "delete_selected", "_selected_action": [polling.pk], "post": "yes"},
    )
    assert Job.objects.filter(pk=polling.pk).exists()


def test_a_batch_run_is_a_run_of_kind_batch_on_the_api_and_the_runs_page(redis_prefix, client, operator):
    gateway = make_gateway("alpha")
    record = runner.run(batches.SESSION_POLLING, gateway, lambda _g: Outcome("12 sessions", {"sessions": 12}))
    run = Run.objects.get()
    assert record.run_id == run.pk
    assert (run.kind, run.job_name, run.status, run.trigger) == (
        "batch",
        "batch-001",
        "succeeded",
        "schedule",
    )
    assert run.params == {"batch": "BATCH-001", "scope": "gateway", "target_id": gateway.pk}
    assert run.result == "12 sessions · 12 sessions" and run.attempts == 1
    assert run.started_at is not None and run.finished_at >= run.started_at
    attempt = Attempt.objects.get(run=run)
    assert (attempt.status, attempt.worker) == ("succeeded", record.worker)

    client.force_login(operator)
    listed = client.get("/api/v1/runs/", {"job": "batch-001"})
    assert listed.status_code == 200
    [shown] = listed.json()["results"]
    assert (shown["id"], shown["status"]) == (run.pk, "succeeded")
    page = client.get("/runs/", {"kind": "batch"})  # successful batch runs are hidden by default
    assert page.status_code == 200 and f"/runs/{run.pk}/" in page.content.decode()
    assert f"/runs/{run.pk}/" not in client.get("/runs/").content.decode()
    assert client.get(f"/runs/{run.pk}/").status_code == 200


def test_errors_and_skips_settle_the_run_and_a_locked_skip_writes_none(redis_prefix):
    def broken(_t):
        raise RuntimeError("database on fire")

    def nothing(_t):
        raise Skip("no open panel")

    runner.run(batches.HEALTH_CHECK, make_gateway("a"), broken)
    runner.run(batches.CHAT_POLLING, make_gateway("b"), nothing)
    failed, skipped = Run.objects.order_by("id")
    assert (failed.status, failed.error_class) == ("failed", "system")
    assert "database on fire" in failed.error
    assert (skipped.status, skipped.result) == ("succeeded", "skipped (no open panel)")

    from agentflow.lib.locks import lease

    with lease(batches.HISTORY_CLEANUP, "global", 30) as held:
        assert held.acquired
        record = runner.run(batches.HISTORY_CLEANUP, None, lambda _t: Outcome("never", {}))
    assert record.status == "skipped" and record.run_id is None
    assert Run.objects.count() == 2


def test_a_backlog_of_queued_runs_does_not_delay_a_batch_run(redis_prefix):
    """1,000 normal runs queued and the queue paused: the batch still runs at once, outside the
    wheel, and the queue never claims a batch run."""
    now = timezone.now()
    Run.objects.bulk_create(
        [Run(kind="noop", params={}, status="queued", queued_at=now, gateway="g") for _ in range(1000)]
    )
    from scheduler.models import QueuePause

    QueuePause.objects.create(scope="all", who="test")  # and everything is paused
    record = runner.run(batches.HISTORY_CLEANUP, None, lambda _t: Outcome("0 rows", {}))
    assert record.status == "ok"
    assert Run.objects.get(kind="batch").status == "succeeded"
    assert Run.objects.filter(status="queued").count() == 1000
    QueuePause.objects.all().delete()
    claimed = queue.claim_next("w:1")
    assert claimed is not None and claimed[0].kind == "noop"  # the backlog's oldest, never a batch


def test_a_lost_batch_run_makes_its_run_lost(redis_prefix, settings):
    settings.AGENTFLOW_BATCH_LEASE_SECONDS = 2
    started = timezone.now() - timedelta(seconds=10)
    run, attempt = batch_runs.open_run(
        batches.HISTORY_CLEANUP,
        scope="",
        target_id=None,
        target_name="",
        worker="host-a:4242",
        started_at=started,
        trigger="schedule",
        timeout_seconds=600,
    )
    BatchRun.objects.create(
        batch=batches.HISTORY_CLEANUP,
        status="running",
        started_at=started,
        heartbeat_at=started,
        worker="host-a:4242",
        lock_token="dead",
        run=run,
    )
    [lost] = runner.mark_lost()
    run.refresh_from_db()
    attempt.refresh_from_db()
    assert (run.status, run.error_class, attempt.status) == ("lost", "system", "lost")
    assert run.error == lost.error and run.finished_at is not None
    assert not batch_runs.lose(run.pk, "again")  # once


def test_the_tick_loses_a_batch_run_whose_worker_died_and_the_runner_keeps_it_lost(redis_prefix, settings):
    settings.AGENTFLOW_WORKER_LEASE_SECONDS = 1
    run, attempt = batch_runs.open_run(
        batches.HISTORY_CLEANUP,
        scope="",
        target_id=None,
        target_name="",
        worker="host-gone:1",  # no liveness key
        started_at=timezone.now() - timedelta(seconds=5),
        trigger="schedule",
        timeout_seconds=600,
    )
    assert tick.mark_dead_workers_lost(timezone.now()) == 1
    run.refresh_from_db()
    assert run.status == "lost"


def test_a_live_batch_run_is_not_lost_by_the_tick(redis_prefix, settings):
    settings.AGENTFLOW_WORKER_LEASE_SECONDS = 1
    seen = []

    def slow(_t):
        import time

        time.sleep(1.5)
        seen.append(tick.mark_dead_workers_lost(timezone.now() + timedelta(seconds=1)))
        return Outcome("done", {})

    runner.run(batches.HISTORY_CLEANUP, None, slow)
    assert seen == [0]
    assert Run.objects.get().status == "succeeded"


def test_run_now_of_a_system_job_runs_the_batch_through_the_queue(redis_prefix):
    queued = queue.enqueue("batch-004", trigger="user", triggered_by="op")
    assert queued.status == "queued" and queued.priority == "high"
    started = queue.start_next("w:1")
    assert started is not None and started.pk == queued.pk
    queued.refresh_from_db()
    assert queued.status == "succeeded" and queued.result.startswith("config=0, chat=0")
    record = BatchRun.objects.get()  # the real cleanup ran, linked to the queued run
    assert (record.run_id, record.status, record.counts["config"]) == (queued.pk, "ok", 0)
    assert Run.objects.count() == 1


def test_bad_batch_params_are_refused_clearly():
    with pytest.raises(ValidationError, match="unknown batch 'BATCH-999'"):
        queue.enqueue(kind="batch", params={"batch": "BATCH-999"})
    with pytest.raises(ValidationError, match="global batch"):
        queue.enqueue(kind="batch", params={"batch": "BATCH-004", "target_id": 3})
    assert not Run.objects.exists()


def test_retention_deletes_old_batch_runs_with_their_batch_run_rows(redis_prefix, settings):
    old = timezone.now() - timedelta(days=settings.AGENTFLOW_BATCH_RUN_RETENTION_DAYS + 1)
    runner.run(batches.HISTORY_CLEANUP, None, lambda _t: Outcome("x", {}))
    Run.objects.update(queued_at=old)
    BatchRun.objects.update(started_at=old)
    keep = queue.enqueue(kind="noop")
    Run.objects.filter(pk=keep.pk).update(queued_at=old)
    batches.cleanup_history(None)
    assert list(Run.objects.values_list("pk", flat=True)) == [keep.pk]  # not a batch: kept
    assert not Attempt.objects.filter(run__kind="batch").exists()
