"""The engine's error classes and what each one does to a run.

An action reports a failure as one of these classes (``Finished(status="failed",
error_class=...)``); the engine alone decides what follows, so every kind of work gets the same
retry policy:

- ``server_error``, ``timeout``, ``unreachable``: retried up to the job's ``max_attempts`` with a
  full-jitter exponential backoff (AWS architecture blog, "Exponential Backoff And Jitter");
- ``rate_limit``: back to ``scheduled`` after :func:`retry_after_for` (by default the shared
  limiter's adaptive backoff of the run's provider); not a failed attempt;
- ``provider_auth``: the run is ``blocked`` (and :func:`provider_blocked` is told);
- ``invalid_request``, ``aborted``, ``system``: final.

The two hooks are plain module-level registries: the shared limiter (scheduler/limits.py) and
the blocked-provider handling plug in with :func:`set_retry_after_hook` and
:func:`set_provider_blocked_hook` without the queue importing them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.conf import settings

if TYPE_CHECKING:
    from .models import Run

RATE_LIMIT = "rate_limit"
PROVIDER_AUTH = "provider_auth"
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
UNREACHABLE = "unreachable"
INVALID_REQUEST = "invalid_request"
ABORTED = "aborted"
SYSTEM = "system"

CLASSES = (RATE_LIMIT, PROVIDER_AUTH, SERVER_ERROR, TIMEOUT, UNREACHABLE, INVALID_REQUEST, ABORTED, SYSTEM)
RETRYABLE = frozenset({SERVER_ERROR, TIMEOUT, UNREACHABLE})
FINAL = frozenset({INVALID_REQUEST, ABORTED, SYSTEM})

# What happens to a failed attempt of each class.
RETRY, WAIT, BLOCK, FAIL = "retry", "wait", "block", "fail"


def policy(error_class: str | None) -> str:
    """``retry`` | ``wait`` | ``block`` | ``fail`` for a class; an unknown class is ``system``."""
    if error_class in RETRYABLE:
        return RETRY
    if error_class == RATE_LIMIT:
        return WAIT
    if error_class == PROVIDER_AUTH:
        return BLOCK
    return FAIL


def normalise(error_class: str | None) -> str:
    """A class the engine knows: anything else (a typo in an action) counts as ``system``."""
    return error_class if error_class in CLASSES else SYSTEM


def backoff_seconds(attempt: int, *, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2 ** (attempt - 1))] (attempt counts from 1)."""
    base = float(settings.AGENTFLOW_RETRY_BASE_SECONDS)
    cap = float(settings.AGENTFLOW_RETRY_CAP_SECONDS)
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(0, ceiling)


def default_retry_after() -> float:
    """The wait of a rate-limited run when the limiter cannot say (AGENTFLOW_RATE_LIMIT_WAIT_SECONDS)."""
    return float(settings.AGENTFLOW_RATE_LIMIT_WAIT_SECONDS)


def _default_retry_after(run: Run, error: str, retry_after: float | None = None) -> float:
    """The shared limiter (scheduler/admission.py): the run's provider backs off adaptively."""
    from . import admission  # admission imports this module

    return admission.rate_limit_wait(run, error, retry_after)


def _default_provider_blocked(run: Run, error: str) -> None:
    return None


_hooks: dict[str, Callable[..., Any]] = {
    "retry_after": _default_retry_after,
    "provider_blocked": _default_provider_blocked,
}


def retry_after_for(run: Run, error: str, retry_after: float | None = None) -> float:
    """Seconds a rate-limited run waits before it is queued again (the limiter's answer);
    ``retry_after``: what the error said (a Retry-After), when it said it."""
    return max(0.0, float(_hooks["retry_after"](run, error, retry_after)))


def provider_blocked(run: Run, error: str) -> None:
    """A run failed with ``provider_auth`` and is now blocked: tell whoever blocks providers."""
    _hooks["provider_blocked"](run, error)


def set_retry_after_hook(fn: Callable[..., float] | None) -> Callable[..., float]:
    """Replace the limiter's answer (``fn(run, error, retry_after)``; None restores the shared
    limiter, scheduler/admission.py ``rate_limit_wait``). Returns the hook it replaced, so a
    caller that swaps it for a while puts back exactly what was there."""
    previous = _hooks["retry_after"]
    _hooks["retry_after"] = fn or _default_retry_after
    return previous


def set_provider_blocked_hook(fn: Callable[..., None] | None) -> Callable[..., None]:
    """Replace who is told of a blocked provider (fleet's ``on_provider_blocked`` once the apps
    are ready; None: nobody). Returns the hook it replaced, to put back afterwards."""
    previous = _hooks["provider_blocked"]
    _hooks["provider_blocked"] = fn or _default_provider_blocked
    return previous
