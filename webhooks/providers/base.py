"""The shape every provider module has, and the helpers they share.

A provider is one module with a :class:`Provider` instance named ``PROVIDER``:

* ``verify(request, secrets, now)`` checks the signature over the **raw body** (before any
  parsing, constant-time compare) with each valid secret (current, then the previous one while
  a rotation lasts) and the replay window where the provider signs a timestamp. It raises
  :class:`Rejected` (the intake answers 401) or returns a :class:`Verified`: the delivery id
  (the sender's, kept across its retries), the event type and the parsed payload.
* ``answer(verified)`` returns the provider's handshake answer (GitHub's ``ping``, Slack's
  ``url_verification`` challenge) or None when the delivery is ordinary work.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs


class Rejected(Exception):
    """The delivery is not the sender's (bad or missing signature, stale timestamp): 401.
    ``reason`` is safe to store and show (it never contains a secret or a signature)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Malformed(Exception):
    """A signed body that cannot be read (not JSON, no event type): 400."""


@dataclass(frozen=True)
class Incoming:
    """What a provider sees of a request: lower-cased header names, the raw body, the path."""

    headers: Mapping[str, str]
    body: bytes
    content_type: str = ""

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


@dataclass
class Verified:
    delivery_id: str
    event: str
    payload: Any
    retry: int = 0  # the sender's retry count where it says (Slack's X-Slack-Retry-Num)
    timestamp: int | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Answer:
    """A handshake answered by the intake itself (no run): status, JSON or text body."""

    status: int
    body: Any
    content_type: str = "application/json"


@dataclass(frozen=True)
class Provider:
    key: str  # "github", stored on the endpoint
    label: str
    verify: Callable[[Incoming, Sequence[str], float], Verified]
    answer: Callable[[Verified], Answer | None] = lambda verified: None
    # The headers that carry signatures (masked in the delivery log besides the generic list).
    signature_headers: tuple[str, ...] = ()
    # What a secret looks like, for the form's help text.
    secret_hint: str = ""


def hmac_sha256(secret: str | bytes, message: bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, message, hashlib.sha256).digest()


def any_match(expected: Sequence[bytes], given: Sequence[bytes]) -> bool:
    """True when one given signature equals one expected, each pair compared in constant time
    (every pair is compared: the time does not tell which one matched)."""
    found = False
    for want in expected:
        for got in given:
            found |= hmac.compare_digest(want, got)
    return found


def from_hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text.strip())
    except ValueError:
        return b""


def check_window(timestamp_text: str, now: float, tolerance: int, header: str) -> int:
    """The signed timestamp as an int, refused when missing, unreadable or outside ±tolerance."""
    if not timestamp_text:
        raise Rejected(f"missing {header}")
    try:
        timestamp = int(timestamp_text.strip())
    except ValueError:
        raise Rejected(f"{header} is not a Unix time") from None
    if abs(now - timestamp) > tolerance:
        raise Rejected(f"{header} is outside the {tolerance} s window (a replay or a wrong clock)")
    return timestamp


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8")) if body else {}
    except (UnicodeDecodeError, ValueError) as exc:
        raise Malformed(f"the body is not JSON: {exc}") from None


def parse_body(incoming: Incoming) -> Any:
    """JSON, or a form (Slack's slash commands; a ``payload`` field holding JSON for its
    interactive messages; GitHub's ``application/x-www-form-urlencoded`` setting)."""
    if incoming.content_type.startswith("application/x-www-form-urlencoded"):
        try:
            form = {
                k: v[0] for k, v in parse_qs(incoming.body.decode("utf-8"), keep_blank_values=True).items()
            }
        except UnicodeDecodeError:
            raise Malformed("the form body is not UTF-8") from None
        if "payload" in form:
            return parse_json(form["payload"].encode())
        return form
    return parse_json(incoming.body)


def body_digest(body: bytes) -> str:
    """A delivery id for senders that send none: the same body twice is the same delivery."""
    return "sha256:" + hashlib.sha256(body).hexdigest()[:32]


def field_of(payload: Any, name: str) -> str:
    value = payload.get(name) if isinstance(payload, dict) else None
    return value if isinstance(value, str) else ""
