"""Blocked providers end to end: the episode row, the GitHub issue (a real local HTTP receiver),
the probe through the real gateway and the real listener (fails while the provider refuses,
unblocks and requeues in order when it answers, and when the issue is closed), and the
notification's failures never breaking the block."""

from __future__ import annotations

# ruff: noqa: F811 - the fixtures imported from test_agent_runs are parameters here
import logging

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from agentflow.celery import app
from fleet import agent_runs, probes
from scheduler.audit import Actor
from scheduler.models import Alert, Attempt, AuditEntry, ProviderBlock, Run
from tests.fleet.test_agent_runs import (  # noqa: F401 - fixtures
    agent_gateway,
    enqueue,
    gw,
    listening,
    nonce,
    settled,
)
from tests.support.celery import celery_env, start_worker
from tests.support.gateway import wait_for
from tests.support.github import FakeGitHub, fake_github
from tests.support.processes import stop_group

TOKEN = "ghp-test-secret-0123456789"


@pytest.fixture
def eager():
    """The notification tasks run in this process (no worker: the domain path is what is tested)."""
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


@pytest.fixture
def github(settings, eager):
    with fake_github() as receiver:
        settings.AGENTFLOW_GITHUB_REPO = "acme/agents"
        settings.AGENTFLOW_GITHUB_TOKEN = TOKEN
        settings.AGENTFLOW_GITHUB_API_URL = receiver.url
        settings.AGENTFLOW_PUBLIC_URL = "http://127.0.0.1:8000"
        yield receiver


def episode_after(pk: int, check, what: str) -> ProviderBlock:
    def done():
        row = ProviderBlock.objects.get(pk=pk)
        return row if check(row) else None

    return wait_for(done, 60, what=what)


@pytest.mark.gateway
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_block_is_recorded_opens_an_issue_is_probed_and_unblocks_in_order(
    gw,
    agent_gateway,
    redis_prefix,
    tmp_path,
    settings,
    caplog,
):
    """A real worker (it starts the runs and sends the notifications), the real listener (it
    completes them), the real gateway (its stub answers 401 to the [[auth]] marker) and the
    local GitHub receiver."""
    caplog.set_level(logging.DEBUG)
    with fake_github() as github:
        settings.AGENTFLOW_GITHUB_REPO, settings.AGENTFLOW_GITHUB_TOKEN = "acme/agents", TOKEN
        settings.AGENTFLOW_GITHUB_API_URL = github.url
        env = {
            **celery_env(redis_prefix, app.conf.broker_url),
            "AGENTFLOW_GITHUB_REPO": "acme/agents",
            "AGENTFLOW_GITHUB_TOKEN": TOKEN,
            "AGENTFLOW_GITHUB_API_URL": github.url,
            "AGENTFLOW_PUBLIC_URL": "http://127.0.0.1:8000",
        }
        worker = start_worker(env, tmp_path / "worker.log", redis_prefix)
        try:
            with listening():
                scenario(gw, github, settings)
        finally:
            stop_group(worker)
    assert TOKEN not in caplog.text
    assert TOKEN not in (tmp_path / "worker.log").read_text()


def scenario(row, github: FakeGitHub, settings) -> None:
    first = enqueue(row, "authfail", f"[[auth]] hi {nonce()}")
    settled(first, "blocked")
    episode = ProviderBlock.objects.get()
    assert (episode.gateway, episode.agent, episode.provider) == (str(row.pk), "authfail", "stub")
    assert episode.is_open and episode.runs_blocked == 1 and "401" in episode.reason

    # the issue: POST /repos/acme/agents/issues with the token and what happened
    episode = episode_after(episode.pk, lambda r: r.github_issue_url, "the issue to be opened")
    assert episode.github_issue_url.endswith("/acme/agents/issues/1")
    (post,) = github.of("POST")
    assert post.path == "/repos/acme/agents/issues"
    assert post.headers["Authorization"] == f"Bearer {TOKEN}"
    assert post.headers["Accept"] == "application/vnd.github+json"
    assert "provider stub of agent authfail is blocked" in post.body["title"]
    assert "Runs held blocked: 1" in post.body["body"]
    assert "http://127.0.0.1:8000/queue/" in post.body["body"]

    second = enqueue(row, "authfail", "later")
    settled(second, "blocked")  # refused under the flag, counted on the episode
    assert ProviderBlock.objects.get().runs_blocked == 2

    # a probe while the provider still refuses (the stub's 401 marker): recorded, still blocked
    settings.AGENTFLOW_PROVIDER_PROBE_PROMPT = "[[auth]] probe"
    (probe,) = probes.probe_pass()
    assert (probe.priority, probe.trigger, probe.max_attempts) == ("urgent", "system", 1)
    assert probe.params["probe"] is True
    assert probes.probe_pass() == []  # one is in flight (and it is not due again yet)
    settled(probe, "failed")
    assert probe.error_class == "provider_auth"  # it went through the block to the gateway
    episode = episode_after(
        episode.pk, lambda r: "still blocked" in r.last_probe_result, "the failed probe recorded"
    )
    assert episode.is_open and episode.probes == 1
    assert agent_runs.blocked_since(first)
    assert Run.objects.filter(status="blocked", agent="authfail").count() == 2  # not the probe
    assert probes.probe_pass() == []  # not due: the last probe is recent


def blocked_run(gateway: str = "7", agent: str = "writer", provider: str = "openai") -> Run:
    """A run the engine just blocked (no gateway needed: the hook is what is tested)."""
    run = Run.objects.create(
        kind="agent.prompt", gateway=gateway, agent=agent, provider=provider, status="blocked"
    )
    with transaction.atomic():
        agent_runs.on_provider_blocked(run, "HTTP 401: invalid_api_key")
    return run


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_github_failing_is_recorded_logged_once_and_never_breaks_the_block(
    github: FakeGitHub, redis_prefix, caplog
):
    github.fail_with = 500
    caplog.set_level(logging.WARNING, logger="agentflow.probes")
    queued = Run.objects.create(kind="agent.prompt", gateway="7", agent="writer", provider="openai")
    run = blocked_run()
    episode = ProviderBlock.objects.get()
    assert episode.runs_blocked == 2 and episode.github_issue_url == ""
    assert "HTTP 500 (Server Error)" in episode.notification_error
    queued.refresh_from_db()
    assert queued.status == "blocked" and agent_runs.blocked_since(run)
    assert Alert.objects.open().filter(source__startswith="provider:").count() == 1
    probes.notify_blocked(episode.pk)  # the next pass tries again: not logged twice
    assert sum("HTTP 500" in r.getMessage() for r in caplog.records) == 1
    github.fail_with = None
    probes.notify_blocked(episode.pk)
    episode.refresh_from_db()
    assert episode.github_issue_url and episode.notification_error == ""
    assert TOKEN not in caplog.text


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_github_unreachable_or_unconfigured_sends_nothing_and_blocks_anyway(settings, eager, redis_prefix):
    settings.AGENTFLOW_GITHUB_REPO, settings.AGENTFLOW_GITHUB_TOKEN = "acme/agents", TOKEN
    settings.AGENTFLOW_GITHUB_API_URL, settings.AGENTFLOW_GITHUB_TIMEOUT_SECONDS = "http://127.0.0.1:9", 2
    blocked_run()
    episode = ProviderBlock.objects.get()
    assert "GitHub POST /repos/acme/agents/issues:" in episode.notification_error
    settings.AGENTFLOW_GITHUB_TOKEN = ""
    blocked_run(agent="other")
    assert ProviderBlock.objects.get(agent="other").notification_error == ""


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_manual_unblock_closes_the_episode_and_a_new_block_is_a_new_episode(redis_prefix, operator):
    run = blocked_run()
    assert agent_runs.unblock(Actor.of_user(operator), "7", "writer", "openai", reason="re-logged in") == 1
    ended = ProviderBlock.objects.get()
    assert not ended.is_open and ended.ended_by == "operator" and ended.runs_requeued == 1
    run.refresh_from_db()
    assert run.status == "queued"
    blocked_run()
    assert ProviderBlock.objects.count() == 2 and ProviderBlock.objects.open().count() == 1


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_the_provider_command_lists_and_unblocks(redis_prefix, capsys):
    blocked_run()
    call_command("provider", "list")
    out = capsys.readouterr().out
    assert "7" in out and "writer" in out and "openai" in out and "blocked" in out
    call_command(
        "provider",
        "unblock",
        "--gateway",
        "7",
        "--agent",
        "writer",
        "--provider",
        "openai",
        "--reason",
        "fixed",
    )
    assert "1 run(s) requeued" in capsys.readouterr().out
    assert not ProviderBlock.objects.open().exists()
    entry = AuditEntry.objects.get(action="provider.unblock")
    assert entry.source == "command" and entry.reason == "fixed"
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no open block"):
        call_command("provider", "unblock", "--gateway", "7", "--agent", "writer", "--provider", "openai")


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_closed_issue_probes_at_once_and_a_successful_probe_unblocks_in_order(
    github: FakeGitHub, redis_prefix, settings
):
    """The same pass and settle as above, with the probe's outcome written as the listener
    would (the real-gateway version of this phase is the known gap in the branch report)."""
    from fleet.models import Agent, Gateway

    gateway = Gateway.objects.create(name="gh-gw", url="ws://127.0.0.1:9", token="t")
    Agent.objects.create(gateway=gateway, agent_id="writer", model="openai/gpt")
    first = blocked_run(gateway=str(gateway.pk))
    second = Run.objects.create(
        kind="agent.prompt", gateway=str(gateway.pk), agent="writer", provider="openai", status="blocked"
    )
    episode = ProviderBlock.objects.get()
    assert episode.github_issue_url.endswith("/issues/1")
    ProviderBlock.objects.filter(pk=episode.pk).update(last_probe_at=timezone.now())
    assert probes.probe_pass() == []  # not due, issue open
    github.close_issue(1)
    (probe,) = probes.probe_pass()
    assert "the GitHub issue was closed" in ProviderBlock.objects.get().last_probe_result
    Run.objects.filter(pk=probe.pk).update(status="succeeded")
    probe.refresh_from_db()
    probes.on_run_finished(Run, run=probe)
    episode.refresh_from_db()
    assert not episode.is_open and episode.ended_by == "system" and episode.runs_requeued == 2
    # requeued and (the dispatch runs eagerly here) started again oldest first
    assert not Run.objects.filter(status="blocked").exists()
    started = Attempt.objects.filter(run__in=[first, second]).order_by("started_at", "run_id")
    assert [a.run_id for a in started][:2] == [first.pk, second.pk]
    assert agent_runs.blocked_since(first) == ""
    comment = [r for r in github.of("POST") if r.path.endswith("/issues/1/comments")]
    assert len(comment) == 1 and "2 blocked run(s) requeued" in comment[0].body["body"]
    assert github.of("PATCH")[-1].body["state"] == "closed"
