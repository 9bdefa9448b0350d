"""Blocked providers: the episode record, the probe and the GitHub issue.

The life of an episode (fleet/README.md, "Blocked providers"):

1. A run fails with ``provider_auth``: :func:`fleet.agent_runs.on_provider_blocked` sets the
   Redis flag (the hot path every worker reads), blocks the agent's queued runs and calls
   :func:`open_episode`: one ``ProviderBlock`` row, and on commit the GitHub issue
   (:func:`notify_blocked`, a Celery task) when ``AGENTFLOW_GITHUB_REPO`` and ``_TOKEN`` are set.
2. Every ``AGENTFLOW_PROVIDER_PROBE_SECONDS`` beat runs :func:`probe_pass`: for each open episode,
   the issue's state is read (closed by someone: probe now), and a probe is sent when one is due
   and none is in flight: a tiny ``agent.prompt`` run (urgent, trigger system, one attempt, the
   ``probe`` parameter that lets it through the block, ``dedupe_key`` = the episode).
3. The probe ends (``scheduler.signals.run_finished``, :func:`on_run_finished`): succeeded →
   :func:`fleet.agent_runs.unblock` as the system (flag cleared, alert resolved, blocked runs
   requeued in their first order, the episode closed, the issue commented on and closed);
   anything else → the result is recorded on the episode and the block stands.

GitHub calls go through :func:`github_call` only (urllib, a timeout, the token in a header and
nowhere else). A failure is logged once, kept on the episode (``notification_error``) and never
undoes or delays the block; a missing issue is opened again by the next pass.
"""

from __future__ import annotations

import contextlib
import json
import logging
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from scheduler import notify, queue
from scheduler.models import Priority, ProviderBlock, Run
from scheduler.notifications import delivery

log = logging.getLogger("agentflow.probes")

PROBE_PARAM = "probe"


def dedupe_key(episode: ProviderBlock) -> str:
    return f"provider-probe:{episode.pk}"


def is_probe(run: Run) -> bool:
    return bool((run.params or {}).get(PROBE_PARAM))


# --- the record --------------------------------------------------------------------------------


def open_episode(run: Run, reason: str, runs_blocked: int) -> ProviderBlock:
    """The row of a new episode (inside the blocking transaction); the issue is opened on commit."""
    episode = ProviderBlock.objects.create(
        gateway=run.gateway, agent=run.agent, provider=run.provider, reason=reason, runs_blocked=runs_blocked
    )
    transaction.on_commit(lambda: _later("notify_blocked", episode.pk))
    title, body = issue_text(episode)
    notify.send(
        notify.Event(
            kind="provider.blocked",
            subject=title.removeprefix("AgentFlow: "),
            text=body,
            level="error",
            thread=thread(episode),
            link="/queue/",
            data=_event_data(episode),
        )
    )
    return episode


def count_blocked(run: Run) -> None:
    """A run blocked under a standing flag (queued after the episode began) counts on it."""
    ProviderBlock.objects.open().of(run.gateway, run.agent, run.provider).update(
        runs_blocked=F("runs_blocked") + 1
    )


def close_episode(gateway: str, agent: str, provider: str, by: str, requeued: int) -> ProviderBlock | None:
    """End the open episode (inside unblock's transaction); the issue is closed on commit."""
    episode = ProviderBlock.objects.open().of(gateway, agent, provider).select_for_update().first()
    if episode is None:
        return None
    episode.ended_at = timezone.now()
    episode.ended_by = by[:200]
    episode.runs_requeued = requeued
    episode.save(update_fields=["ended_at", "ended_by", "runs_requeued"])
    if episode.github_issue_url:
        transaction.on_commit(lambda: _later("notify_unblocked", episode.pk))
    provider_name = episode.provider or "(unnamed provider)"
    notify.send(
        notify.Event(
            kind="provider.restored",
            subject=f"provider {provider_name} of agent {episode.agent} is unblocked "
            f"(gateway {episode.gateway})",
            text=f"Unblocked by {episode.ended_by or 'AgentFlow'} after {episode.probes} probe(s); "
            f"{requeued} blocked run(s) requeued in their original order.",
            thread=thread(episode),
            link="/queue/",
            data={**_event_data(episode), "runs_requeued": requeued, "ended_by": episode.ended_by},
        )
    )
    return episode


def thread(episode: ProviderBlock) -> str:
    """The notification thread of an episode: its GitHub-channel issue is opened once, commented
    on and closed by the restore."""
    return f"provider-block:{episode.pk}"


def _event_data(episode: ProviderBlock) -> dict[str, Any]:
    return {
        "episode": episode.pk,
        "gateway": episode.gateway,
        "agent": episode.agent,
        "provider": episode.provider,
        "reason": episode.reason[:500],
        "runs_blocked": episode.runs_blocked,
    }


def _later(name: str, episode_id: int) -> None:
    """Queue a notification task (GitHub is slow I/O: never in the completing transaction, never
    on the listener's thread); a broker down is logged (the next pass opens a missing issue)."""
    if not github_configured():
        return
    from . import tasks  # tasks imports this module

    task = {
        "notify_blocked": tasks.notify_provider_blocked,
        "notify_unblocked": tasks.notify_provider_unblocked,
    }[name]
    try:
        task.delay(episode_id)
    except Exception:
        log.warning("could not queue %s (broker down?)", name, exc_info=True)


# --- the probe ---------------------------------------------------------------------------------


def probe_in_flight(episode: ProviderBlock) -> Run | None:
    return Run.objects.filter(dedupe_key=dedupe_key(episode), status__in=Run.NOT_FINAL).first()


def send_probe(episode: ProviderBlock, why: str = "due") -> Run | None:
    """Queue the episode's probe (None: one is already in flight, or it cannot be queued: the
    reason is recorded on the episode)."""
    if probe_in_flight(episode) is not None:
        return None
    params: dict[str, Any] = {"gateway": episode.gateway, "agent": episode.agent, PROBE_PARAM: True}
    if episode.provider:
        params["provider"] = episode.provider
    now = timezone.now()
    try:
        run = queue.enqueue(
            kind="agent.prompt",
            params=params,
            prompt=settings.AGENTFLOW_PROVIDER_PROBE_PROMPT,
            priority=Priority.URGENT,
            trigger=Run.Trigger.SYSTEM,
            triggered_by=f"probe of provider block {episode.pk}",
            max_attempts=1,
            timeout_seconds=settings.AGENTFLOW_PROVIDER_PROBE_TIMEOUT_SECONDS,
            dedupe_key=dedupe_key(episode),
        )
    except ValidationError as exc:  # the gateway or agent is gone: say so, keep the episode
        ProviderBlock.objects.filter(pk=episode.pk).update(
            last_probe_at=now, last_probe_result=f"could not queue a probe: {exc.messages[0]}"
        )
        return None
    ProviderBlock.objects.filter(pk=episode.pk).update(
        probes=F("probes") + 1, last_probe_at=now, last_probe_result=f"run {run.pk} sent ({why})"
    )
    return run


def probe_pass(now: Any = None) -> list[Run]:
    """Beat's pass: read each open episode's issue, then probe the ones due (or whose issue was
    closed). Returns the probes queued."""
    now = now or timezone.now()
    due_before = now - timedelta(seconds=settings.AGENTFLOW_PROVIDER_PROBE_SECONDS)
    sent = []
    for episode in ProviderBlock.objects.open().order_by("pk"):
        why = ""
        if github_configured():
            if not episode.github_issue_url:
                notify_blocked(episode.pk)
            elif refresh_issue_state(episode) == "closed":
                why = "the GitHub issue was closed"
        if not why and delivery.thread_issue_closed(thread(episode)):
            why = "the GitHub issue of a notification channel was closed"
        if not why and (episode.last_probe_at is None or episode.last_probe_at <= due_before):
            why = "due"
        if why:
            run = send_probe(episode, why)
            if run is not None:
                sent.append(run)
    return sent


def _episode_of(run: Run) -> ProviderBlock | None:
    prefix = "provider-probe:"
    if not run.dedupe_key.startswith(prefix) or not run.dedupe_key[len(prefix) :].isdigit():
        return None
    return ProviderBlock.objects.filter(pk=int(run.dedupe_key[len(prefix) :])).first()


def on_run_finished(sender: Any, run: Run, **kwargs: Any) -> None:
    """scheduler.signals.run_finished (on commit): a probe's end unblocks or is recorded."""
    if run.kind != "agent.prompt" or not is_probe(run):
        return
    try:
        settle_probe(run)
    except Exception:  # a receiver must not break the completion that sent the signal
        log.exception("probe run %s: could not settle its episode", run.pk)


def settle_probe(run: Run) -> ProviderBlock | None:
    from . import agent_runs  # agent_runs imports this module

    episode = _episode_of(run)
    if episode is None or not episode.is_open:
        return episode
    if run.status == Run.Status.SUCCEEDED:
        ProviderBlock.objects.filter(pk=episode.pk).update(
            last_probe_result=f"run {run.pk} succeeded: unblocked"
        )
        from scheduler.audit import Actor

        agent_runs.unblock(
            Actor.system(),
            episode.gateway,
            episode.agent,
            episode.provider,
            reason=f"probe run {run.pk} succeeded",
        )
    else:
        detail = f"{run.error_class}: {run.error[:300]}" if run.error_class else run.status
        ProviderBlock.objects.filter(pk=episode.pk).update(
            last_probe_result=f"run {run.pk} {run.status} ({detail}); still blocked"
        )
    episode.refresh_from_db()
    return episode


# --- GitHub ------------------------------------------------------------------------------------


class GitHubError(Exception):
    """A GitHub call that failed: the message names the call and the status, never the token."""


def github_configured() -> bool:
    return bool(settings.AGENTFLOW_GITHUB_REPO and settings.AGENTFLOW_GITHUB_TOKEN)


def github_call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one choke point for GitHub's REST API: JSON in and out, a timeout, typed errors."""
    url = settings.AGENTFLOW_GITHUB_API_URL.rstrip("/") + path
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - a configured https URL
    request.add_header("Accept", "application/vnd.github+json")
    request.add_header("X-GitHub-Api-Version", "2022-11-28")
    request.add_header("User-Agent", "AgentFlow")
    request.add_header("Authorization", f"Bearer {settings.AGENTFLOW_GITHUB_TOKEN}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=settings.AGENTFLOW_GITHUB_TIMEOUT_SECONDS) as response:  # noqa: S310
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = ""
        with contextlib.suppress(ValueError, AttributeError):
            detail = str(json.loads(exc.read() or b"{}").get("message") or "")[:200]
        raise GitHubError(
            f"GitHub {method} {path}: HTTP {exc.code}" + (f" ({detail})" if detail else "")
        ) from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise GitHubError(f"GitHub {method} {path}: {reason}") from None
    try:
        parsed = json.loads(raw or b"{}")
    except ValueError:
        raise GitHubError(f"GitHub {method} {path}: the answer is not JSON") from None
    return parsed if isinstance(parsed, dict) else {}


def _repo_path() -> str:
    return f"/repos/{settings.AGENTFLOW_GITHUB_REPO.strip('/')}"


def _issue_number(episode: ProviderBlock) -> str:
    return episode.github_issue_url.rstrip("/").rsplit("/", 1)[-1]


def _queue_link() -> str:
    return (settings.AGENTFLOW_PUBLIC_URL.rstrip("/") or "") + "/queue/"


def issue_text(episode: ProviderBlock) -> tuple[str, str]:
    provider = episode.provider or "(unnamed provider)"
    title = f"AgentFlow: provider {provider} of agent {episode.agent} is blocked (gateway {episode.gateway})"
    body = "\n".join(
        [
            f"A run of agent **{episode.agent}** on gateway **{episode.gateway}** failed because the "
            f"provider **{provider}** refused its credentials (the provider login expired?).",
            "",
            f"- Reason: {episode.reason}",
            f"- Since: {episode.started_at:%Y-%m-%d %H:%M:%S} UTC",
            f"- Runs held blocked: {episode.runs_blocked}",
            f"- Queue page: {_queue_link()}",
            "",
            "AgentFlow probes the provider with a tiny run every "
            f"{settings.AGENTFLOW_PROVIDER_PROBE_SECONDS:g} s and when this issue is closed; the first "
            "success unblocks it and requeues the blocked runs in their original order.",
            "Re-authenticate the provider on the gateway, then close this issue to probe at once.",
        ]
    )
    return title, body


def _record_failure(episode: ProviderBlock, error: GitHubError) -> None:
    message = str(error)
    if episode.notification_error != message:  # logged once, not on every pass
        log.warning("provider block %s: %s", episode.pk, message)
    ProviderBlock.objects.filter(pk=episode.pk).update(notification_error=message)


def notify_blocked(episode_id: int) -> ProviderBlock | None:
    """Open the episode's GitHub issue (once; nothing when GitHub is not configured)."""
    episode = ProviderBlock.objects.filter(pk=episode_id).first()
    if episode is None or not github_configured() or episode.github_issue_url or not episode.is_open:
        return episode
    title, body = issue_text(episode)
    try:
        issue = github_call("POST", f"{_repo_path()}/issues", {"title": title, "body": body})
    except GitHubError as exc:
        _record_failure(episode, exc)
        return episode
    url = str(issue.get("html_url") or "")[:300]
    ProviderBlock.objects.filter(pk=episode.pk).update(
        github_issue_url=url, github_issue_state=str(issue.get("state") or "open")[:10], notification_error=""
    )
    episode.refresh_from_db()
    return episode


def notify_unblocked(episode_id: int) -> ProviderBlock | None:
    """Comment on the episode's issue how it ended, then close it."""
    episode = ProviderBlock.objects.filter(pk=episode_id).first()
    if episode is None or not github_configured() or not episode.github_issue_url:
        return episode
    number = _issue_number(episode)
    comment = (
        f"Unblocked by {episode.ended_by or 'AgentFlow'} at {episode.ended_at:%Y-%m-%d %H:%M:%S} UTC "
        f"after {episode.probes} probe(s); {episode.runs_requeued} blocked run(s) requeued in their "
        "original order."
    )
    try:
        github_call("POST", f"{_repo_path()}/issues/{number}/comments", {"body": comment})
        github_call(
            "PATCH", f"{_repo_path()}/issues/{number}", {"state": "closed", "state_reason": "completed"}
        )
    except GitHubError as exc:
        _record_failure(episode, exc)
        return episode
    ProviderBlock.objects.filter(pk=episode.pk).update(github_issue_state="closed", notification_error="")
    episode.refresh_from_db()
    return episode


def refresh_issue_state(episode: ProviderBlock) -> str:
    """The issue's state as GitHub says now ('' when it cannot be read), kept on the episode."""
    try:
        issue = github_call("GET", f"{_repo_path()}/issues/{_issue_number(episode)}")
    except GitHubError as exc:
        _record_failure(episode, exc)
        return ""
    state = str(issue.get("state") or "")[:10]
    ProviderBlock.objects.filter(pk=episode.pk).update(github_issue_state=state)
    episode.github_issue_state = state
    return state
