"""The agent.prompt kind against a real gateway (retries off on its fault agents), the real
listener (FleetListener in a thread of this process) and, for the dispatch path, a real Celery
worker: sent, completed from the listener's events, usage read, failures classified and retried
by the policy, aborted, reconciled when the events were missed, sent once per attempt, blocked
on provider auth, and never holding a worker."""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from agentflow.celery import app
from demo.gateway import DEFAULT_AGENTS, DemoAgent, DemoGateway, ensure_installed
from fleet import agent_runs, probes
from fleet.models import Agent
from scheduler import actions, controls, queue, tick
from scheduler.actions import AttemptContext
from scheduler.audit import Actor
from scheduler.models import Alert, Attempt, ProviderBlock, Run
from tests.support.celery import celery_env, logs, start_worker
from tests.support.factories import make_agent, make_gateway
from tests.support.gateway import admin_client, wait_for
from tests.support.listening import listening
from tests.support.ports import free_port_block
from tests.support.processes import stop_group

pytestmark = [pytest.mark.gateway, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

AGENTS = (
    *DEFAULT_AGENTS,
    DemoAgent("faults", "Faults", "Faults", "💥", provider_max_retries=0),
    DemoAgent("authfail", "Auth Fail", "Auth Fail", "🔒", provider_max_retries=0),
    DemoAgent("relogin", "Re-login", "Re-login", "🔑", provider_max_retries=0),
)


@pytest.fixture(scope="module")
def agent_gateway(tmp_path_factory):
    ensure_installed()
    gateway = DemoGateway(
        tmp_path_factory.mktemp("agent-runs-gw"), free_port_block(), secrets.token_hex(16), agents=AGENTS
    )
    gateway.start(timeout=120)
    yield gateway
    gateway.stop()


@pytest.fixture
def gw(agent_gateway, redis_prefix, own_queues):
    row = make_gateway("runs-gw", url=agent_gateway.url, token=agent_gateway.token)
    for agent in AGENTS:
        make_agent(row, agent.id, model="stub/stub-model")
    return row


def nonce() -> str:
    return uuid.uuid4().hex[:10]


def arrivals(gateway: DemoGateway, marker: str) -> int:
    return sum(1 for a in gateway.stub_server.arrivals() if marker in a.text)


def settled(run: Run, *statuses: str, timeout: float = 120) -> Run:
    def done():
        run.refresh_from_db()
        return run if run.status in statuses else None

    return wait_for(done, timeout, what=f"run {run.pk} to be {'/'.join(statuses)} (is {run.status})")


def enqueue(gw, agent: str, prompt: str, **kw) -> Run:
    return queue.enqueue(
        kind="agent.prompt", params={"gateway": gw.name, "agent": agent}, prompt=prompt, **kw
    )


def describe(client, session_key: str) -> dict:
    return client.call("sessions.describe", {"key": session_key}).get("session") or {}


def ctx_of(run: Run) -> AttemptContext:
    attempt = run.attempt_set.order_by("-number").first()
    return AttemptContext(run=run, attempt=attempt, prompt=run.prompt, params=run.params, input=run.input)


# --- parameters ----------------------------------------------------------------------------------


def test_params_name_the_gateway_by_name_or_id_and_store_its_id(gw):
    by_name = actions.validate_params("agent.prompt", {"gateway": "runs-gw", "agent": "main"})
    by_id = actions.validate_params("agent.prompt", {"gateway": str(gw.pk), "agent": "main"})
    assert by_name == by_id == {"gateway": gw.pk, "agent": "main", "provider": "stub"}
    run = enqueue(gw, "main", "hi")
    assert (run.gateway, run.agent, run.provider) == (str(gw.pk), "main", "stub")


def test_an_unknown_agent_or_gateway_is_refused_with_what_is_known(gw):
    with pytest.raises(ValidationError, match=r"no agent 'nobody' \(known: authfail, faults, main"):
        actions.validate_params("agent.prompt", {"gateway": gw.pk, "agent": "nobody"})
    with pytest.raises(ValidationError, match=r"no gateway 'elsewhere' \(registered: runs-gw\)"):
        actions.validate_params("agent.prompt", {"gateway": "elsewhere", "agent": "main"})
    with pytest.raises(ValidationError, match="unknown parameter"):
        actions.validate_params("agent.prompt", {"gateway": gw.pk, "agent": "main", "shell": "rm"})
    assert Run.objects.count() == 0


def test_a_traceparent_param_must_be_w3c_and_is_kept_for_chat_send(gw):
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    params = actions.validate_params("agent.prompt", {"gateway": gw.pk, "agent": "main", "traceparent": tp})
    assert params["traceparent"] == tp
    with pytest.raises(ValidationError, match="traceparent must be a W3C traceparent"):
        actions.validate_params("agent.prompt", {"gateway": gw.pk, "agent": "main", "traceparent": "abc"})


# --- the whole path ------------------------------------------------------------------------------


def test_a_worker_sends_returns_at_once_and_the_listener_completes_the_run_with_usage(
    gw, agent_gateway, own_queues, redis_prefix, tmp_path
):
    mark = nonce()
    worker = start_worker(
        celery_env(redis_prefix, app.conf.broker_url), tmp_path / "worker.log", redis_prefix
    )
    try:
        with listening():
            run = enqueue(gw, "main", f"[[slow:6]] hello {mark}", timeout_seconds=120)
            try:
                attempt = wait_for(
                    lambda: Attempt.objects.filter(run=run, in_worker=False).exclude(session_key="").first(),
                    90,
                    what="the worker to send the run",
                )
            except AssertionError:
                raise AssertionError(logs(tmp_path)) from None
            assert attempt.session_key == f"agent:main:af-{run.pk}-{attempt.pk.hex[:12]}"
            assert attempt.external_id == str(attempt.pk)  # the gateway's runId is the attempt id
            # The one solo worker is free while the agent run goes on: a no-op run gets through.
            noop = queue.enqueue(kind="noop")
            settled(noop, "succeeded", timeout=60)
            run.refresh_from_db()
            assert run.status == "running"
            settled(run, "succeeded", "failed")
            wait_for(lambda: Run.objects.get(pk=run.pk).usage, 30, what="the usage")
    finally:
        stop_group(worker)
    run.refresh_from_db()
    assert run.status == "succeeded", (run.error_class, run.error)
    assert run.result.startswith("[stub:stub-model] You said: [[slow:6]] hello") and mark in run.result
    assert run.usage["total_tokens"] > 0 and run.usage["input_tokens"] > 0
    assert run.usage["model"] == "stub-model" and run.usage["cost"] == 0
    assert arrivals(agent_gateway, mark) == 1


def test_a_server_error_fails_with_its_class_and_is_retried_by_the_policy(gw, agent_gateway, settings):
    settings.AGENTFLOW_RETRY_BASE_SECONDS = 0.01
    mark = nonce()
    with listening():
        run = enqueue(gw, "faults", f"[[error]] hi {mark}", max_attempts=2)
        assert queue.start_next().pk == run.pk
        settled(run, "scheduled")
        assert (run.error_class, run.attempts) == ("server_error", 1)
        wait_for(lambda: tick.tick().promoted or Run.objects.get(pk=run.pk).status == "queued", 10)
        assert queue.start_next().pk == run.pk
        settled(run, "failed")
    assert (run.error_class, run.attempts) == ("server_error", 2)
    assert "HTTP 500" in run.error
    assert list(run.attempt_set.values_list("error_class", flat=True)) == ["server_error", "server_error"]
    assert arrivals(agent_gateway, mark) == 2  # one model call per attempt: retries are ours


def test_cancelling_a_running_run_aborts_it_on_the_gateway(gw, agent_gateway, operator):
    with listening():
        run = enqueue(gw, "faults", f"[[slow:20]] {'w ' * 30} {nonce()}")
        queue.start_next()
        attempt = run.attempt_set.get()
        attempt.refresh_from_db()
        with admin_client(agent_gateway) as client:
            wait_for(
                lambda: (
                    (client.call("sessions.describe", {"key": attempt.session_key}).get("session") or {}).get(
                        "status"
                    )
                    == "running"
                ),
                90,
                what="the run to start on the gateway",
            )
            controls.cancel_run(Actor.of_user(operator), run)
            run.refresh_from_db()
            assert run.status == "aborted"

            def aborted_row():
                row = describe(client, attempt.session_key)
                return row if row.get("status") == "killed" or row.get("abortedLastRun") else None

            row = wait_for(aborted_row, 30, what="the gateway to abort the run")
    assert row["lastRunId"] == str(attempt.pk)
    assert Attempt.objects.get(pk=attempt.pk).status == "aborted"


def test_the_reconciler_settles_a_run_whose_events_were_missed(gw, agent_gateway, settings):
    mark = nonce()
    run = enqueue(gw, "main", f"hello {mark}", timeout_seconds=60)
    queue.start_next()  # no listener: nobody hears the terminal event
    attempt = run.attempt_set.get()
    attempt.refresh_from_db()
    with admin_client(agent_gateway) as client:
        wait_for(
            lambda: (
                (client.call("sessions.describe", {"key": attempt.session_key}).get("session") or {}).get(
                    "status"
                )
                == "done"
            ),
            120,
            what="the run to finish on the gateway",
        )
    assert tick.tick().reconciled == 0  # not yet past its timeout: left alone
    later = timezone.now() + timedelta(seconds=60 + settings.AGENTFLOW_RUN_TIMEOUT_GRACE_SECONDS + 1)
    assert tick.tick(now=later).reconciled == 1
    run.refresh_from_db()
    assert run.status == "succeeded" and mark in run.result
    assert run.usage["total_tokens"] > 0


def test_the_same_attempt_sent_twice_reaches_the_model_once(gw, agent_gateway):
    mark = nonce()
    with listening():
        run = enqueue(gw, "main", f"[[slow:3]] once {mark}")
        queue.start_next()
        run.refresh_from_db()
        again = agent_runs.start(ctx_of(run))  # e.g. a redelivered message after the send
        settled(run, "succeeded")
    first = run.attempt_set.get()
    assert again.external_id == first.external_id == str(first.pk)
    assert again.session_key == first.session_key
    assert arrivals(agent_gateway, mark) == 1


def test_provider_auth_blocks_the_agents_provider_alerts_and_unblock_requeues_in_order(gw, operator):
    with listening():
        first = enqueue(gw, "authfail", f"[[auth]] hi {nonce()}")
        queue.start_next()
        settled(first, "blocked")
    assert first.error_class == "provider_auth"
    alert = Alert.objects.open().get(source__startswith="provider:")
    assert "authfail" in alert.message and "stub" in alert.message
    second, third = enqueue(gw, "authfail", "later 1"), enqueue(gw, "authfail", "later 2")
    other = enqueue(gw, "main", "another agent is not blocked")
    assert queue.start_next().pk == second.pk  # refused at once: no call to the gateway
    second.refresh_from_db()
    assert second.status == "blocked" and "is blocked" in second.error
    assert Alert.objects.open().count() == 1  # one alert per episode
    queue.start_next()
    queue.start_next()
    third.refresh_from_db()
    assert third.status == "blocked"
    assert Attempt.objects.filter(run=other).exists()  # main's provider state is its own
    requeued = agent_runs.unblock(
        Actor.of_user(operator), str(gw.pk), "authfail", "stub", reason="re-logged in"
    )
    assert requeued == 3
    assert list(
        Run.objects.filter(status="queued", agent="authfail").order_by("id").values_list("pk", flat=True)
    ) == [
        first.pk,
        second.pk,
        third.pk,
    ]
    assert not Alert.objects.open().exists()
    assert agent_runs.blocked_since(first) == ""


def test_after_a_real_401_the_probe_unblocks_once_the_gateway_lets_the_provider_back(gw, settings):
    """The whole episode on the real gateway: a 401 blocks the agent's provider; the gateway then
    holds the key back itself ("temporarily disabled … Retry after about 1 minute"), so the first
    probes fail and are recorded; the first probe the provider answers unblocks, and the runs held
    meanwhile are queued again in their first order (about 1-2 minutes: the gateway's cooldown)."""
    settings.AGENTFLOW_PROVIDER_PROBE_SECONDS = 5
    with listening():
        first = enqueue(gw, "relogin", f"[[auth]] hi {nonce()}")
        queue.start_next()
        settled(first, "blocked")
        held = [enqueue(gw, "relogin", f"held {i}") for i in range(2)]
        queue.start_next(), queue.start_next()
        assert all(settled(run, "blocked") for run in held)
        episode = ProviderBlock.objects.get(agent="relogin")
        failed_probes = 0
        deadline = time.monotonic() + 240
        while True:
            assert time.monotonic() < deadline, f"still blocked after {failed_probes} probe(s): {episode}"
            sent = probes.probe_pass(timezone.now() + timedelta(seconds=6))  # every probe is due
            for probe in sent:
                assert queue.start_next().pk == probe.pk  # urgent, through the block to the gateway
                settled(probe, "succeeded", "failed")
                if probe.status == "failed":
                    failed_probes += 1
                    assert probe.error_class == "provider_auth", probe.error
            episode.refresh_from_db()
            if not episode.is_open:
                break
            time.sleep(5)
    assert "succeeded: unblocked" in episode.last_probe_result and episode.runs_requeued == 3
    assert episode.probes == failed_probes + 1
    assert failed_probes >= 1  # the first probe met the gateway's own cooldown and was recorded
    queued = Run.objects.filter(status="queued", agent="relogin").order_by("id")
    assert list(queued.values_list("pk", flat=True)) == [first.pk, *(r.pk for r in held)]
    assert not Alert.objects.open().filter(source__contains=":relogin:").exists()
    assert agent_runs.blocked_since(first) == ""


def test_a_bare_final_is_absorbed_not_a_success(gw):
    run = enqueue(gw, "main", "hi")
    queue.start_next()
    attempt = run.attempt_set.get()
    bare = {"runId": str(attempt.pk), "sessionKey": "agent:main:x", "seq": 1, "state": "final"}
    agent_runs.complete_from_event(gw.pk, bare)
    run.refresh_from_db()
    assert (run.status, run.error_class) == ("failed", "invalid_request")
    assert "absorbed into a busy session" in run.error
    # a later terminal event of the same run changes nothing (the first wins)
    final = {**bare, "message": {"role": "assistant", "content": [{"type": "text", "text": "late"}]}}
    assert agent_runs.complete_from_event(gw.pk, final) is None
    assert agent_runs.complete_from_event(gw.pk, {**final, "runId": "not-a-uuid"}) is None
    assert Run.objects.get(pk=run.pk).status == "failed"
    assert Agent.objects.filter(gateway=gw).count() == len(AGENTS)
