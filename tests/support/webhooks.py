"""Signed webhook requests as each sender makes them, for the webhook tests and bench.

Where the provider publishes a Python library, the signature comes from it (slack-sdk's
SignatureVerifier.generate_signature, stripe's WebhookSignature.generate_signature_header,
standardwebhooks' Webhook.sign), so the verifiers are checked against the sender's own code,
not against a second copy of ours. GitHub and the generic header have none: they are computed
as GitHub's documentation shows (HMAC-SHA256 of the body, hex, "sha256=" prefix)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

PROVIDERS = ("github", "slack", "stripe", "standard", "hmac")


def new_secret(provider: str) -> str:
    if provider == "standard":
        return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    if provider == "stripe":
        return "whsec_" + secrets.token_hex(16)
    return secrets.token_hex(20)


def payload_for(provider: str, delivery: str, event: str | None = None) -> dict[str, Any]:
    """A body shaped as the provider's (the fields the intake reads)."""
    if provider == "github":
        return {
            "action": "opened",
            "number": 7,
            "repository": {"full_name": "acme/app"},
            "pull_request": {
                "diff_url": "https://example.test/acme/app/pull/7.diff",
                "base": {"ref": "main"},
            },
        }
    if provider == "slack":
        return {
            "type": "event_callback",
            "event_id": delivery,
            "event": {"type": event or "app_mention", "text": "hi"},
        }
    if provider == "stripe":
        return {"id": delivery, "type": event or "invoice.paid", "data": {"object": {"amount_paid": 1200}}}
    return {"type": event or "order.created", "id": delivery, "data": {"n": 1}}


def signed(
    provider: str,
    secret: str | list[str],
    body: bytes,
    *,
    delivery: str | None = None,
    event: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    """The headers a sender sends with ``body`` (``secret``: several → one signature each, as
    Standard Webhooks and Stripe do while rotating)."""
    from slack_sdk.signature import SignatureVerifier
    from standardwebhooks.webhooks import Webhook
    from stripe import WebhookSignature

    keys = secret if isinstance(secret, list) else [secret]
    ts = int(time.time()) if timestamp is None else timestamp
    delivery = delivery or uuid.uuid4().hex
    if provider == "github":
        digest = hmac.new(keys[0].encode(), body, hashlib.sha256).hexdigest()
        return {
            "X-Hub-Signature-256": f"sha256={digest}",
            "X-GitHub-Event": event or "pull_request",
            "X-GitHub-Delivery": delivery,
            "Content-Type": "application/json",
        }
    if provider == "slack":
        signature = SignatureVerifier(keys[0]).generate_signature(timestamp=str(ts), body=body)
        return {
            "X-Slack-Signature": signature or "",
            "X-Slack-Request-Timestamp": str(ts),
            "Content-Type": "application/json",
        }
    if provider == "stripe":
        header = WebhookSignature.generate_signature_header(body.decode(), keys[0], timestamp=ts)
        for extra in keys[1:]:
            header += (
                ","
                + WebhookSignature.generate_signature_header(body.decode(), extra, timestamp=ts).split(",")[1]
            )
        return {"Stripe-Signature": header, "Content-Type": "application/json"}
    if provider == "standard":
        when = datetime.fromtimestamp(ts, tz=UTC)
        signature = " ".join(Webhook(k).sign(delivery, when, body.decode()) for k in keys)
        return {
            "webhook-id": delivery,
            "webhook-timestamp": str(ts),
            "webhook-signature": signature,
            "Content-Type": "application/json",
        }
    if provider == "hmac":
        digest = hmac.new(keys[0].encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
        headers = {
            "X-Signature-256": f"sha256={digest}",
            "X-Webhook-Id": delivery,
            "X-Webhook-Timestamp": str(ts),
            "Content-Type": "application/json",
        }
        if event:
            headers["X-Webhook-Event"] = event
        return headers
    raise ValueError(provider)


def request_for(
    provider: str,
    secret: str | list[str],
    *,
    delivery: str | None = None,
    event: str | None = None,
    **kw: Any,
) -> tuple[bytes, dict[str, str]]:
    """A body and its signed headers, in one call."""
    delivery = delivery or uuid.uuid4().hex
    body = json.dumps(payload_for(provider, delivery, event)).encode()
    return body, signed(provider, secret, body, delivery=delivery, event=event, **kw)


def as_meta(headers: dict[str, str]) -> dict[str, str]:
    """Headers as Django's test client takes them (``headers=`` passes Content-Type apart)."""
    return {k: v for k, v in headers.items() if k.lower() != "content-type"}
