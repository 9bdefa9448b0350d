"""Slack: ``X-Slack-Signature: v0=<hex HMAC of "v0:{timestamp}:{body}">`` with
``X-Slack-Request-Timestamp`` inside a 5-minute window. The Events API's ``url_verification``
challenge is answered. Slack retries a delivery it thinks failed (``X-Slack-Retry-Num``,
``X-Slack-Retry-Reason``) with the same ``event_id``: that id is the delivery id, so a retry is
a duplicate. Slash commands and interactive payloads (form bodies) have no event id: their
``trigger_id`` is used, else the signed timestamp and body."""

from __future__ import annotations

from collections.abc import Sequence

from .base import (
    Answer,
    Incoming,
    Provider,
    Rejected,
    Verified,
    any_match,
    body_digest,
    check_window,
    field_of,
    from_hex,
    hmac_sha256,
    parse_body,
)

TOLERANCE = 300  # seconds, as Slack's own SDKs check


def verify(incoming: Incoming, secrets: Sequence[str], now: float) -> Verified:
    signature = incoming.header("X-Slack-Signature")
    if not signature:
        raise Rejected("missing X-Slack-Signature")
    timestamp = check_window(
        incoming.header("X-Slack-Request-Timestamp"), now, TOLERANCE, "X-Slack-Request-Timestamp"
    )
    version, _, hexdigest = signature.partition("=")
    if version != "v0" or not hexdigest:
        raise Rejected("X-Slack-Signature is not v0=<hex>")
    base = b"v0:" + str(timestamp).encode() + b":" + incoming.body
    if not any_match([hmac_sha256(s, base) for s in secrets], [from_hex(hexdigest)]):
        raise Rejected("X-Slack-Signature does not match (wrong secret or altered body)")
    payload = parse_body(incoming)
    event = _event_type(payload)
    delivery = field_of(payload, "event_id") or field_of(payload, "trigger_id") or body_digest(base)
    retry_text = incoming.header("X-Slack-Retry-Num")
    retry = int(retry_text) if retry_text.isdigit() else 0
    verified = Verified(
        delivery_id=delivery[:200], event=event[:100], payload=payload, retry=retry, timestamp=timestamp
    )
    if retry:
        verified.notes.append(
            f"Slack retry {retry} ({incoming.header('X-Slack-Retry-Reason') or 'no reason'})"
        )
    return verified


def _event_type(payload: object) -> str:
    if not isinstance(payload, dict):
        return "unknown"
    if payload.get("type") == "event_callback" and isinstance(payload.get("event"), dict):
        return str(payload["event"].get("type") or "event_callback")  # message, app_mention, …
    if "command" in payload:
        return "command"  # a slash command
    return str(payload.get("type") or "unknown")  # url_verification, block_actions, …


def answer(verified: Verified) -> Answer | None:
    if verified.event == "url_verification" and isinstance(verified.payload, dict):
        return Answer(200, {"challenge": str(verified.payload.get("challenge", ""))})
    return None


PROVIDER = Provider(
    key="slack",
    label="Slack",
    verify=verify,
    answer=answer,
    signature_headers=("x-slack-signature",),
    secret_hint="The app's Signing Secret (Basic Information › App Credentials).",
)
