"""The agent-prompt kind (``agent.prompt``): a run that sends its prompt to one agent of a gateway.

The life of an attempt (fleet/README.md, "Agent runs"; openclaw/AUTOMATION.md section 5):

1. ``start`` (in a worker): ``chat.send`` to a fresh session key derived from the attempt
   (``agent:<agent>:af-<run>-<attempt>``; a busy session would absorb the text) with the attempt
   id as ``idempotencyKey`` (so the gateway's runId is the attempt id and a second send of the
   same attempt within the gateway's ~5 min window starts nothing new), and ``timeoutMs`` = the
   run's timeout (the gateway ends a run that overruns). Returns ``Started`` at once: no worker
   waits for the reply. A send that fails is classified (unreachable, timeout, invalid_request…).
2. The listener (fleet/events.py) hands every terminal ``chat`` event to :func:`complete_from_event`:
   the first terminal event per runId settles the attempt (``complete_attempt`` is idempotent),
   then :func:`record_usage` reads tokens and cost from ``chat.history``.
3. The engine's tick asks :func:`reconcile` about an attempt past its timeout plus grace (its
   events were missed: listener down, gateway restarted) and settles it from ``chat.history`` /
   ``sessions.describe``.
4. ``cancel``: ``chat.abort {sessionKey, runId}``.

A bare ``final`` (no message) means the text was absorbed into another run of a busy session
(AUTOMATION.md section 3): the attempt fails with ``invalid_request`` (final, not retried: the
agent did see the text inside someone else's turn, so an automatic resend could do the work
twice; an operator's retry sends it again on a fresh session). Fresh session keys make it rare.

Provider auth (a provider login expired): the engine blocks the run and calls
:func:`on_provider_blocked`, which flags (gateway, agent, provider) as blocked in Redis, blocks
that provider's other queued runs of the agent, and raises one alert. While the flag stands
``start`` answers ``provider_auth`` without calling the gateway, so runs queued later block too.
:func:`unblock` (an operator's control) clears the flag, resolves the alert and requeues the
blocked runs in their original order (selection goes by id).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Mapping
from functools import partial
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from agentflow.lib.redis import get_redis, key
from openclaw import GatewayError
from scheduler import admission, alert_rules, audit, errors, queue, signals
from scheduler.actions import ActionSpec, AttemptContext, Finished, Started
from scheduler.audit import Actor, Target
from scheduler.models import Alert, Attempt, ProviderBlock, Run

from . import probes, run_errors, services
from .models import Agent, Gateway

log = logging.getLogger("agentflow.agent_runs")

KIND = "agent.prompt"
PARAMS = ("gateway", "agent", "model", "provider", "probe", "traceparent")
TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
TERMINAL = ("final", "error", "aborted")
ABSORBED = (
    "absorbed into a busy session: the gateway merged this prompt into another run of {session} "
    "(no reply of its own); not retried automatically, retry the run to send it on a fresh session"
)


# --- parameters ----------------------------------------------------------------------------------


def _gateway(value: Any) -> Gateway:
    if value in (None, ""):
        enabled = list(Gateway.objects.filter(enabled=True)[:2])
        if len(enabled) == 1:  # the only gateway: a flow's agent step need not name it
            return enabled[0]
    if isinstance(value, bool) or value in (None, ""):
        raise ValidationError(
            "agent.prompt: gateway is required (its id or name) when more or fewer than one is enabled",
            code="invalid_params",
        )
    found: Gateway | None = None
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        found = Gateway.objects.filter(pk=int(value)).first()
    if found is None and isinstance(value, str):
        found = Gateway.objects.filter(name=value).first()
    if found is None:
        known = ", ".join(Gateway.objects.order_by("name").values_list("name", flat=True)) or "none"
        raise ValidationError(
            f"agent.prompt: no gateway {value!r} (registered: {known})", code="invalid_params"
        )
    return found


def validate(params: Mapping[str, Any]) -> dict[str, Any]:
    """``{gateway: id or name, agent: id, model?, provider?}`` → gateway stored as its id; the agent
    must be one the gateway reported. The provider defaults to the agent's model's provider (the
    part before "/"), so provider limits and blocks apply to runs that do not name one."""
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise ValidationError(
            f"agent.prompt: unknown parameter(s) {', '.join(unknown)} (use {', '.join(PARAMS)})",
            code="invalid_params",
        )
    gateway = _gateway(params.get("gateway"))
    agent_id = params.get("agent")
    if not isinstance(agent_id, str) or not agent_id.strip():
        raise ValidationError("agent.prompt: agent is required (an agent id)", code="invalid_params")
    agent = Agent.objects.filter(gateway=gateway, agent_id=agent_id.strip()).first()
    if agent is None:
        known = (
            ", ".join(gateway.agents.order_by("agent_id").values_list("agent_id", flat=True)) or "none yet"
        )
        raise ValidationError(
            f"agent.prompt: gateway {gateway.name} has no agent {agent_id!r} (known: {known})",
            code="invalid_params",
        )
    cleaned: dict[str, Any] = {"gateway": gateway.pk, "agent": agent.agent_id}
    for name in ("model", "provider"):
        value = params.get(name)
        if value in (None, ""):
            continue
        if not isinstance(value, str) or len(value) > 100:
            raise ValidationError(
                f"agent.prompt: {name} must be text (at most 100 characters)", code="invalid_params"
            )
        cleaned[name] = value.strip()
    traceparent = params.get("traceparent")
    if traceparent not in (None, ""):
        if not isinstance(traceparent, str) or not TRACEPARENT.fullmatch(traceparent):
            raise ValidationError(
                "agent.prompt: traceparent must be a W3C traceparent", code="invalid_params"
            )
        cleaned["traceparent"] = traceparent  # sent on chat.send: the gateway may continue the trace
    probe = params.get("probe")
    if probe not in (None, False):
        if probe is not True:
            raise ValidationError("agent.prompt: probe must be true or absent", code="invalid_params")
        cleaned["probe"] = True  # a provider probe (fleet/probes.py): it goes through the block
    model = cleaned.get("model") or agent.model
    if "provider" not in cleaned and model and "/" in model:
        cleaned["provider"] = model.split("/", 1)[0]
    return cleaned


# --- start / cancel ------------------------------------------------------------------------------


def _gateway_of(ctx: AttemptContext) -> Gateway | None:
    value = ctx.params.get("gateway")
    return Gateway.objects.filter(pk=value).first() if isinstance(value, int) else None


def session_key(ctx: AttemptContext) -> str:
    """A fresh session per attempt (never a busy one), the same for a repeated send of one attempt."""
    return f"agent:{ctx.params['agent']}:af-{ctx.run.pk}-{ctx.attempt.pk.hex[:12]}"


def _failed(info: run_errors.ErrorInfo) -> Finished:
    return Finished("failed", info.error_class, info.message)


def start(ctx: AttemptContext) -> Finished | Started:
    gateway = _gateway_of(ctx)
    if gateway is None:
        return Finished(
            "failed", errors.INVALID_REQUEST, f"gateway {ctx.params.get('gateway')} no longer exists"
        )
    if not ctx.prompt.strip():
        return Finished("failed", errors.INVALID_REQUEST, "the run has no prompt to send")
    blocked = "" if probes.is_probe(ctx.run) else blocked_since(ctx.run)
    if blocked:
        return Finished(
            "failed",
            errors.PROVIDER_AUTH,
            f"provider {ctx.run.provider} of agent {ctx.run.agent} is blocked: {blocked}",
        )
    key_ = session_key(ctx)
    try:
        with services.connected(gateway) as client:
            ack = client.chat_send(
                key_,
                ctx.prompt,
                idempotency_key=ctx.attempt_id,
                traceparent=ctx.params.get("traceparent"),
                timeoutMs=ctx.run.timeout_seconds * 1000,
            )
    except (GatewayError, OSError, TimeoutError) as exc:
        return _failed(run_errors.classify(exc) or run_errors.ErrorInfo(errors.SYSTEM, str(exc)))
    run_id = str(ack.get("runId") or ctx.attempt_id) if isinstance(ack, dict) else ctx.attempt_id
    return Started(session_key=key_, external_id=run_id)


def cancel(ctx: AttemptContext) -> None:
    gateway = _gateway_of(ctx)
    key_ = ctx.attempt.session_key or session_key(ctx)
    if gateway is not None:
        services.abort_chat(gateway, key_, run_id=ctx.attempt.external_id or ctx.attempt_id)


# --- completion from the listener ----------------------------------------------------------------


def _text_of(message: Any) -> str:
    if not isinstance(message, Mapping):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text") or "")
            for part in content
            if isinstance(part, Mapping) and part.get("type") == "text"
        )
    return ""


def finished_from_event(payload: Mapping[str, Any]) -> Finished | None:
    """What a terminal ``chat`` payload means for its attempt (None: not terminal)."""
    state = run_errors.outcome(payload)
    if state == "succeeded":
        return Finished("succeeded", result=_text_of(payload.get("message")))
    if state == "absorbed":
        return Finished("failed", errors.INVALID_REQUEST, ABSORBED.format(session=payload.get("sessionKey")))
    if state in ("failed", "aborted"):
        info = run_errors.classify(payload) or run_errors.ErrorInfo(errors.SYSTEM, "the run failed")
        return Finished(
            "aborted" if state == "aborted" else "failed",
            info.error_class,
            info.message,
            retry_after=info.retry_after_seconds,
        )
    return None


def _attempt_uuid(run_id: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(run_id))
    except ValueError:
        return None


def complete_from_event(gateway_id: int, payload: Mapping[str, Any]) -> Run | None:
    """Settle the attempt a terminal chat event belongs to; None for an unknown runId (a chat of
    the dashboard's panel, another client's run) or an attempt already settled (a later terminal
    event of the same run: the first one wins). A rate-limit's Retry-After is kept for the
    engine's retry_after hook (it reads the error text)."""
    attempt_id = _attempt_uuid(payload.get("runId"))
    if attempt_id is None:
        return None
    if not Attempt.objects.filter(pk=attempt_id, status=Attempt.Status.RUNNING, run__kind=KIND).exists():
        return None
    outcome = finished_from_event(payload)
    if outcome is None:
        return None
    return queue.complete_attempt(attempt_id, outcome)


# --- usage ---------------------------------------------------------------------------------------


def usage_of(message: Mapping[str, Any]) -> dict[str, Any]:
    """The usage of one assistant message of ``chat.history`` in the run's terms."""
    raw = message.get("usage")
    if not isinstance(raw, Mapping):
        return {}
    cost = raw.get("cost")
    usage: dict[str, Any] = {
        "input_tokens": int(raw.get("input") or 0),
        "output_tokens": int(raw.get("output") or 0),
        "total_tokens": int(raw.get("totalTokens") or 0),
        "cache_read_tokens": int(raw.get("cacheRead") or 0),
        "cache_write_tokens": int(raw.get("cacheWrite") or 0),
        "cost": float(cost.get("total") or 0) if isinstance(cost, Mapping) else 0.0,
    }
    for name in ("provider", "model"):
        if isinstance(message.get(name), str):
            usage[name] = message[name]
    return usage


def _run_message(messages: Any, attempt_id: str) -> Mapping[str, Any] | None:
    """The last assistant message of the run ``attempt_id`` in a ``chat.history`` answer."""
    found = None
    for message in messages if isinstance(messages, list) else []:
        meta = message.get("__openclaw") if isinstance(message, Mapping) else None
        if (
            message.get("role") == "assistant"
            and isinstance(meta, Mapping)
            and meta.get("runId") == attempt_id
        ):
            found = message
    return found


def store_usage(attempt_id: str, usage: Mapping[str, Any]) -> None:
    if not usage:
        return
    with transaction.atomic():
        run = Run.objects.select_for_update(of=("self",)).filter(attempt_set__pk=attempt_id).first()
        if run is not None:
            run.usage = {**(run.usage or {}), **usage}
            run.save(update_fields=["usage"])
    if run is not None:
        admission.charge_tokens(run, usage)  # the tpm budgets learn the run's real use


async def record_usage(gateway_id: int, session_key: str, attempt_id: str) -> dict[str, Any]:
    """Read the run's usage from ``chat.history`` (it is not on the terminal event) and store it
    on the run. Errors are logged: usage is worth having, never worth failing a run for."""
    gateway = await sync_to_async(Gateway.objects.filter(pk=gateway_id).first)()
    if gateway is None:
        return {}
    client = services.async_client(gateway)
    try:
        await client.connect()
        history = await client.chat_history(session_key)
    except GatewayError as exc:
        log.warning("run %s: could not read its usage: %s", attempt_id, exc)
        return {}
    finally:
        await client.close()
    message = _run_message(history.get("messages") if isinstance(history, dict) else None, attempt_id)
    usage = usage_of(message) if message else {}
    await sync_to_async(store_usage)(attempt_id, usage)
    return usage


_background: set[asyncio.Task[Any]] = set()


async def on_terminal_event(gateway_id: int, payload: dict[str, Any]) -> None:
    """The listener's part (fleet/events.py): settle, then read usage in the background so the
    listener's event loop goes on at once."""
    run = await sync_to_async(complete_from_event)(gateway_id, payload)
    if run is None:
        return
    task = asyncio.create_task(
        record_usage(gateway_id, str(payload.get("sessionKey")), str(payload["runId"]))
    )
    _background.add(task)
    task.add_done_callback(_background.discard)


async def drain() -> None:
    """Wait for the usage reads in flight (tests; a listener that stops)."""
    if _background:
        await asyncio.gather(*list(_background), return_exceptions=True)


# --- reconcile -----------------------------------------------------------------------------------


def reconcile(ctx: AttemptContext) -> Finished | None:
    """How an attempt whose events were missed ended, from ``chat.history`` (its assistant message)
    and ``sessions.describe`` (the session row); None while it still runs or nothing says."""
    gateway = _gateway_of(ctx)
    if gateway is None:
        return Finished(
            "failed", errors.INVALID_REQUEST, f"gateway {ctx.params.get('gateway')} no longer exists"
        )
    key_ = ctx.attempt.session_key or session_key(ctx)
    with services.connected(gateway) as client:
        history = client.chat_history(key_)
        row: Mapping[str, Any] = {}
        try:
            described = client.call("sessions.describe", {"key": key_})
            row = described.get("session") or {} if isinstance(described, dict) else {}
        except GatewayError:
            pass
    message = _run_message(history.get("messages") if isinstance(history, dict) else None, ctx.attempt_id)
    if row.get("hasActiveRun") or row.get("status") in ("running", "queued"):
        return None
    if row.get("abortedLastRun") or row.get("status") == "killed":
        return Finished("aborted", errors.ABORTED, "the run was aborted (settled from the session row)")
    if message is not None:
        error = message.get("errorMessage")
        if message.get("stopReason") == "error" or error:
            # chat.history keeps the failure as the message's text ("LLM request failed (… HTTP 500)")
            info = run_errors.classify({"state": "error", "errorMessage": str(error or _text_of(message))})
            assert info is not None
            return Finished("failed", info.error_class, info.message, usage=usage_of(message))
        return Finished("succeeded", result=_text_of(message), usage=usage_of(message))
    if row.get("status") in ("failed", "error"):
        return Finished("failed", errors.SERVER_ERROR, f"the session ended {row.get('status')} with no reply")
    return None


# --- blocked providers ---------------------------------------------------------------------------


def _block_key(gateway: str, agent: str, provider: str) -> str:
    return key("provider-blocked", gateway, agent, provider or "-")


def blocked_since(run: Run) -> str:
    """The reason the run's (gateway, agent, provider) is blocked, '' when it is not."""
    raw = get_redis().get(_block_key(run.gateway, run.agent, run.provider))
    return raw.decode() if isinstance(raw, bytes) else (raw or "")


def is_blocked(gateway: str, agent: str, provider: str) -> bool:
    """An open episode or a standing flag (a flag set before episodes were recorded counts)."""
    return bool(
        ProviderBlock.objects.open().of(gateway, agent, provider).exists()
        or get_redis().exists(_block_key(gateway, agent, provider))
    )


def _alert_source(gateway: str, agent: str, provider: str) -> str:
    return f"provider:{gateway}:{agent}:{provider or '-'}"[:50]


def on_provider_blocked(run: Run, error: str) -> None:
    """The engine's provider_blocked hook (inside complete_attempt's transaction): block the
    agent's provider, block its other queued runs, raise one alert per episode."""
    if run.kind != KIND:
        return
    if probes.is_probe(run):
        # A failed probe ends (it is never requeued with the runs it stands for); its episode
        # records the result (probes.on_run_finished). The engine sees the final state.
        run.status, run.finished_at = Run.Status.FAILED, timezone.now()
        run.save(update_fields=["status", "finished_at"])
        return
    reason = f"{timezone.now():%Y-%m-%d %H:%M:%S} UTC: {error[:300]}"
    if not get_redis().set(_block_key(run.gateway, run.agent, run.provider), reason, nx=True):
        probes.count_blocked(run)  # a run queued after the episode began
        return  # the episode is already recorded
    blocked = Run.objects.filter(
        status=Run.Status.QUEUED, kind=KIND, gateway=run.gateway, agent=run.agent, provider=run.provider
    ).update(status=Run.Status.BLOCKED)
    probes.open_episode(run, reason, runs_blocked=blocked + 1)
    # The provider-blocked alert rule's event side: raised at once (the evaluator keeps it open
    # while the episode is, scheduler/alert_conditions.py).
    alert_rules.fire(
        "provider-blocked",
        f"{run.gateway}:{run.agent}:{run.provider or '-'}",
        (
            f"provider {run.provider or '?'} of agent {run.agent} (gateway {run.gateway}) is blocked: "
            f"{error[:300]}. "
            f"Run {run.pk} and {blocked} queued run(s) wait blocked; re-authenticate, then unblock."
        ),
        source=_alert_source(run.gateway, run.agent, run.provider),
    )
    log.warning("provider %s of agent %s blocked (run %s): %s", run.provider, run.agent, run.pk, error[:300])


def unblock(actor: Actor, gateway: str, agent: str, provider: str, reason: str = "") -> int:
    """Clear a provider block: its alert resolved, its blocked runs queued again in their first
    order (one dispatch each). Returns how many runs were requeued."""
    target = Target("provider", f"{gateway}:{agent}:{provider}", f"provider {provider} of agent {agent}")
    with audit.control("provider.unblock", actor, target, reason=reason) as ctl:
        get_redis().delete(_block_key(gateway, agent, provider))
        with transaction.atomic():
            runs = Run.objects.filter(
                status=Run.Status.BLOCKED, kind=KIND, gateway=gateway, agent=agent, provider=provider
            )
            by_priority: dict[str, int] = {}
            for priority in runs.values_list("priority", flat=True):
                by_priority[priority] = by_priority.get(priority, 0) + 1
            requeued = runs.update(status=Run.Status.QUEUED)
            alert_rules.clear("provider-blocked", f"{gateway}:{agent}:{provider or '-'}")
            # An alert raised before the rules (no rule key) resolves by its source.
            Alert.objects.open().filter(source=_alert_source(gateway, agent, provider), rule="").update(
                resolved_at=timezone.now()
            )
            for priority, n in by_priority.items():
                transaction.on_commit(partial(queue.send_dispatch, priority, n))
            probes.close_episode(gateway, agent, provider, actor.label, requeued)
        ctl.note(f"{requeued} run(s) requeued")
    return requeued


ACTION = ActionSpec(
    KIND,
    "Agent prompt",
    start=start,
    validate=validate,
    cancel=cancel,
    reconcile=reconcile,
    description="Sends the prompt to an agent on a fresh session; the listener's events complete the run.",
)


def register() -> None:
    from scheduler.actions import register_action

    register_action(ACTION)
    errors.set_provider_blocked_hook(on_provider_blocked)
    signals.run_finished.connect(probes.on_run_finished, dispatch_uid="fleet-provider-probe")
