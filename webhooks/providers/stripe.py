"""Stripe: ``Stripe-Signature: t=<unix time>,v1=<hex HMAC of "{t}.{body}">[,v1=…]`` with a
300 s tolerance; the secret is the endpoint's ``whsec_…`` signing secret, used as it is. During
Stripe's own secret roll it sends one ``v1`` per valid secret: any one matching is enough. The
event id (``evt_…``) is the delivery id (Stripe retries with the same one)."""

from __future__ import annotations

from collections.abc import Sequence

from .base import (
    Incoming,
    Malformed,
    Provider,
    Rejected,
    Verified,
    any_match,
    check_window,
    field_of,
    from_hex,
    hmac_sha256,
    parse_json,
)

TOLERANCE = 300


def verify(incoming: Incoming, secrets: Sequence[str], now: float) -> Verified:
    header = incoming.header("Stripe-Signature")
    if not header:
        raise Rejected("missing Stripe-Signature")
    timestamp_text, given = "", []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            timestamp_text = value
        elif name == "v1":
            given.append(from_hex(value))
    if not given:
        raise Rejected("Stripe-Signature has no v1 signature")
    timestamp = check_window(timestamp_text, now, TOLERANCE, "Stripe-Signature t=")
    signed = str(timestamp).encode() + b"." + incoming.body
    if not any_match([hmac_sha256(s, signed) for s in secrets], given):
        raise Rejected("Stripe-Signature does not match (wrong secret or altered body)")
    payload = parse_json(incoming.body)
    delivery = field_of(payload, "id")
    event = field_of(payload, "type")
    if not delivery or not event:
        raise Malformed("the signed body has no event id or type")
    return Verified(delivery_id=delivery[:200], event=event[:100], payload=payload, timestamp=timestamp)


PROVIDER = Provider(
    key="stripe",
    label="Stripe",
    verify=verify,
    signature_headers=("stripe-signature",),
    secret_hint="The endpoint's signing secret (whsec_…) from Stripe's Webhooks page.",
)
