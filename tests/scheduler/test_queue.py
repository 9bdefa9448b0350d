"""The execution queue with the real database and Redis (no worker: the domain functions
directly): claims, the selection policy, scheduled runs, pauses, limits, retries by error
class, completion, the tick's timeouts and dead workers."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import OperationalError, connection
from django.utils import timezone

from scheduler import actions, errors, queue, tick, workers
from scheduler.actions import ActionSpec, Finished, Started
from scheduler.models import Alert, Attempt, Job, QueuePause, Run

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

WORKER = "test-host:1"


@pytest.fixture(autouse=True)
def _isolated(redis_prefix):
    """The wheel position and the starved flag live in Redis: this test's own."""
    return redis_prefix


def noop(priority: str = "normal", **params) -> Run:
    return queue.enqueue(kind="noop", params=params, priority=priority)


def claim_all() -> list[Run]:
    claimed = []
    while (got := queue.claim_next(WORKER)) is not None:
        claimed.append(got[0])
    return claimed


# --- enqueue ---------------------------------------------------------------------------------------


def test_enqueue_creates_a_queued_run_with_validated_params_and_concurrency_keys():
    run = noop("high", sleep_ms=5, gateway="3", agent="main")
    assert (run.status, run.priority, run.kind) == ("queued", "high", "noop")
    assert run.params == {"sleep_ms": 5, "gateway": "3", "agent": "main"}
    assert (run.gateway, run.agent) == ("3", "main")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "nope"}, "unknown kind 'nope' (registered: "),
        ({"kind": "noop", "params": {"sleep_ms": -1}}, "sleep_ms must be a whole number"),
        ({"kind": "noop", "params": {"fail": "oops"}}, "fail must be an error class"),
        ({"kind": "noop", "priority": "scheduled"}, "unknown priority 'scheduled'"),
        ({"job": "missing"}, "no job named 'missing'"),
        ({}, "a run needs a job or a kind"),
    ],
)
def test_bad_input_is_a_clear_validation_error_and_writes_nothing(kwargs, message):
    with pytest.raises(ValidationError) as exc:
        queue.enqueue(**kwargs)
    assert message in exc.value.messages[0]
    assert not Run.objects.exists()


def test_a_job_run_takes_the_jobs_policy_and_renders_its_prompt_from_the_input():
    job = Job.objects.create(
        name="greet",
        kind="noop",
        priority="low",
        timeout_seconds=30,
        max_attempts=5,
        prompt_template="Hello {{ input.name }} <b>",
    )
    run = queue.enqueue(job, input={"name": "Ada"}, trigger="user", triggered_by="alice")
    assert (run.job_name, run.priority, run.timeout_seconds, run.max_attempts) == ("greet", "low", 30, 5)
    assert run.prompt == "Hello Ada <b>"  # not HTML-escaped: a prompt is not a page
    job.enabled = False
    job.save()
    with pytest.raises(ValidationError, match="disabled"):
        queue.enqueue(job)


def test_a_dedupe_key_returns_the_unfinished_run_and_is_free_again_once_it_ends():
    first = queue.enqueue(kind="noop", dedupe_key="k1")
    assert queue.enqueue(kind="noop", dedupe_key="k1").pk == first.pk
    queue.start_next(WORKER)
    assert Run.objects.get(pk=first.pk).status == "succeeded"
    assert queue.enqueue(kind="noop", dedupe_key="k1").pk != first.pk


# --- claim -------------------------------------------------------------------------------------------


def test_a_duplicate_dispatch_starts_nothing_twice():
    run = noop()
    assert queue.start_next(WORKER).pk == run.pk
    assert queue.start_next(WORKER) is None
    run.refresh_from_db()
    assert (run.status, run.attempts, run.attempt_set.count()) == ("succeeded", 1, 1)


@pytest.mark.django_db(transaction=True)
def test_two_threads_claiming_the_one_run_one_wins():
    run = noop()
    barrier = threading.Barrier(2)
    results: list[object] = []

    def claim() -> None:
        barrier.wait()
        try:
            results.append(queue.claim_next(f"thread:{threading.get_ident()}"))
        finally:
            connection.close()

    threads = [threading.Thread(target=claim) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is not None]
    assert len(results) == 2 and len(winners) == 1
    assert winners[0][0].pk == run.pk
    assert Attempt.objects.filter(run=run).count() == 1


# --- the selection policy ---------------------------------------------------------------------------


def test_urgent_first_then_high_twice_as_often_as_normal_and_low_not_starved():
    # enqueued low and normal first, urgent last: enqueue order must not matter
    for p in ["low"] + ["normal"] * 2 + ["high"] * 8 + ["urgent"] * 3:
        noop(p)
    order = [r.priority[0].upper() for r in claim_all()]
    assert "".join(order) == "UUU" + "HNHLHNH" + "HHHH"


def test_within_a_priority_the_oldest_run_goes_first():
    runs = [noop("high") for _ in range(4)]
    assert [r.pk for r in claim_all()] == [r.pk for r in runs]


def test_low_gets_a_turn_at_least_every_five_picks_under_a_high_backlog():
    for _ in range(20):
        noop("high")
    for _ in range(5):
        noop("low")
    order = "".join(r.priority[0] for r in claim_all())
    assert order.startswith("hhlhhhhlhhhhlhh")  # low every 5 picks while both wait
    assert order.count("l") == 5


def test_high_and_normal_share_two_to_one_over_a_long_backlog():
    for _ in range(60):
        noop("high")
        noop("normal")
    first_60 = "".join(r.priority[0] for r in claim_all())[:60]
    assert (first_60.count("h"), first_60.count("n")) == (40, 20)


# --- scheduled runs -----------------------------------------------------------------------------


def test_a_scheduled_run_starts_when_due_and_not_before():
    with time_machine.travel("2026-01-01 12:00:00Z", tick=False):
        run = queue.enqueue(kind="noop", run_after=timezone.now() + timedelta(minutes=5))
        assert run.status == "scheduled"
        assert tick.promote_due(timezone.now()) == (0, 0)
        assert queue.claim_next(WORKER) is None
    with time_machine.travel("2026-01-01 12:05:01Z", tick=False):
        assert tick.promote_due(timezone.now()) == (1, 0)
        assert queue.claim_next(WORKER)[0].pk == run.pk


# --- pauses ------------------------------------------------------------------------------------------


def test_claim_skips_a_run_a_pause_covers_even_if_still_queued():
    held = noop(gateway="g1")
    free = noop(gateway="g2")
    QueuePause.objects.create(scope="gateway", value="g1", who="t")  # no parking: claim must check
    assert [r.pk for r in claim_all()] == [free.pk]
    assert Run.objects.get(pk=held.pk).status == "queued"


def test_enqueue_under_a_pause_records_parked():
    QueuePause.objects.create(scope="priority", value="low", who="t")
    assert noop("low").status == "parked"
    assert noop("high").status == "queued"


# --- concurrency limits --------------------------------------------------------------------------------


def test_a_gateway_limit_holds_runs_back_and_the_next_eligible_one_starts(settings):
    settings.AGENTFLOW_GATEWAY_CONCURRENCY = 2
    g1 = [noop(gateway="g1") for _ in range(3)]
    g2 = noop(gateway="g2")
    assert [r.pk for r in claim_all()] == [g1[0].pk, g1[1].pk, g2.pk]
    queue.complete_attempt(Attempt.objects.get(run=g1[0]).pk, Finished())
    assert queue.claim_next(WORKER)[0].pk == g1[2].pk


def test_an_agent_limit_is_per_agent_of_a_gateway(settings):
    settings.AGENTFLOW_AGENT_CONCURRENCY = 1
    a = [noop(gateway="g1", agent="main") for _ in range(2)]
    other_gateway = noop(gateway="g2", agent="main")
    other_agent = noop(gateway="g1", agent="ops")
    assert [r.pk for r in claim_all()] == [a[0].pk, other_gateway.pk, other_agent.pk]


def test_a_job_concurrency_limit_holds(redis_client):
    job = Job.objects.create(name="one-at-a-time", kind="noop", concurrency_limit=1)
    first, second = queue.enqueue(job), queue.enqueue(job)
    loose = noop()
    assert [r.pk for r in claim_all()] == [first.pk, loose.pk]
    assert redis_client.exists(queue._starved_key())  # a completion will wake a worker
    queue.complete_attempt(Attempt.objects.get(run=first).pk, Finished())
    assert queue.claim_next(WORKER)[0].pk == second.pk


# --- errors, retries, on_error ------------------------------------------------------------------------


def test_a_server_error_is_retried_with_backoff_then_fails_and_notifies(settings):
    settings.AGENTFLOW_RETRY_BASE_SECONDS = 10
    job = Job.objects.create(name="flaky", kind="noop", params={"fail": "server_error"}, max_attempts=3)
    run = queue.enqueue(job)
    ceilings = [10, 20]
    for ceiling in ceilings:
        before = timezone.now()
        queue.start_next(WORKER)
        run.refresh_from_db()
        assert run.status == "scheduled"
        assert before <= run.run_after <= timezone.now() + timedelta(seconds=ceiling)
        assert run.next_attempt_at == run.run_after
        tick.promote_due(run.run_after)
    queue.start_next(WORKER)
    run.refresh_from_db()
    assert (run.status, run.attempts, run.error_class) == ("failed", 3, "server_error")
    assert list(run.attempt_set.values_list("number", "status")) == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
    ]
    alert = Alert.objects.get()
    assert alert.source == "job:flaky" and "failed after 3 attempt(s) (server_error" in alert.message


def test_backoff_is_full_jitter_capped(settings):
    import random

    settings.AGENTFLOW_RETRY_BASE_SECONDS, settings.AGENTFLOW_RETRY_CAP_SECONDS = 10, 60
    rng = random.Random(1)
    samples = [errors.backoff_seconds(n, rng=rng) for n in (1, 2, 3, 4, 9) for _ in range(200)]
    assert max(samples[:200]) <= 10 and max(samples[200:400]) <= 20 and max(samples[800:]) <= 60
    assert max(samples[800:]) > 50 and min(samples) < 1  # full range: from 0 to the ceiling


def test_on_error_run_job_queues_the_other_job_with_the_failure_as_input():
    cleanup = Job.objects.create(name="cleanup", kind="noop", on_error="notify")
    job = Job.objects.create(
        name="breaks",
        kind="noop",
        params={"fail": "invalid_request"},
        on_error="run_job",
        on_error_job=cleanup,
    )
    run = queue.enqueue(job)
    queue.start_next(WORKER)
    follow = Run.objects.get(job=cleanup)
    assert follow.input == {
        "run": run.pk,
        "job": "breaks",
        "error_class": "invalid_request",
        "error": "noop failed as asked (invalid_request)",
    }
    assert follow.triggered_by == f"on_error of run {run.pk}"
    assert not Alert.objects.exists()
    assert Run.objects.get(pk=run.pk).attempts == 1  # invalid_request: final at once


def test_a_rate_limit_waits_for_the_limiter_and_is_not_a_failed_attempt(settings):
    settings.AGENTFLOW_RATE_LIMIT_WAIT_SECONDS = 60
    run = noop(fail="rate_limit")
    now = timezone.now()
    queue.start_next(WORKER)
    run.refresh_from_db()
    assert (run.status, run.attempts, run.error_class) == ("scheduled", 0, "rate_limit")
    assert timedelta(seconds=59) < run.run_after - now < timedelta(seconds=62)
    assert run.attempt_set.get().error_class == "rate_limit"
    previous = errors.set_retry_after_hook(lambda r, e, retry_after=None: 7)
    try:
        tick.promote_due(run.run_after)
        now = timezone.now()
        queue.start_next(WORKER)
    finally:
        errors.set_retry_after_hook(previous)
    run.refresh_from_db()
    assert timedelta(seconds=6) < run.run_after - now < timedelta(seconds=8)
    assert (run.attempts, run.attempt_set.count()) == (0, 2)


def test_provider_auth_blocks_the_run_and_calls_the_hook():
    seen = []
    previous = errors.set_provider_blocked_hook(lambda r, e: seen.append((r.pk, e)))
    try:
        run = noop(fail="provider_auth", error="temporarily disabled")
        queue.start_next(WORKER)
    finally:
        errors.set_provider_blocked_hook(previous)  # fleet's real hook: later tests need it
    assert Run.objects.get(pk=run.pk).status == "blocked"
    assert seen == [(run.pk, "temporarily disabled")]


def test_an_action_that_raises_fails_its_attempt_as_system_not_the_worker():
    def explode(ctx):
        raise RuntimeError("boom")

    actions.register_action(ActionSpec("explodes", "Explodes", start=explode))
    try:
        run = queue.enqueue(kind="explodes")
        queue.start_next(WORKER)
    finally:
        actions.unregister_action("explodes")
    run.refresh_from_db()
    assert (run.status, run.error_class, run.error) == ("failed", "system", "RuntimeError: boom")


# --- completion ------------------------------------------------------------------------------------


def test_a_started_run_frees_the_worker_and_the_first_terminal_wins():
    run = noop(**{"async": True})
    queue.start_next(WORKER)
    attempt = Attempt.objects.get(run=run)
    assert (attempt.status, attempt.in_worker, attempt.external_id) == ("running", False, str(attempt.pk))
    assert Run.objects.get(pk=run.pk).status == "running"
    done = queue.complete_attempt(str(attempt.pk), Finished(result="hi", usage={"tokens": 3}))
    assert (done.status, done.result, done.usage) == ("succeeded", "hi", {"tokens": 3})
    assert queue.complete_attempt(attempt.pk, Finished("failed", "server_error", "late")) is None
    assert queue.complete_attempt(uuid.uuid4(), Finished()) is None
    assert queue.complete_attempt("not-a-uuid", Finished()) is None
    run.refresh_from_db()
    assert (run.status, run.error) == ("succeeded", "")


def test_a_long_result_is_capped_and_marked(settings):
    settings.AGENTFLOW_RUN_RESULT_MAX_CHARS = 10
    run = queue.enqueue(kind="noop", prompt="x" * 50)
    queue.start_next(WORKER)
    run.refresh_from_db()
    assert (run.result, run.result_truncated) == ("x" * 10, True)


# --- the tick: timeouts, reconcile, dead workers -------------------------------------------------


def test_a_run_past_its_timeout_is_timed_out_and_retried(settings):
    settings.AGENTFLOW_RUN_TIMEOUT_GRACE_SECONDS = 5
    run = queue.enqueue(kind="noop", params={"async": True}, timeout_seconds=10)
    queue.start_next(WORKER)
    started = Attempt.objects.get(run=run).started_at
    assert tick.time_out_running(started + timedelta(seconds=14)) == (0, 0)
    assert tick.time_out_running(started + timedelta(seconds=16)) == (1, 0)
    run.refresh_from_db()
    assert (run.status, run.error_class, run.attempts) == ("scheduled", "timeout", 1)


def test_reconcile_settles_a_run_whose_events_were_missed(settings):
    settings.AGENTFLOW_RUN_TIMEOUT_GRACE_SECONDS = 0
    actions.register_action(
        ActionSpec(
            "remote",
            "Remote",
            start=lambda ctx: Started(session_key="s1"),
            reconcile=lambda ctx: Finished(result=f"found {ctx.attempt.session_key}"),
        )
    )
    try:
        run = queue.enqueue(kind="remote", timeout_seconds=1)
        queue.start_next(WORKER)
        assert tick.time_out_running(timezone.now() + timedelta(seconds=2)) == (0, 1)
    finally:
        actions.unregister_action("remote")
    run.refresh_from_db()
    assert (run.status, run.result) == ("succeeded", "found s1")


def test_an_attempt_whose_worker_died_is_lost_and_a_live_ones_is_not(settings):
    settings.AGENTFLOW_WORKER_LEASE_SECONDS = 2
    dead_run, live_run = noop(), noop()
    me = workers.this_worker()
    for run, worker in ((dead_run, "ghost-host:999"), (live_run, me)):
        Run.objects.filter(pk=run.pk).update(status="running", started_at=timezone.now())
        Attempt.objects.create(
            run=run, number=1, worker=worker, started_at=timezone.now() - timedelta(seconds=10)
        )
    assert tick.mark_dead_workers_lost(timezone.now()) == 1
    dead_run.refresh_from_db()
    assert (dead_run.status, dead_run.attempts) == ("lost", 1)
    assert "worker ghost-host:999 stopped" in dead_run.error
    assert Run.objects.get(pk=live_run.pk).status == "running"
    assert tick.mark_dead_workers_lost(timezone.now()) == 0


def test_a_live_workers_stale_in_worker_flag_is_settled_a_lease_past_the_deadline(settings):
    settings.AGENTFLOW_RUN_TIMEOUT_GRACE_SECONDS = 0
    settings.AGENTFLOW_WORKER_LEASE_SECONDS = 6
    run = queue.enqueue(kind="noop", timeout_seconds=10)
    started = timezone.now()
    Run.objects.filter(pk=run.pk).update(status="running", started_at=started)
    # in_worker=True (the default): as if the worker's "left start()" write had been lost
    Attempt.objects.create(run=run, number=1, worker=workers.this_worker(), started_at=started)
    assert workers.is_alive(workers.this_worker())
    assert tick.time_out_running(started + timedelta(seconds=15)) == (0, 0)  # inside start()
    assert tick.time_out_running(started + timedelta(seconds=17)) == (1, 0)
    run.refresh_from_db()
    assert (run.status, run.error_class) == ("scheduled", "timeout")


@pytest.mark.django_db(transaction=True)  # autocommit, as in a worker (not inside a test's atomic)
def test_leaving_start_is_recorded_even_when_the_database_is_busy_at_first():
    actions.register_action(ActionSpec("remote", "Remote", start=lambda ctx: Started(session_key="s9")))
    refused = []

    def locked_once(execute, sql, params, many, context):
        if sql.startswith('UPDATE "scheduler_attempt"') and "in_worker" in sql and not refused:
            refused.append(sql)
            raise OperationalError("database is locked")
        return execute(sql, params, many, context)

    try:
        run = queue.enqueue(kind="remote")
        with connection.execute_wrapper(locked_once):
            queue.start_next(WORKER)
    finally:
        actions.unregister_action("remote")
    assert refused, "the busy database was not simulated"
    attempt = Attempt.objects.get(run=run)
    assert (attempt.in_worker, attempt.session_key, attempt.status) == (False, "s9", "running")


def test_a_run_chosen_before_an_urgent_one_arrived_is_not_claimed_over_it():
    normal = noop()
    candidate, position, eligible = queue._pick(queue.get_redis(), locked=False)
    assert candidate.pk == normal.pk
    urgent = noop("urgent")  # committed between the choice and the claim
    assert queue._take(candidate, WORKER, position, eligible, queue.get_redis()) is None
    assert Run.objects.get(pk=normal.pk).status == "queued"
    assert [r.pk for r in claim_all()] == [urgent.pk, normal.pk]


def test_a_paused_urgent_run_does_not_hold_the_others_back():
    QueuePause.objects.create(scope="priority", value="urgent", who="t")
    Run.objects.create(kind="noop", priority="urgent")  # queued under the pause (not parked yet)
    normal = noop()
    assert [r.pk for r in claim_all()] == [normal.pk]


# --- the one-statement claim (queue._fast_claim) and the settle without a re-read --------------------


def test_a_noop_run_is_claimed_started_and_settled_in_six_statements():
    from django.test.utils import CaptureQueriesContext

    run = noop()
    with CaptureQueriesContext(connection) as queries:
        assert queue.start_next(WORKER).pk == run.pk
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    # claim: BEGIN, UPDATE … RETURNING, INSERT attempt, COMMIT; settle: BEGIN, 2 UPDATEs, COMMIT
    assert statements.count("SELECT") == 0, statements
    assert statements.count("UPDATE") == 3 and statements.count("INSERT") == 1, statements
    run.refresh_from_db()
    assert (run.status, run.attempts, run.attempt_set.get().number) == ("succeeded", 1, 1)


def test_the_one_statement_claim_follows_the_wheel_like_the_general_path(redis_client):
    runs = {p: [noop(p) for _ in range(4)] for p in ("high", "normal", "low")}
    urgent = noop("urgent")
    order = [queue._fast_claim(WORKER, queue.get_redis())[0] for _ in range(8)]
    assert order[0].pk == urgent.pk
    assert [r.priority for r in order[1:]] == ["high", "normal", "high", "low", "high", "normal", "high"]
    assert [r.pk for r in order if r.priority == "high"] == [r.pk for r in runs["high"]]


def test_the_one_statement_claim_leaves_paused_held_limited_and_retried_runs_to_the_general_path():
    job = Job.objects.create(name="limited", kind="noop", concurrency_limit=1)
    limited = [queue.enqueue(job, kind="noop"), noop(gateway="3"), noop(provider="p")]
    assert queue._fast_claim(WORKER, queue.get_redis()) is None  # the head has a limit
    assert Run.objects.filter(status="queued").count() == 3
    Run.objects.filter(pk__in=[r.pk for r in limited]).update(status="cancelled")
    retried = noop()
    Run.objects.filter(pk=retried.pk).update(started_at=timezone.now())  # not a first claim
    assert queue._fast_claim(WORKER, queue.get_redis()) is None
    Run.objects.filter(pk=retried.pk).update(status="cancelled")
    plain = noop()
    pause = QueuePause.objects.create(scope="job", value="other", who="t")
    assert queue._fast_claim(WORKER, queue.get_redis()) is None  # any pause: the general path
    pause.delete()
    queue.admission.hold("gateway:9", timezone.now().timestamp() + 60)
    assert queue._fast_claim(WORKER, queue.get_redis()) is None  # any hold: the general path
    queue.admission.release("gateway:9")
    claimed, attempt = queue._fast_claim(WORKER, queue.get_redis())
    assert (claimed.pk, claimed.status, attempt.number) == (plain.pk, "running", 1)
    assert Run.objects.get(pk=plain.pk).status == "running"


def test_a_drain_starts_runs_in_the_policys_order_one_commit_per_run(redis_client):
    from django.test.utils import CaptureQueriesContext

    for p in ["low"] + ["normal"] * 2 + ["high"] * 8 + ["urgent"] * 3:
        noop(p)
    with CaptureQueriesContext(connection) as queries:
        started, more = queue.start_runs(time.monotonic() + 60, WORKER)
    assert (started, more) == (14, False)
    order = Attempt.objects.order_by("started_at", "run_id").values_list("run__priority", flat=True)
    assert "".join(p[0].upper() for p in order) == "UUU" + "HNHLHNH" + "HHHH"  # as claim_all's
    assert set(Run.objects.values_list("status", flat=True)) == {"succeeded"}
    assert {r.attempt_set.count() for r in Run.objects.all()} == {1}
    # each completion carries the next run's claim: 14 settlements, 13 of them with a claim, and
    # the first claim and the last (finding nothing) on their own
    commits = [q["sql"] for q in queries.captured_queries if q["sql"].upper().startswith("COMMIT")]
    assert len(commits) <= 14 + 2, len(commits)


def test_a_drain_past_its_deadline_stops_after_the_run_it_started():
    runs = [noop() for _ in range(3)]
    assert queue.start_runs(time.monotonic() - 1, WORKER) == (1, True)
    assert Run.objects.get(pk=runs[0].pk).status == "succeeded"
    assert Run.objects.filter(status="queued").count() == 2  # left for the fresh wake-up
    assert queue.start_runs(time.monotonic() + 60, WORKER) == (2, False)


def test_a_drain_leaves_a_limited_run_to_the_general_claim_and_a_parked_run_parked(settings):
    settings.AGENTFLOW_GATEWAY_CONCURRENCY = 1
    plain, limited, last = noop(), noop(gateway="g"), noop()
    pause = QueuePause.objects.create(scope="priority", value="low", who="t")
    low = noop("low")
    assert queue.start_runs(time.monotonic() + 60, WORKER) == (3, False)
    assert {r.pk for r in Run.objects.filter(status="succeeded")} == {plain.pk, limited.pk, last.pk}
    assert Run.objects.get(pk=low.pk).status == "parked"
    pause.delete()


def test_a_run_cancelled_while_its_attempt_ran_is_not_settled_over():
    run = noop()
    claimed, attempt = queue.claim_next(WORKER)
    Run.objects.filter(pk=run.pk).update(status="cancelled")  # e.g. an operator's cancel
    settled = queue.complete_attempt(attempt.pk, Finished("succeeded"), known_run=claimed)
    assert settled.status == "cancelled"
    assert Attempt.objects.get(pk=attempt.pk).status == "succeeded"
    run.refresh_from_db()
    assert (run.status, run.attempts, run.finished_at) == ("cancelled", 0, None)


def test_coalesced_wake_ups_stop_at_the_pending_maximum(
    settings, redis_client, django_capture_on_commit_callbacks
):
    name = queue.queue_name("normal")
    redis_client.delete(name)
    try:
        settings.AGENTFLOW_DISPATCH_PENDING_MAX = 2
        for _ in range(5):
            with django_capture_on_commit_callbacks(execute=True):
                noop()
        assert redis_client.llen(name) == 2
        settings.AGENTFLOW_DISPATCH_PENDING_MAX = 0
        with django_capture_on_commit_callbacks(execute=True):
            noop()
        assert redis_client.llen(name) == 3  # one message per run (the default)
    finally:
        redis_client.delete(name)
