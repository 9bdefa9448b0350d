"""A generic HMAC-SHA256 header, for senders of our own (scripts, CI): ``X-Signature-256:
sha256=<hex HMAC of the body>`` (the bare hex is accepted too). Optional ``X-Webhook-Id`` (else
the body's digest is the delivery id: the same body twice is one delivery) and
``X-Webhook-Event`` (else the body's ``type`` or ``event``, else ``message``). When the sender
adds ``X-Webhook-Timestamp`` the signature covers ``"{timestamp}.{body}"`` and a 5-minute window
applies, so a replay outside it is refused."""

from __future__ import annotations

from collections.abc import Sequence

from .base import (
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

TOLERANCE = 300


def verify(incoming: Incoming, secrets: Sequence[str], now: float) -> Verified:
    signature = incoming.header("X-Signature-256")
    if not signature:
        raise Rejected("missing X-Signature-256")
    hexdigest = signature.removeprefix("sha256=")
    timestamp_text = incoming.header("X-Webhook-Timestamp")
    timestamp = None
    signed = incoming.body
    if timestamp_text:
        timestamp = check_window(timestamp_text, now, TOLERANCE, "X-Webhook-Timestamp")
        signed = str(timestamp).encode() + b"." + incoming.body
    if not any_match([hmac_sha256(s, signed) for s in secrets], [from_hex(hexdigest)]):
        raise Rejected("X-Signature-256 does not match (wrong secret or altered body)")
    payload = parse_body(incoming)
    event = (
        incoming.header("X-Webhook-Event")
        or field_of(payload, "type")
        or field_of(payload, "event")
        or "message"
    )
    delivery = incoming.header("X-Webhook-Id") or body_digest(signed)
    return Verified(delivery_id=delivery[:200], event=event[:100], payload=payload, timestamp=timestamp)


PROVIDER = Provider(
    key="hmac",
    label="Generic HMAC-SHA256",
    verify=verify,
    signature_headers=("x-signature-256",),
    secret_hint="Any long random string; the sender signs the body with it.",
)
