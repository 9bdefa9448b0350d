"""Typed gateway errors.

The gateway reports errors as ``{code, message, details?, retryable?, retryAfterMs?}``; the
protocol reference says to branch on ``code`` and ``details.code``, never on ``message``.
Every error carries an ``operator_message``: a sentence an operator can act on, shown in the
dashboard and admin, and a stable ``code`` that logs carry.
"""

from __future__ import annotations

import math
from typing import Any


class GatewayError(Exception):
    """Base class. ``retryable`` errors may be retried by :mod:`.client` (3 attempts at most)."""

    retryable = False
    default_code = "GATEWAY_ERROR"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        retry_after_ms: int | None = None,
        method: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = details or {}
        self.retry_after_ms = retry_after_ms
        self.method = method

    @property
    def detail_code(self) -> str | None:
        value = self.details.get("code")
        return value if isinstance(value, str) else None

    @property
    def log_code(self) -> str:
        """The most specific code, for logs: ``details.code`` when present."""
        return self.detail_code or self.code

    @property
    def operator_message(self) -> str:
        return f"The gateway reported an error: {self.message} ({self.log_code})."

    def __str__(self) -> str:
        where = f"{self.method}: " if self.method else ""
        return f"{where}[{self.log_code}] {self.message}"


# --- Errors the gateway sends -------------------------------------------------------------


class AuthError(GatewayError):
    """Token missing or wrong. Never retried in a loop: only an operator can fix it."""

    default_code = "AUTH_FAILED"

    @property
    def operator_message(self) -> str:
        if (
            self.detail_code in ("AUTH_TOKEN_MISSING", "DEVICE_IDENTITY_REQUIRED")
            or self.code == "NOT_PAIRED"
        ):
            return "Authentication failed: no token was sent. Set the gateway token in the admin."
        if self.detail_code == "AUTH_TOKEN_MISMATCH":
            return (
                "Authentication failed: the gateway rejected the token (AUTH_TOKEN_MISMATCH). "
                "Update the gateway token in the admin; AgentFlow will not retry until it changes."
            )
        return f"Authentication failed: {self.message} ({self.log_code}). Check the gateway token."


class PairingRequiredError(AuthError):
    default_code = "PAIRING_REQUIRED"

    @property
    def operator_message(self) -> str:
        device = self.details.get("deviceId") or self.details.get("requestId") or "<device id>"
        return (
            "This AgentFlow device is waiting for pairing approval on the gateway "
            f"(run `openclaw devices approve {device}` there, or approve it in the Control UI)."
        )


class DeviceAuthError(AuthError):
    default_code = "DEVICE_AUTH_FAILED"

    @property
    def operator_message(self) -> str:
        return f"The gateway rejected AgentFlow's device proof ({self.log_code}): {self.message}."


class ProtocolMismatchError(GatewayError):
    default_code = "PROTOCOL_MISMATCH"

    @property
    def operator_message(self) -> str:
        expected = self.details.get("expectedProtocol", "?")
        return (
            f"Protocol mismatch: the gateway speaks protocol {expected}, AgentFlow speaks 4. "
            "Upgrade or downgrade the gateway or AgentFlow so they match."
        )


class ForbiddenError(GatewayError):
    default_code = "FORBIDDEN"

    @property
    def missing_scope(self) -> str | None:
        value = self.details.get("missingScope")
        return value if isinstance(value, str) else None

    @property
    def operator_message(self) -> str:
        if self.missing_scope:
            return f"Not allowed: the connection lacks the scope {self.missing_scope}."
        return f"Not allowed: {self.message}."


class InvalidRequestError(GatewayError):
    default_code = "INVALID_REQUEST"

    @property
    def asks_for_retry(self) -> bool:
        """The gateway refused without running anything and says to send again: "SessionMutation
        AuthorizationChangedError: session changed before chat.send; retry the request" (two
        sends raced on one session). 2026.9.6 gives it no ``details.code`` and no ``retryable``,
        so the message is all there is to read (the one exception to the rule above)."""
        return "retry the request" in self.message.lower()

    @property
    def operator_message(self) -> str:
        return f"The gateway rejected the request: {self.message}."


class NotFoundError(GatewayError):
    default_code = "NOT_FOUND"


class UnavailableError(GatewayError):
    """The gateway is starting, overloaded or rate limiting: retry after ``retry_after_ms``."""

    default_code = "UNAVAILABLE"

    def __init__(self, message: str, *, retryable: bool = True, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retryable = retryable

    @property
    def operator_message(self) -> str:
        wait = f" Retrying after {self.retry_after_ms / 1000:.1f} s." if self.retry_after_ms else ""
        return f"The gateway is temporarily unavailable: {self.message}.{wait}"


# --- Errors raised on this side -----------------------------------------------------------


class GatewayTimeout(GatewayError):
    default_code = "TIMEOUT"

    @property
    def operator_message(self) -> str:
        return f"The gateway did not answer in time ({self.message})."


class ConnectionLostError(GatewayError):
    """The socket closed or could not be opened. Retryable: a reconnect may fix it."""

    retryable = True
    default_code = "CONNECTION_LOST"

    @property
    def operator_message(self) -> str:
        return f"Cannot reach the gateway: {self.message}."


class NotConnectedError(ConnectionLostError):
    default_code = "NOT_CONNECTED"


class MalformedFrameError(GatewayError):
    """A frame that is not JSON or not a known frame shape. Logged and skipped, never fatal."""

    default_code = "MALFORMED_FRAME"


def error_from_payload(error: Any, *, method: str | None = None) -> GatewayError:
    """Build the typed error for a ``res`` frame's ``error`` object (tolerating odd shapes)."""
    if not isinstance(error, dict):
        return GatewayError(f"malformed error object: {str(error)[:200]}", method=method)
    code = str(error.get("code") or "UNKNOWN")
    message = str(error.get("message") or "no message")
    raw_details = error.get("details")
    details = raw_details if isinstance(raw_details, dict) else {}
    detail_code = str(details.get("code") or "")
    retry_after = error.get("retryAfterMs")
    retry_after_ms: int | None = None
    if (
        isinstance(retry_after, int | float)
        and not isinstance(retry_after, bool)
        and math.isfinite(retry_after)
        and retry_after >= 0
    ):
        retry_after_ms = int(retry_after)
    kwargs: dict[str, Any] = {
        "code": code,
        "details": details,
        "retry_after_ms": retry_after_ms,
        "method": method,
    }

    if detail_code == "PROTOCOL_MISMATCH":
        return ProtocolMismatchError(message, **kwargs)
    if detail_code == "PAIRING_REQUIRED" or code == "PAIRING_REQUIRED":
        return PairingRequiredError(message, **kwargs)
    if detail_code.startswith("DEVICE_AUTH_"):
        return DeviceAuthError(message, **kwargs)
    if code == "NOT_PAIRED" or detail_code == "DEVICE_IDENTITY_REQUIRED":
        # What a loopback gateway answers to a connect with neither token nor paired device.
        return AuthError(message, **kwargs)
    if detail_code.startswith("AUTH_") or code in ("UNAUTHORIZED", "AUTH_FAILED"):
        return AuthError(message, **kwargs)
    if code == "FORBIDDEN" or detail_code == "MISSING_SCOPE":
        return ForbiddenError(message, **kwargs)
    if code == "UNAVAILABLE":
        retryable = error.get("retryable")
        return UnavailableError(message, retryable=retryable is not False, **kwargs)
    if code == "NOT_FOUND":
        return NotFoundError(message, **kwargs)
    if code == "INVALID_REQUEST":
        return InvalidRequestError(message, **kwargs)
    err = GatewayError(message, **kwargs)
    if error.get("retryable") is True:
        err.retryable = True
    return err
