"""What went wrong with an agent run, read from what the gateway reported.

:func:`classify` turns a terminal gateway event (a ``chat`` error / aborted frame or an ``agent`` lifecycle
error), or an exception of the :mod:`openclaw` client, into an :class:`ErrorInfo` whose ``error_class`` is one
of the engine's class names. Pure: no database, no I/O. The shapes it reads were captured from the real
gateway (``tests/fixtures/frames/automation/``, table in its README):

* ``errorKind`` is set only for ``rate_limit`` and ``timeout``; everything else is read from
  ``errorDetail.failoverReason`` (chat) / ``errorObservation.failoverReason`` (agent lifecycle).
* The run right after a provider 401 carries no detail at all, only the text "Inline API key … temporarily
  disabled after a provider auth/billing failure", so the message text is the last resort.
* A ``Retry-After`` reaches us only as text ("…; Retry-After: 30 seconds"): parsed here.
* Each failed run sends two terminal ``chat`` events; the first has the details. Classify the first per runId.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from openclaw.errors import (
    AuthError,
    ConnectionLostError,
    ForbiddenError,
    GatewayError,
    GatewayTimeout,
    InvalidRequestError,
    NotFoundError,
    ProtocolMismatchError,
    UnavailableError,
)

__all__ = [
    "ABORTED",
    "ERROR_CLASSES",
    "INVALID_REQUEST",
    "PROVIDER_AUTH",
    "RATE_LIMIT",
    "SERVER_ERROR",
    "SYSTEM",
    "TIMEOUT",
    "UNREACHABLE",
    "ErrorInfo",
    "classify",
    "outcome",
    "parse_retry_after",
]

# The engine's error class names (scheduler): plain strings so this module needs no import from it.
RATE_LIMIT = "rate_limit"
PROVIDER_AUTH = "provider_auth"
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
UNREACHABLE = "unreachable"
INVALID_REQUEST = "invalid_request"
ABORTED = "aborted"
SYSTEM = "system"
ERROR_CLASSES = (
    RATE_LIMIT,
    PROVIDER_AUTH,
    SERVER_ERROR,
    TIMEOUT,
    UNREACHABLE,
    INVALID_REQUEST,
    ABORTED,
    SYSTEM,
)

MAX_MESSAGE_CHARS = 500

# errorDetail.failoverReason / errorObservation.failoverReason -> class.
_BY_FAILOVER_REASON = {
    "rate_limit": RATE_LIMIT,
    "auth": PROVIDER_AUTH,
    "auth_permanent": PROVIDER_AUTH,
    "billing": PROVIDER_AUTH,
    "server_error": SERVER_ERROR,
    "overloaded": SERVER_ERROR,
    "timeout": TIMEOUT,
    "format": INVALID_REQUEST,
    "model_not_found": INVALID_REQUEST,
    "context_overflow": INVALID_REQUEST,
}
# chat errorKind (schema enum: refusal, timeout, rate_limit, context_length, unknown) -> class.
_BY_ERROR_KIND = {
    "rate_limit": RATE_LIMIT,
    "timeout": TIMEOUT,
    "context_length": INVALID_REQUEST,
    "refusal": INVALID_REQUEST,
}
# Last resort, in order: the texts the gateway sends without any structured detail.
_BY_MESSAGE = (
    (
        re.compile(
            r"temporarily disabled after a provider auth|authentication failed|re-authenticate|HTTP 401", re.I
        ),
        PROVIDER_AUTH,
    ),
    (re.compile(r"rate[- ]limit", re.I), RATE_LIMIT),
    (re.compile(r"timed out|timeout", re.I), TIMEOUT),
    (re.compile(r"HTTP 5\d\d|internal error|server error|overloaded", re.I), SERVER_ERROR),
    # A gateway shutting down (restart, deploy) refuses new work: never run, safe to retry.
    (re.compile(r"gateway is draining", re.I), UNREACHABLE),
)
_UNIT = r"(ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?)"
_RETRY_AFTER = (
    # "…; Retry-After: 30 seconds" (the gateway's rendering of the provider's header)
    re.compile(
        r"retry-after:\s*(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?)?", re.I
    ),
    # "Retry after about 1 minute" (auth cooldown), "try again in 20 seconds"
    re.compile(
        r"(?:retry after|try again in)\s+(?:about\s+)?(\d+(?:\.\d+)?)\s*" + _UNIT + r"\b",
        re.I,
    ),
)
_PROVIDER_IN_TEXT = re.compile(r'for provider "([^"]+)"')
_MODEL_REF_IN_TEXT = re.compile(r"\b([\w.-]+)/([\w.:-]+) request failed")


@dataclasses.dataclass(frozen=True)
class ErrorInfo:
    """One classified failure: the engine's ``error_class``, a message an operator can read (capped), the
    wait the provider asked for when the gateway passed it on, and the provider / model when known."""

    error_class: str
    message: str
    retry_after_seconds: float | None = None
    provider: str | None = None
    model: str | None = None


def parse_retry_after(text: str | None) -> float | None:
    """Seconds from a "Retry-After: N seconds" / "Retry after about N minute" in ``text``, else ``None``."""
    if not text:
        return None
    for pattern in _RETRY_AFTER:
        match = pattern.search(text)
        if match:
            value = float(match.group(1))
            unit = (match.group(2) or "s").lower()
            if unit.startswith("ms") or unit.startswith("milli"):
                return value / 1000
            if unit.startswith("m"):
                return value * 60
            return value
    return None


def _payload_of(obj: Any) -> tuple[str | None, Mapping[str, Any]]:
    """``(event name or None, payload)`` from an openclaw Event, a whole frame dict or a bare payload."""
    event = getattr(obj, "event", None)
    if isinstance(event, str):
        payload = getattr(obj, "payload", None)
        return event, payload if isinstance(payload, Mapping) else {}
    if isinstance(obj, Mapping):
        if obj.get("type") == "event" and isinstance(obj.get("payload"), Mapping):
            return str(obj.get("event")), obj["payload"]
        if isinstance(obj.get("event"), str) and isinstance(obj.get("payload"), Mapping):
            return obj["event"], obj["payload"]  # the fixtures' {"event", "payload"} records
        return None, obj
    return None, {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _cap(message: str) -> str:
    message = message.strip() or "the gateway reported an error without a message"
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"


def _from_message(message: str) -> str:
    for pattern, error_class in _BY_MESSAGE:
        if pattern.search(message):
            return error_class
    return SYSTEM


def _provider_error(message: str, detail: Mapping[str, Any], error_kind: str) -> ErrorInfo:
    reason = _text(detail.get("failoverReason"))
    error_class = _BY_ERROR_KIND.get(error_kind) or _BY_FAILOVER_REASON.get(reason) or _from_message(message)
    provider = _text(detail.get("provider")) or None
    model = _text(detail.get("model")) or None
    if provider is None:
        found = _PROVIDER_IN_TEXT.search(message)
        ref = _MODEL_REF_IN_TEXT.search(message)
        provider = found.group(1) if found else (ref.group(1) if ref else None)
        if model is None and ref:
            model = ref.group(2)
    return ErrorInfo(error_class, _cap(message), parse_retry_after(message), provider, model)


def _from_exception(exc: BaseException) -> ErrorInfo:
    message = _cap(str(getattr(exc, "message", "") or exc) or type(exc).__name__)
    if isinstance(exc, GatewayError):
        retry_after = exc.retry_after_ms / 1000 if exc.retry_after_ms is not None else None
        if isinstance(exc, ConnectionLostError | UnavailableError):
            return ErrorInfo(UNREACHABLE, message, retry_after)
        if isinstance(exc, GatewayTimeout):
            return ErrorInfo(TIMEOUT, message, retry_after)
        if isinstance(exc, InvalidRequestError) and exc.asks_for_retry:
            # refused before running ("session changed before chat.send; retry the request")
            return ErrorInfo(SERVER_ERROR, message, retry_after)
        if isinstance(exc, InvalidRequestError | NotFoundError):
            return ErrorInfo(INVALID_REQUEST, message)
        if _from_message(message) == UNREACHABLE:  # "Gateway is draining…" (a restart)
            return ErrorInfo(UNREACHABLE, message, retry_after)
        if isinstance(exc, AuthError | ForbiddenError | ProtocolMismatchError):
            # Our gateway token or scopes, not the provider's login: only an operator can fix it.
            return ErrorInfo(SYSTEM, message)
        return ErrorInfo(SYSTEM, message, retry_after)
    if isinstance(exc, TimeoutError):
        return ErrorInfo(TIMEOUT, message)
    if isinstance(exc, OSError):  # ConnectionRefusedError, ConnectionResetError, DNS…
        return ErrorInfo(UNREACHABLE, message)
    return ErrorInfo(SYSTEM, message)


def classify(event_or_payload: Any) -> ErrorInfo | None:
    """Classify a terminal gateway event or a client exception; ``None`` when it is not a failure.

    Accepts an :class:`openclaw.frames.Event`, a frame dict (``{"type": "event", "event", "payload"}``), a
    ``chat`` or ``agent`` payload, or an exception (``GatewayError``, ``OSError``, ``TimeoutError``).
    A ``final`` (with or without a message) and non-terminal events give ``None``: see :func:`outcome`.
    """
    if isinstance(event_or_payload, BaseException):
        return _from_exception(event_or_payload)
    event, payload = _payload_of(event_or_payload)
    if payload.get("stream") == "lifecycle" or event == "agent":
        data = payload.get("data")
        if not isinstance(data, Mapping):
            return None
        phase = data.get("phase")
        if data.get("aborted") is True and phase in ("end", "error"):
            return ErrorInfo(ABORTED, _cap(_text(data.get("stopReason")) or "aborted"))
        if phase != "error":
            return None
        observation = data.get("errorObservation")
        detail = observation if isinstance(observation, Mapping) else {}
        return _provider_error(_text(data.get("error")), detail, "")
    state = payload.get("state")
    if state == "aborted":
        reason = _text(payload.get("stopReason")) or "aborted"
        return ErrorInfo(ABORTED, f"the run was aborted ({reason})")
    if state != "error":
        return None
    raw_detail = payload.get("errorDetail")
    detail = raw_detail if isinstance(raw_detail, Mapping) else {}
    return _provider_error(_text(payload.get("errorMessage")), detail, _text(payload.get("errorKind")))


def outcome(event_or_payload: Any) -> str | None:
    """The run outcome a terminal ``chat`` event means: ``"succeeded"`` (a final with a message),
    ``"absorbed"`` (a bare final: the text was merged into another run of a busy session), ``"failed"``,
    ``"aborted"``; ``None`` for a non-terminal event."""
    _event, payload = _payload_of(event_or_payload)
    state = payload.get("state")
    if state == "final":
        return "succeeded" if isinstance(payload.get("message"), Mapping) else "absorbed"
    if state == "error":
        return "failed"
    if state == "aborted":
        return "aborted"
    return None
