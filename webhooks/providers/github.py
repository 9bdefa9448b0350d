"""GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC of the body>``, ``X-GitHub-Event``,
``X-GitHub-Delivery`` (the same id on a redelivery from GitHub's settings page). GitHub signs no
timestamp, so a replay is caught by its delivery id alone. ``ping`` (sent when the hook is
created) is answered, not run."""

from __future__ import annotations

from collections.abc import Sequence

from .base import Answer, Incoming, Provider, Rejected, Verified, any_match, from_hex, hmac_sha256, parse_body


def verify(incoming: Incoming, secrets: Sequence[str], now: float) -> Verified:
    signature = incoming.header("X-Hub-Signature-256")
    if not signature:
        raise Rejected("missing X-Hub-Signature-256")
    scheme, _, hexdigest = signature.partition("=")
    if scheme != "sha256" or not hexdigest:
        raise Rejected("X-Hub-Signature-256 is not sha256=<hex>")
    if not any_match([hmac_sha256(s, incoming.body) for s in secrets], [from_hex(hexdigest)]):
        raise Rejected("X-Hub-Signature-256 does not match (wrong secret or altered body)")
    event = incoming.header("X-GitHub-Event")
    delivery = incoming.header("X-GitHub-Delivery")
    if not event or not delivery:
        raise Rejected("missing X-GitHub-Event or X-GitHub-Delivery")
    return Verified(delivery_id=delivery[:200], event=event[:100], payload=parse_body(incoming))


def answer(verified: Verified) -> Answer | None:
    if verified.event == "ping":
        zen = verified.payload.get("zen", "") if isinstance(verified.payload, dict) else ""
        return Answer(200, {"ok": True, "pong": zen})
    return None


PROVIDER = Provider(
    key="github",
    label="GitHub",
    verify=verify,
    answer=answer,
    signature_headers=("x-hub-signature-256", "x-hub-signature"),
    secret_hint="The hook's secret as typed in GitHub's webhook settings.",
)
