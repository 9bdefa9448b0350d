"""Standard Webhooks (standardwebhooks.com, also Svix): ``webhook-id``, ``webhook-timestamp``
and ``webhook-signature: v1,<base64 HMAC of "{id}.{timestamp}.{body}"> [v1,…]`` (space
separated: a sender rotating its key signs with each). The secret is ``whsec_<base64 key>``
(the key is the base64-decoded part; a secret without the prefix is taken as base64 too). A
5-minute window, as the reference library checks. The event type is the body's ``type``."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from .base import (
    Incoming,
    Provider,
    Rejected,
    Verified,
    any_match,
    check_window,
    field_of,
    hmac_sha256,
    parse_json,
)

TOLERANCE = 300


def key_of(secret: str) -> bytes:
    # As the reference library reads it: padding added for an unpadded key.
    try:
        return base64.b64decode(secret.removeprefix("whsec_") + "==") or secret.encode()
    except (binascii.Error, ValueError):
        return secret.encode()  # not base64: the raw text (so a wrong secret still just fails)


def verify(incoming: Incoming, secrets: Sequence[str], now: float) -> Verified:
    message_id = incoming.header("webhook-id")
    signature_header = incoming.header("webhook-signature")
    if not message_id or not signature_header:
        raise Rejected("missing webhook-id or webhook-signature")
    timestamp = check_window(incoming.header("webhook-timestamp"), now, TOLERANCE, "webhook-timestamp")
    given = []
    for item in signature_header.split(" "):
        version, _, value = item.partition(",")
        if version == "v1" and value:
            try:
                given.append(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError):
                continue
    if not given:
        raise Rejected("webhook-signature has no v1 signature")
    signed = f"{message_id}.{timestamp}.".encode() + incoming.body
    if not any_match([hmac_sha256(key_of(s), signed) for s in secrets], given):
        raise Rejected("webhook-signature does not match (wrong secret or altered body)")
    payload = parse_json(incoming.body)
    event = field_of(payload, "type") or "message"
    return Verified(delivery_id=message_id[:200], event=event[:100], payload=payload, timestamp=timestamp)


PROVIDER = Provider(
    key="standard",
    label="Standard Webhooks",
    verify=verify,
    signature_headers=("webhook-signature",),
    secret_hint="whsec_<base64 key>, as the sender shows it.",
)
