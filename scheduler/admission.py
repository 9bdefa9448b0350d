"""Admission: the shared rate limiter and the circuit breakers, applied to the queue's runs.

A run with a ``gateway`` or a ``provider`` (an agent run; a noop run given those parameters)
is admitted at its claim, after the conditional UPDATE made it ours and before an Attempt is
written (scheduler/queue.py ``_take``):

1. ``limits.acquire(keys_for(gateway, provider, model))``; refused → the run waits;
2. ``breakers.check(gateway, provider)``; open, or half-open with the probe taken → it waits.

A wait is not an attempt and not an error: the run goes back to ``scheduled`` with
``run_after = next_attempt_at = now + wait``. Two things keep the pace exact without the tick's
2 s granularity, and without depending on how long a start takes:

- a **hold** in Redis (``<prefix>:queue:held``, member → until) that the claim's ``eligible()``
  reads, so the other queued runs of a key are not claimed (and refused, and deferred) one
  after another while the key waits: they keep their place in the queue. An admitted run
  whose keys are paced (``Admitted.next_seconds``: the limiter's next slot) holds its key's
  other queued runs until that slot (scheduler/queue.py ``_pace_next``), before its action
  starts;
- a **wake** message (``scheduler.tasks.wake``) with a countdown of the wait, scoped to the
  hold's runs: sent for a refused run's wait, for an admitted run's next slot and for the end
  of a rate-limit backoff. It queues the due runs and starts the key's oldest run, whose
  admission holds the key again and sends the next slot's wake-up: one wake-up per slot, and
  the pace goes on while a start waits on a slow gateway or no run completes.

Redis unreachable: fail closed, the run waits ``UNAVAILABLE_WAIT`` seconds (one warning until
Redis answers again). After an attempt (``record_outcome``): success → the provider's backoff
is cleared, the breaker records a success, tokens are charged; an execution failure (server
error, timeout, unreachable) → the breaker records a failure; a rate-limit error backs the
provider off (``rate_limit_wait``, the engine's retry-after hook) and that is the run's wait.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db.models import Q
from redis.exceptions import RedisError

from agentflow.lib.redis import get_redis, key

from . import breakers, errors, limits

if TYPE_CHECKING:
    from .actions import Finished
    from .models import Run

log = logging.getLogger("agentflow.scheduler.admission")

UNAVAILABLE_WAIT = 5.0  # seconds a run waits when Redis cannot decide (fail closed)
HALF_OPEN_RECHECK = 5.0  # while a probe is out, the held run asks again this often
HOLD_MARGIN = 0.01  # a hold ends this much before its run's wake-up
NO_PROVIDER = "-"  # the breaker's provider name for a run that names none
BREAKER = "breaker"
_state = {"redis_down": False}


@dataclass(frozen=True)
class Refusal:
    """Why a run may not start now and for how long it waits."""

    wait_seconds: float
    reason: str  # rpm, tpm, backoff, breaker, unavailable
    hold: str  # the hold member ('' for none): a limiter key or "breaker:[gateway, provider]"


@dataclass(frozen=True)
class Admitted:
    """The run may start now (it took its request from every budget). ``next_seconds``: when
    the next run of its keys may start (the pacing's next slot; 0 when no budget paces them),
    ``hold`` the key that sets that slot ('' for none)."""

    next_seconds: float = 0.0
    hold: str = ""


ADMITTED = Admitted()


def applies(run: Run) -> bool:
    return bool(run.gateway or run.provider)


def keys_of(run: Run) -> list[str]:
    params = run.params if isinstance(run.params, Mapping) else {}
    model = params.get("model") if isinstance(params.get("model"), str) else None
    return limits.keys_for(run.gateway or None, run.provider or None, model)


def breaker_provider(run: Run) -> str:
    return run.provider or NO_PROVIDER


def _breaker_hold(gateway: str, provider: str) -> str:
    return f"{BREAKER}:{json.dumps([gateway, provider])}"


def admit(run: Run) -> Refusal | Admitted:
    """``Admitted``: the run may start now (it took its request from every budget) and says
    when its keys' next slot opens. A refusal took nothing from the budgets and says how long
    the run waits."""
    if not applies(run):
        return ADMITTED
    admitted = ADMITTED
    try:
        try:
            keys = keys_of(run)
        except limits.BudgetError:
            log.warning("run %s: its gateway/provider/model make no budget key; not limited", run.pk)
            keys = []
        if keys:
            decision = limits.acquire(keys)
            if not decision.allowed:
                return Refusal(decision.wait_seconds, decision.reason or "rpm", decision.key or "")
            if decision.wait_seconds > 0 and decision.key:
                admitted = Admitted(decision.wait_seconds, decision.key)
        if run.gateway:
            provider = breaker_provider(run)
            check = breakers.check(run.gateway, provider)
            if not check.allowed:
                wait = check.wait_seconds
                if check.state != breakers.OPEN:
                    wait = min(wait, HALF_OPEN_RECHECK)
                return Refusal(max(wait, 0.05), BREAKER, _breaker_hold(run.gateway, provider))
            if check.probe:
                log.info("run %s is the breaker's probe for %s/%s", run.pk, run.gateway, provider)
    except RedisError as exc:
        if not _state["redis_down"]:
            log.warning("admission: Redis cannot decide (%s); runs with limits wait", exc)
            _state["redis_down"] = True
        return Refusal(UNAVAILABLE_WAIT, "unavailable", "")
    if _state["redis_down"]:
        log.info("admission: Redis answers again")
        _state["redis_down"] = False
    return admitted


# --- holds: the other runs of a waiting key are not claimed meanwhile ----------------------------


def held_key() -> str:
    return key("queue", "held")


def hold(member: str, until: float) -> None:
    """Hold the queued runs of ``member`` until ``until`` (epoch seconds; a longer hold in force
    is kept). The queue ends a hold just before the held run's ``run_after``, so the run's
    wake-up never finds its own key still held."""
    if not member:
        return
    client = get_redis()
    current = client.hget(held_key(), member)
    if current is not None and float(current) >= until:
        return
    client.hset(held_key(), member, f"{until:.6f}")


def release(member: str) -> None:
    get_redis().hdel(held_key(), member)


def held() -> dict[str, float]:
    """The holds in force now (expired ones are dropped on the way)."""
    client = get_redis()
    now = time.time()
    raw = client.hgetall(held_key())
    current: dict[str, float] = {}
    expired = []
    for member, until in raw.items():
        name = member.decode() if isinstance(member, bytes) else member
        if float(until) > now:
            current[name] = float(until)
        else:
            expired.append(name)
    if expired:
        client.hdel(held_key(), *expired)
    return current


def member_q(member: str) -> Q | None:
    """The runs a hold member covers, as a filter (None: an unknown kind)."""
    kind, _, rest = member.partition(":")
    if kind == "gateway":
        return Q(gateway=rest)
    if kind == "provider":
        return Q(provider=rest)
    if kind == "model":
        provider, _, model = rest.partition("/")
        return Q(provider=provider, params__model=model)
    if kind == BREAKER:
        gateway, provider = json.loads(rest)
        return Q(gateway=gateway, provider="" if provider == NO_PROVIDER else provider)
    return None


def held_q() -> Q | None:
    """The queued runs a hold covers, as a filter (None: none). Redis down: no hold (each run
    is then refused at its own admission, which fails closed)."""
    try:
        members = held()
    except RedisError:
        return None
    q: Q | None = None
    for member in members:
        part = member_q(member)
        if part is not None:
            q = part if q is None else q | part
    return q


# --- after an attempt ----------------------------------------------------------------------------


def _backoff_key(run: Run) -> str | None:
    if run.provider:
        return limits.provider_key(run.provider)
    if run.gateway:
        return limits.gateway_key(run.gateway)
    return None


def backoff_member(run: Run) -> str:
    """The hold a rate-limit error puts on the run's key ('' for none): its wake-up's scope."""
    try:
        return _backoff_key(run) or ""
    except limits.BudgetError:
        return ""


def rate_limit_wait(run: Run, error: str, retry_after: float | None = None) -> float:
    """The engine's retry-after hook: back the run's provider (else its gateway) off and wait
    that long; a ``retry_after`` read from the error is used exactly."""
    try:
        name = _backoff_key(run)
        if name is not None:
            wait = limits.backoff(name, retry_after=retry_after)
            hold(name, time.time() + wait - HOLD_MARGIN)
            return wait
    except (RedisError, limits.BudgetError) as exc:
        log.warning("run %s: could not back off (%s)", run.pk, exc)
    if retry_after is not None:
        return retry_after
    return errors.default_retry_after()


def _tokens(usage: Mapping[str, Any] | None) -> int:
    if not usage:
        return 0
    total = usage.get("total_tokens") or 0
    if not total:
        total = (usage.get("input_tokens") or 0) + (usage.get("output_tokens") or 0)
    return int(total) if isinstance(total, int | float) and total > 0 else 0


def charge_tokens(run: Run, usage: Mapping[str, Any] | None) -> None:
    """Charge a finished run's tokens to its budgets (usage read after the run, e.g. from
    ``chat.history``). Errors are logged: a budget is worth keeping, never worth a failure."""
    tokens = _tokens(usage)
    if not tokens or not applies(run):
        return
    try:
        limits.record_tokens(keys_of(run), tokens)
    except (RedisError, limits.BudgetError) as exc:
        log.warning("run %s: could not charge %s tokens (%s)", run.pk, tokens, exc)


def record_outcome(run: Run, outcome: Finished, error_class: str) -> None:
    """What an attempt's end tells the limiter and the breaker (after its transaction)."""
    if not applies(run):
        return
    try:
        if outcome.status == "succeeded":
            name = _backoff_key(run)
            if name is not None:
                limits.clear_backoff(name)
            if run.gateway:
                provider = breaker_provider(run)
                before = breakers.breaker_for(run.gateway, provider)
                state = before.record_success()
                if state == breakers.CLOSED:
                    release(_breaker_hold(run.gateway, provider))
            charge_tokens(run, outcome.usage)
        elif error_class in errors.RETRYABLE and run.gateway:
            state = breakers.record_failure(run.gateway, breaker_provider(run))
            if state == breakers.OPEN:
                log.warning("breaker %s/%s is open", run.gateway, breaker_provider(run))
    except (RedisError, limits.BudgetError) as exc:
        log.warning("run %s: could not record its outcome for limits and breakers (%s)", run.pk, exc)
