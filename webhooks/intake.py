"""The intake: one request to ``/webhooks/<slug>/`` → an answer, a delivery row and at most one run.

In the request, in this order (each refusal is recorded on the delivery log and answered):

1. The endpoint by slug: unknown → 404 (nothing recorded: anyone may guess slugs); disabled →
   404, recorded.
2. The body size: a ``Content-Length`` above the cap → 413 before the body is read; a body
   without one is read up to cap + 1 byte.
3. The signature over the raw body with each valid secret (the provider module; constant time),
   and the replay window where the provider signs a timestamp → 401. An unreadable signed
   body → 400.
4. The per-endpoint rate limit (Redis, shared by every web process) → 429 with Retry-After.
   Only verified deliveries count, so unsigned noise cannot use up a sender's budget.
5. A handshake (GitHub ``ping``, Slack ``url_verification``) is answered and recorded.
6. A delivery id already claimed (a sender's retry, a replay inside the window, a concurrent
   duplicate) → 200, recorded as a duplicate pointing at the first one's run.
7. An event the endpoint does not run, or a payload its filters do not pass → 200, recorded as
   ignored.
8. Otherwise, in one transaction: the run is queued through ``scheduler.queue.enqueue`` (so the
   job's priority, the limits, pauses and emergency stops apply: a stop parks the run) and the
   delivery row is written; 202. The delivery row's conditional unique index on (endpoint,
   delivery id) is what makes a duplicate harmless when two copies race past step 6.

The run is written in the request rather than handed to Celery: a delivery acknowledged is
then a run recorded, with no broker hop in between that could lose it. The cost (bench/README.md,
``python -m bench webhooks``): ≈ 4–6 ms of CPU per delivery in the intake (10 statements, 4 Redis
round trips) on top of ≈ 2 ms for the request itself, ≈ 130 verified deliveries/s per web process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.template import TemplateSyntaxError

from agentflow.lib.dbbusy import retry_busy
from scheduler import audit, queue
from scheduler.models import Run

from . import ratelimit
from .inputs import render_input
from .models import Delivery, Endpoint
from .providers import PROVIDERS, Incoming, Malformed, Rejected, Verified

log = logging.getLogger("agentflow.webhooks")

REFUSED_BODY_KEPT = 4096  # bytes of a too-large body kept for the log
# Header names always masked, besides each provider's signature headers.
_MASKED = {"authorization", "proxy-authorization", "cookie", "x-api-key"}
_MASKED_PARTS = ("signature", "secret", "token", "password")


@dataclass
class Outcome:
    status: int
    body: Any
    delivery: Delivery | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def mask_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers fit to store and show: signatures, credentials and cookies masked."""
    signature_headers = {h for p in PROVIDERS.values() for h in p.signature_headers}
    masked = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in _MASKED or lower in signature_headers or any(part in lower for part in _MASKED_PARTS):
            masked[lower] = f"•••• masked ({len(value)} characters)"
        else:
            masked[lower] = value[:1000]
    return masked


def _text(body: bytes) -> str:
    return body.decode("utf-8", errors="replace")


class _Log:
    """The delivery row of one request, written once its verdict is known."""

    def __init__(self, endpoint: Endpoint, headers: Mapping[str, str], started: float) -> None:
        self.endpoint, self.started = endpoint, started
        self.headers = mask_headers(headers)
        self.body, self.body_bytes = "", 0
        self.verified: Verified | None = None

    def row(self, verdict: str, status: int, reason: str = "", run: Run | None = None) -> Delivery:
        verified = self.verified
        return Delivery(
            endpoint=self.endpoint,
            delivery_id=verified.delivery_id if verified else "",
            event=verified.event if verified else "",
            verdict=verdict,
            status_code=status,
            reason=reason[:300],
            headers=self.headers,
            body=self.body,
            body_bytes=self.body_bytes,
            retry=min(verified.retry, 32767) if verified else 0,
            run=run,
            duration_ms=round((time.perf_counter() - self.started) * 1000, 2),
        )

    def save(self, verdict: str, status: int, reason: str = "", run: Run | None = None) -> Delivery:
        """Write the row; a claiming verdict whose id another row claimed meanwhile is a duplicate."""
        delivery = self.row(verdict, status, reason, run)
        if verdict in Delivery.CLAIMING and delivery.delivery_id:
            try:
                with transaction.atomic():
                    delivery.save()
                return delivery
            except IntegrityError:
                delivery = self.row(Delivery.Verdict.DUPLICATE, 200, "the delivery id was claimed meanwhile")
        retry_busy(delivery.save)
        return delivery

    def answer(self, verdict: str, status: int, reason: str, body: Any = None, **extra: Any) -> Outcome:
        delivery = self.save(verdict, status, reason)
        payload = body if body is not None else {"status": verdict, "detail": reason, "delivery": delivery.pk}
        return Outcome(delivery.status_code, payload, delivery, **extra)


def receive(
    slug: str,
    headers: Mapping[str, str],
    read: Callable[[int], bytes],
    *,
    content_length: int | None,
    content_type: str = "",
    now: float | None = None,
) -> Outcome:
    """Steps 1–8 of the module docstring. ``read(n)``: up to n bytes of the body."""
    started = time.perf_counter()
    now = time.time() if now is None else now
    endpoint = Endpoint.objects.select_related("job").filter(slug=slug[:100]).first()
    if endpoint is None:
        return Outcome(404, {"status": "unknown", "detail": "no webhook endpoint here"})
    entry = _Log(endpoint, headers, started)
    if not endpoint.enabled:
        return entry.answer(Delivery.Verdict.DISABLED, 404, "the endpoint is disabled")
    cap = endpoint.body_cap
    if content_length is not None and content_length > cap:
        kept = read(REFUSED_BODY_KEPT)
        entry.body, entry.body_bytes = _text(kept), content_length
        return entry.answer(Delivery.Verdict.TOO_LARGE, 413, f"{content_length} bytes, the cap is {cap}")
    body = read(cap + 1)
    entry.body, entry.body_bytes = _text(body[:cap]), len(body)
    if len(body) > cap:
        entry.body = _text(body[:REFUSED_BODY_KEPT])
        return entry.answer(Delivery.Verdict.TOO_LARGE, 413, f"more than {cap} bytes, the cap")

    provider = PROVIDERS.get(endpoint.provider)
    secrets = endpoint.valid_secrets()
    if provider is None or not secrets:
        problem = "the endpoint has no secret set" if provider else f"unknown provider {endpoint.provider!r}"
        return entry.answer(Delivery.Verdict.BAD_SIGNATURE, 401, problem)
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        verified = provider.verify(Incoming(lowered, body, content_type), secrets, now)
    except Rejected as exc:
        return entry.answer(Delivery.Verdict.BAD_SIGNATURE, 401, exc.reason)
    except Malformed as exc:
        return entry.answer(Delivery.Verdict.MALFORMED, 400, str(exc))
    entry.verified = verified

    if not ratelimit.allow(endpoint.pk, endpoint.rate_limit_per_minute, now):
        return entry.answer(
            Delivery.Verdict.RATE_LIMITED,
            429,
            f"more than {endpoint.rate_limit_per_minute} deliveries a minute",
            headers={"Retry-After": "10"},
        )
    handshake = provider.answer(verified)
    if handshake is not None:
        delivery = entry.save(Delivery.Verdict.ANSWERED, handshake.status, f"{verified.event} answered")
        return Outcome(handshake.status, handshake.body, delivery, content_type=handshake.content_type)
    first = claimed(endpoint, verified.delivery_id)
    if first is not None:
        return _duplicate(entry, first)
    if not endpoint.accepts(verified.event):
        return entry.answer(
            Delivery.Verdict.IGNORED, 200, f"event {verified.event!r} is not one this endpoint runs"
        )
    mismatch = endpoint.mismatch(verified.payload)
    if mismatch:
        return entry.answer(Delivery.Verdict.IGNORED, 200, mismatch)
    return _start(entry, endpoint, verified)


def claims(endpoint_id: int, delivery_id: str) -> QuerySet[Delivery]:
    """The row that claims ``delivery_id`` at the endpoint (at most one: the unique index)."""
    return Delivery.objects.filter(
        endpoint_id=endpoint_id,
        delivery_id=delivery_id,
        verdict__in=Delivery.CLAIMING,
        redelivery_of__isnull=True,
    )


def claimed(endpoint: Endpoint, delivery_id: str) -> Delivery | None:
    if not delivery_id:
        return None
    return claims(endpoint.pk, delivery_id).only("pk", "run_id", "verdict").first()


def _duplicate(entry: _Log, first: Delivery) -> Outcome:
    delivery = entry.save(
        Delivery.Verdict.DUPLICATE, 200, f"delivery id already received (#{first.pk})", first.run
    )
    return Outcome(
        200,
        {"status": "duplicate", "delivery": delivery.pk, "first": first.pk, "run": first.run_id},
        delivery,
    )


def _start(entry: _Log, endpoint: Endpoint, verified: Verified) -> Outcome:
    try:
        run_input = render_input(
            endpoint.input_template,
            payload=verified.payload,
            event=verified.event,
            delivery=verified.delivery_id,
            endpoint=endpoint.slug,
        )
    except TemplateSyntaxError as exc:
        return entry.answer(Delivery.Verdict.NOT_RUN, 200, f"the input template does not parse: {exc}")

    def write() -> Delivery:
        with transaction.atomic():
            run = queue.enqueue(
                endpoint.job,
                input=run_input,
                trigger=Run.Trigger.WEBHOOK,
                triggered_by=f"webhook {endpoint.slug}",
                dedupe_key=f"webhook:{endpoint.pk}:{verified.delivery_id}",
            )
            delivery = entry.row(Delivery.Verdict.ACCEPTED, 202, _run_note(run), run)
            delivery.save()
            return delivery

    try:
        delivery = retry_busy(write)
    except IntegrityError:  # a concurrent copy claimed the id first: its run is the one
        first = claimed(endpoint, verified.delivery_id)
        if first is None:
            raise
        return _duplicate(entry, first)
    except ValidationError as exc:  # the job is disabled, its parameters no longer validate
        return entry.answer(Delivery.Verdict.NOT_RUN, 200, "; ".join(exc.messages))
    run = delivery.run
    assert run is not None
    return Outcome(
        202,
        {"status": "accepted", "delivery": delivery.pk, "run": run.pk, "run_status": run.status},
        delivery,
    )


def _run_note(run: Run) -> str:
    if run.status == Run.Status.PARKED:
        return f"run {run.pk} parked" + (" by an emergency stop" if run.stop_id else " by a pause")
    return f"run {run.pk} {run.status}"


# --- redelivery ------------------------------------------------------------------------------------


def redeliver(actor: audit.Actor, original: Delivery) -> Delivery:
    """Run the stored delivery again as if it arrived now (today's events, filters and input
    template), as a new delivery row pointing at the original and a new run. Operator role;
    audited. Only a delivery that passed verification can be redelivered."""
    endpoint = original.endpoint
    target = audit.Target(
        "webhook_delivery", str(original.pk), f"{endpoint.slug} {original.event} {original.delivery_id}"
    )
    with audit.control("webhook.redeliver", actor, target, atomic=True) as ctl:
        if not original.verified:
            verdict = original.get_verdict_display().lower()
            raise ValidationError(f"only a verified delivery can be redelivered (this one is {verdict})")
        if original.body_truncated:
            raise ValidationError("the stored body is truncated: it cannot be redelivered")
        from .providers.base import parse_body

        payload = parse_body(
            Incoming({}, original.body.encode(), str(original.headers.get("content-type", "")))
        )
        if not endpoint.accepts(original.event):
            raise ValidationError(f"event {original.event!r} is not one the endpoint runs now")
        mismatch = endpoint.mismatch(payload)
        if mismatch:
            raise ValidationError(f"the endpoint's filters refuse it now: {mismatch}")
        run_input = render_input(
            endpoint.input_template,
            payload=payload,
            event=original.event,
            delivery=original.delivery_id,
            endpoint=endpoint.slug,
        )
        run = queue.enqueue(
            endpoint.job,
            input=run_input,
            trigger=Run.Trigger.WEBHOOK,
            triggered_by=f"webhook {endpoint.slug} (redelivery of #{original.pk} by {actor.label})",
        )
        delivery = Delivery.objects.create(
            endpoint=endpoint,
            delivery_id=original.delivery_id,
            event=original.event,
            verdict=Delivery.Verdict.ACCEPTED,
            status_code=202,
            reason=f"redelivery of #{original.pk} by {actor.label}: {_run_note(run)}"[:300],
            headers=original.headers,
            body=original.body,
            body_bytes=original.body_bytes,
            run=run,
            redelivery_of=original,
        )
        ctl.note(f"delivery #{delivery.pk}, run {run.pk} {run.status}")
    return delivery
