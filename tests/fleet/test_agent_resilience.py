"""Resilience of agent runs (issue 9 §7) with a dedicated real gateway, the real listener (in a
thread of this process), real Redis and real Celery worker processes:

- a worker killed with ``kill -9`` (main process and pool children) while 50 runs are queued and
  10 running: every run ends, none silently lost, none sent twice to the gateway (model calls per
  run counted on the stub model, which sees one call per gateway run);
- the gateway restarted with runs in flight: every run settles (from its events, the reconciler
  or the timeout and a retry), none stays running past its timeout plus a tick.

The engine's tick (beat's job in production, every AGENTFLOW_TICK_SECONDS) is called by the test's
poll loop, once a second.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from agentflow.celery import app
from demo.gateway import DEFAULT_AGENTS, DemoGateway, ensure_installed
from fleet import run_errors, services
from openclaw import GatewayError
from scheduler import errors, queue, tick, workers
from scheduler.models import Attempt, Run
from tests.support.celery import celery_env, logs, start_worker
from tests.support.factories import make_agent, make_gateway
from tests.support.listening import listening
from tests.support.ports import free_port_block
from tests.support.processes import stop_group

pytestmark = [pytest.mark.gateway, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

LEASE = 2  # AGENTFLOW_WORKER_LEASE_SECONDS of the workers and of the tick in this process
GRACE = 3  # AGENTFLOW_RUN_TIMEOUT_GRACE_SECONDS of the tick in this process


@pytest.fixture(scope="module")
def resil_gateway(tmp_path_factory):
    ensure_installed()
    gateway = DemoGateway(
        tmp_path_factory.mktemp("resil-gw"), free_port_block(), secrets.token_hex(16), agents=DEFAULT_AGENTS
    )
    gateway.start(timeout=120)
    yield gateway
    gateway.stop()


@pytest.fixture
def gw(resil_gateway, redis_prefix, own_queues, settings):
    settings.AGENTFLOW_GATEWAY_CONCURRENCY = 10
    settings.AGENTFLOW_AGENT_CONCURRENCY = 10
    settings.AGENTFLOW_WORKER_LEASE_SECONDS = LEASE
    settings.AGENTFLOW_RUN_TIMEOUT_GRACE_SECONDS = GRACE
    row = make_gateway("resil-gw", url=resil_gateway.url, token=resil_gateway.token)
    for agent in DEFAULT_AGENTS:
        make_agent(row, agent.id, model="stub/stub-model")
    return row


def worker_env(redis_prefix: str, **extra: str) -> dict[str, str]:
    return {
        **celery_env(redis_prefix, app.conf.broker_url),
        "AGENTFLOW_GATEWAY_CONCURRENCY": "10",
        "AGENTFLOW_AGENT_CONCURRENCY": "10",
        "AGENTFLOW_WORKER_LEASE_SECONDS": str(LEASE),
        "AGENTFLOW_CELERY_VISIBILITY_TIMEOUT": "3",
        **extra,
    }


def prefork(env: dict[str, str], log: Path, queue_: str):
    return start_worker(env, log, queue_, pool=("--pool", "prefork", "--concurrency", "2"))


def ticking_until(predicate, timeout: float, what: str, tmp_path: Path):
    """Poll ``predicate`` once a second, running the engine's tick each time (beat's part)."""
    deadline = time.monotonic() + timeout
    while True:
        tick.tick()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            counts = Counter(Run.objects.values_list("status", flat=True))
            running = list(
                Attempt.objects.filter(status=Attempt.Status.RUNNING).values_list(
                    "run_id", "in_worker", "worker", "started_at", "session_key"
                )
            )
            running = [(*row, workers.is_alive(row[2])) for row in running]
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}; runs {dict(counts)}; "
                f"running attempts {running}\n{logs(tmp_path)}"
            )
        time.sleep(1)


def model_calls(gateway: DemoGateway) -> Counter[str]:
    """Model calls per run marker (``resil-<hex>``), as the stub model saw them."""
    calls: Counter[str] = Counter()
    for arrival in gateway.stub_server.arrivals():
        for word in arrival.text.split():
            if word.startswith("resil-"):
                calls[word] += 1
    return calls


def gateway_sends(gw, session_key: str, mark: str) -> int:
    """User turns carrying ``mark`` in the gateway's own transcript of ``session_key``."""
    assert session_key, "an attempt that reached the gateway records its session key"
    # (agent_runs.session_key: agent:<agent>:af-<run>-<attempt hex[:12]>, fresh per attempt)
    with services.connected(gw) as client:
        history = client.chat_history(session_key)
    turns = 0
    for message in history.get("messages") or []:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        text = content if isinstance(content, str) else json.dumps(content)
        turns += mark in text
    return turns


def enqueue(gw, mark: str, seconds: float, **kw) -> Run:
    return queue.enqueue(
        kind="agent.prompt",
        params={"gateway": gw.name, "agent": "main"},
        prompt=f"[[slow:{seconds}]] {mark} ",
        **kw,
    )


DRAINING = "Gateway is draining; new tasks are not accepted"


def test_a_draining_gateway_refusal_is_unreachable_and_retried():
    """What a restarting gateway answers to work it will not run (found by the restart test
    below, where such runs failed as ``system``, final): never started, so retried."""
    assert run_errors.classify({"state": "error", "errorMessage": DRAINING}).error_class == errors.UNREACHABLE
    assert run_errors.classify(GatewayError(DRAINING, code="UNAVAILABLE")).error_class == errors.UNREACHABLE
    assert errors.UNREACHABLE in errors.RETRYABLE


FINAL = {Run.Status.SUCCEEDED, Run.Status.FAILED, Run.Status.ABORTED, Run.Status.LOST, Run.Status.CANCELLED}


def test_kill_9_a_worker_with_50_queued_and_10_running_loses_nothing_and_sends_nothing_twice(
    gw, resil_gateway, redis_prefix, tmp_path
):
    env = worker_env(redis_prefix)
    marks = [f"resil-{uuid.uuid4().hex[:12]}" for _ in range(60)]
    processes = []
    with listening():
        runs = [enqueue(gw, mark, 2, timeout_seconds=45) for mark in marks]
        mark_of = {run.pk: mark for run, mark in zip(runs, marks, strict=True)}
        victim = prefork(env, tmp_path / "worker-1.log", redis_prefix)
        processes.append(victim)
        processes.append(start_worker(env, tmp_path / "worker-2.log", redis_prefix))
        try:
            ticking_until(
                lambda: Run.objects.filter(status=Run.Status.RUNNING).count() == 10,
                90,
                "10 runs running",
                tmp_path,
            )
            queued_then = Run.objects.filter(status=Run.Status.QUEUED).count()
            os.killpg(victim.pid, signal.SIGKILL)  # the main process and its pool children
            victim.wait(timeout=10)
            # What had reached the gateway when the worker died: sent attempts no worker holds.
            sent = set(
                Attempt.objects.filter(status=Attempt.Status.RUNNING, in_worker=False).values_list(
                    "run_id", flat=True
                )
            )
            processes.append(start_worker(env, tmp_path / "worker-3.log", redis_prefix))
            ids = [r.pk for r in runs]
            ticking_until(
                lambda: Run.objects.filter(pk__in=ids, status__in=FINAL).count() == 60,
                180,
                "all 60 runs to be final",
                tmp_path,
            )
        finally:
            for process in processes:
                stop_group(process)
    assert queued_then >= 40, f"only {queued_then} runs were queued when the worker was killed"
    assert sent, "no run had been sent when the worker was killed"
    calls = model_calls(resil_gateway)
    runs = {r.pk: r for r in Run.objects.filter(pk__in=ids)}
    by_status = Counter(r.status for r in runs.values())
    # Sent runs do not need a worker: the listener's events complete them although theirs died.
    not_done = {pk: runs[pk].status for pk in sent if runs[pk].status != Run.Status.SUCCEEDED}
    assert not not_done, f"runs sent before the kill did not succeed: {not_done}"
    for run in runs.values():  # (a query's row order is not the enqueue order: pair by pk)
        mark = mark_of[run.pk]
        assert run.status in FINAL
        attempts = list(run.attempt_set.order_by("number"))
        assert len(attempts) == run.attempts or run.status == Run.Status.LOST, (run.pk, run.attempts)
        if run.status == Run.Status.LOST:
            # Killed inside start(): visible with its reason, never started again.
            assert len(attempts) == 1 and "stopped during attempt 1" in run.error, (run.pk, run.error)
            key = attempts[0].session_key or f"agent:main:af-{run.pk}-{attempts[0].pk.hex[:12]}"
            assert gateway_sends(gw, key, mark) <= 1, f"lost run {run.pk} was sent more than once"
            continue
        assert run.status == Run.Status.SUCCEEDED, (run.pk, run.status, run.error_class, run.error)
        retried = [a for a in attempts[:-1] if a.error_class in errors.RETRYABLE]
        assert len(attempts) == 1 + len(retried), f"run {run.pk} has attempts no policy retried"
        # Gateway side: each attempt's session transcript holds its prompt once (a second
        # chat.send of one attempt would be a second user turn, or the gateway's in-flight dedupe).
        for attempt in attempts:
            sends = gateway_sends(gw, attempt.session_key, mark)
            assert sends == 1, f"attempt {attempt.pk} of run {run.pk}: {sends} chat.send turns at the gateway"
        # The model may be called more often than the gateway ran chat.send: the gateway retries
        # a provider call itself (section 1 of AUTOMATION.md); never less.
        assert calls[mark] >= len(attempts), (run.pk, mark, calls[mark], len(attempts))
    # At most the victim's two pool processes were inside start() when it died.
    assert by_status[Run.Status.LOST] <= 2, dict(by_status)
    assert by_status[Run.Status.SUCCEEDED] >= 58, dict(by_status)


def test_a_gateway_restart_with_runs_in_flight_settles_every_run_and_leaves_none_stuck(
    gw, resil_gateway, redis_prefix, tmp_path, settings
):
    settings.AGENTFLOW_RETRY_BASE_SECONDS = 0.5
    timeout = 20
    marks = [f"resil-{uuid.uuid4().hex[:12]}" for _ in range(10)]
    worker = start_worker(worker_env(redis_prefix), tmp_path / "worker.log", redis_prefix)
    try:
        with listening():
            ids = [enqueue(gw, mark, 8, timeout_seconds=timeout, max_attempts=3).pk for mark in marks]
            in_flight = Attempt.objects.filter(run_id__in=ids, status=Attempt.Status.RUNNING, in_worker=False)
            ticking_until(lambda: in_flight.count() == 10, 90, "10 runs in flight on the gateway", tmp_path)
            resil_gateway.restart(timeout=120)
            ticking_until(
                lambda: Run.objects.filter(pk__in=ids, status__in=FINAL).count() == 10,
                150,
                "the 10 runs to settle",
                tmp_path,
            )
    finally:
        stop_group(worker)
    # timeout + grace + a tick and a reconcile call, with room for a loaded 2-core machine (a
    # reconcile's chat.history may wait out its 10 s request timeout there)
    limit = timedelta(seconds=timeout + GRACE + 30)
    for run in Run.objects.filter(pk__in=ids):
        assert run.status == Run.Status.SUCCEEDED or (
            run.status == Run.Status.FAILED
            and run.error_class in errors.RETRYABLE
            and run.attempts == run.max_attempts
        ), (run.pk, run.status, run.error_class, run.error, run.attempts)
        for attempt in run.attempt_set.all():
            assert attempt.status != Attempt.Status.RUNNING
            assert attempt.finished_at - attempt.started_at <= limit, (
                f"attempt {attempt.pk} of run {run.pk} ran {attempt.finished_at - attempt.started_at}"
            )
            assert attempt.status == Attempt.Status.SUCCEEDED or attempt.error_class, attempt.pk
