"""The registry of actions: what a job's ``kind`` does, filled by apps in ``AppConfig.ready()``.

The engine knows jobs, never what they do (ARCHITECTURE.md rule 3): a run names its action by
key; the queue calls the action's ``start`` with an :class:`AttemptContext` and reads back
either :class:`Finished` (done now) or :class:`Started` (sent; the owner of the work calls
``scheduler.queue.complete_attempt(attempt_id, Finished(...))`` when it ends).

    register_action(ActionSpec("noop", "No-op", validate=..., start=...))

``validate(params) -> params`` raises ``ValidationError`` with a message an operator can act on;
``cancel(ctx)`` stops running work (the agent kind aborts the chat); ``reconcile(ctx)`` is asked
about a run past its timeout and may answer what happened (``Finished``) or ``None`` (unknown).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from django.core.exceptions import ValidationError

from . import errors

if TYPE_CHECKING:
    from .models import Attempt, Run

FinalStatus = Literal["succeeded", "failed", "aborted"]


@dataclass(frozen=True)
class Finished:
    """How an attempt ended. ``error_class`` is one of :mod:`scheduler.errors` when it failed."""

    status: FinalStatus = "succeeded"
    error_class: str | None = None
    error: str = ""
    result: str = ""
    usage: Mapping[str, Any] = field(default_factory=dict)
    retry_after: float | None = None  # a rate limit's Retry-After, in seconds, when it said one

    def __post_init__(self) -> None:
        if self.status not in ("succeeded", "failed", "aborted"):
            raise ValueError(f"Finished.status must be succeeded, failed or aborted, not {self.status!r}")


@dataclass(frozen=True)
class Started:
    """Sent; the result arrives later through ``complete_attempt`` (no worker waits for it)."""

    session_key: str = ""
    external_id: str = ""


@dataclass(frozen=True)
class AttemptContext:
    run: Run
    attempt: Attempt
    prompt: str
    params: Mapping[str, Any]
    input: Any

    @property
    def attempt_id(self) -> str:
        """The attempt's uuid: the idempotency key (and runId) of whatever it sends."""
        return str(self.attempt.pk)


def _no_validation(params: Mapping[str, Any]) -> dict[str, Any]:
    return dict(params)


@dataclass(frozen=True)
class ActionSpec:
    key: str
    label: str
    start: Callable[[AttemptContext], Finished | Started]
    validate: Callable[[Mapping[str, Any]], dict[str, Any]] = _no_validation
    cancel: Callable[[AttemptContext], None] | None = None
    reconcile: Callable[[AttemptContext], Finished | None] | None = None
    description: str = ""


_actions: dict[str, ActionSpec] = {}


def register_action(spec: ActionSpec) -> ActionSpec:
    """Add (or replace, e.g. on a reload) the action ``spec.key``."""
    _actions[spec.key] = spec
    return spec


def unregister_action(key: str) -> None:
    _actions.pop(key, None)


def get_action(key: str) -> ActionSpec:
    """The action ``key``; ``ValidationError`` naming the known kinds when there is none."""
    try:
        return _actions[key]
    except KeyError:
        known = ", ".join(sorted(_actions)) or "none"
        raise ValidationError(f"unknown kind {key!r} (registered: {known})", code="unknown_kind") from None


def find_action(key: str) -> ActionSpec | None:
    return _actions.get(key)


def actions() -> list[ActionSpec]:
    return sorted(_actions.values(), key=lambda a: a.key)


def validate_params(kind: str, params: Any) -> dict[str, Any]:
    """The action's cleaned parameters; ``ValidationError`` for a bad kind or bad parameters."""
    spec = get_action(kind)
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ValidationError("params must be a JSON object", code="invalid_params")
    return spec.validate(params)


# --- the no-op kind, for tests and benchmarks ------------------------------------------------------

NOOP = "noop"
NOOP_MAX_SLEEP_MS = 600_000


def _noop_validate(params: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(
        set(params) - {"sleep_ms", "fail", "error", "async", "gateway", "agent", "provider", "retry_after"}
    )
    if unknown:
        raise ValidationError(f"noop: unknown parameter(s) {', '.join(unknown)}", code="invalid_params")
    sleep_ms = params.get("sleep_ms", 0)
    if isinstance(sleep_ms, bool) or not isinstance(sleep_ms, int) or not 0 <= sleep_ms <= NOOP_MAX_SLEEP_MS:
        raise ValidationError(
            f"noop: sleep_ms must be a whole number of milliseconds from 0 to {NOOP_MAX_SLEEP_MS}",
            code="invalid_params",
        )
    fail = params.get("fail") or ""
    if fail and fail not in errors.CLASSES:
        raise ValidationError(
            f"noop: fail must be an error class ({', '.join(errors.CLASSES)}), not {fail!r}",
            code="invalid_params",
        )
    retry_after = params.get("retry_after")
    if retry_after is not None and (
        isinstance(retry_after, bool)
        or not isinstance(retry_after, int | float)
        or not 0 <= retry_after <= 3600
    ):
        raise ValidationError(
            "noop: retry_after must be a number of seconds from 0 to 3600", code="invalid_params"
        )
    cleaned: dict[str, Any] = {"sleep_ms": sleep_ms}
    if retry_after is not None:
        cleaned["retry_after"] = retry_after
    if fail:
        cleaned["fail"] = fail
    if params.get("async"):
        cleaned["async"] = True
    for name in ("gateway", "agent", "provider", "error"):
        if params.get(name) not in (None, ""):
            cleaned[name] = params[name]
    return cleaned


def _noop_start(ctx: AttemptContext) -> Finished | Started:
    """Sleep ``sleep_ms``, then succeed, or fail with the class ``fail`` (and ``retry_after``
    seconds, as a rate limit's Retry-After would say); ``async`` answers
    ``Started`` (the test completes the attempt, as the listener would for an agent run)."""
    if ctx.params.get("sleep_ms"):
        time.sleep(ctx.params["sleep_ms"] / 1000)
    if ctx.params.get("async"):
        return Started(external_id=ctx.attempt_id)
    fail = ctx.params.get("fail")
    if fail:
        message = ctx.params.get("error") or f"noop failed as asked ({fail})"
        return Finished("failed", fail, message, retry_after=ctx.params.get("retry_after"))
    return Finished("succeeded", result=ctx.prompt or "ok")


NOOP_ACTION = ActionSpec(
    NOOP,
    "No-op",
    start=_noop_start,
    validate=_noop_validate,
    description="Does nothing (optionally sleeps or fails with a given error class): tests and benchmarks.",
)
