"""The life of a notification: recorded, dispatched, attempted, retried, sent or failed.

1. :func:`record` (``notify.send``, on commit): one ``Notification`` and one pending ``Delivery``
   per channel that receives it, in one transaction; on its commit one Celery task per delivery
   (``scheduler.tasks.deliver_notification``). A broker that is down is logged: the rows wait.
2. :func:`attempt` (the task): claim the delivery with a conditional UPDATE (pending and due →
   ``next_attempt_at`` a lease ahead; proceed only if one row changed), send it, record the
   answer (status, capped body, error, duration, one line of ``history``).
3. Sent → ``sent``. Not taken → ``pending`` again at ``now + backoff`` (full jitter:
   uniform in [0, min(CAP, BASE · 2^(n-1))]), and a countdown message; ``failed`` (final) after
   AGENTFLOW_NOTIFY_MAX_ATTEMPTS or an answer a retry cannot help (a 4xx other than 408/409/425/429).
4. :func:`redispatch_due` (the engine's tick): a fresh message for every delivery due for a
   while, so a lost message, a worker killed mid-send (its lease runs out) or a Redis outage
   loses nothing.

Nothing here raises into the code that called ``notify.send``.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agentflow.lib import http
from scheduler import audit, notify

from . import senders
from .models import RESPONSE_MAX_CHARS, Channel, ChannelThread, Delivery, Notification

log = logging.getLogger("agentflow.notify")

REDISPATCH_MAX = 100  # messages the tick sends per pass


def record(event: notify.Event, *, queue: bool = True) -> Notification:
    """The event's row and its deliveries; with ``queue``, their messages go on commit (the
    test action attempts its one delivery itself)."""
    with transaction.atomic():
        channels = (
            Channel.objects.all() if event.channel is None else Channel.objects.filter(pk=event.channel)
        )
        receivers = [c for c in channels if c.receives(event)]
        notification = Notification.objects.create(
            kind=event.kind,
            level=event.level,
            subject=event.subject[:300],
            text=event.text,
            data=dict(event.data),
            thread=event.thread[:200],
            link=event.link[:500],
        )
        deliveries = Delivery.objects.bulk_create(
            [
                Delivery(notification=notification, channel=c, next_attempt_at=notification.created_at)
                for c in receivers
            ]
        )
        ids = [str(d.pk) for d in deliveries]
        if queue:
            transaction.on_commit(lambda: [dispatch(pk) for pk in ids])
    log.info("notification %s (%s): %d channel(s)", event.kind, event.subject[:80], len(ids))
    return notification


def dispatch(delivery_id: str, countdown: float | None = None) -> bool:
    """Queue the delivery's attempt; a broker that is down is logged (the tick sends it later)."""
    from scheduler.tasks import deliver_notification  # tasks imports this module

    try:
        if countdown is None:
            deliver_notification.delay(delivery_id)
        else:
            deliver_notification.apply_async((delivery_id,), countdown=countdown)
    except Exception:
        log.warning(
            "could not queue delivery %s (broker down?): the tick retries it", delivery_id, exc_info=True
        )
        return False
    return True


def backoff_seconds(attempt: int, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(cap, base · 2^(attempt-1))] (attempt counts from 1)."""
    base = float(settings.AGENTFLOW_NOTIFY_RETRY_BASE_SECONDS)
    cap = float(settings.AGENTFLOW_NOTIFY_RETRY_CAP_SECONDS)
    return (rng or random).uniform(0, min(cap, base * 2 ** max(0, attempt - 1)))


def lease_seconds() -> float:
    """How long a claimed attempt is someone's: its calls' timeouts and a margin (GitHub makes two)."""
    return 3 * float(settings.AGENTFLOW_NOTIFY_TIMEOUT_SECONDS) + 30


def attempt(delivery_id: Any, now: datetime | None = None) -> float | None:
    """Make one attempt if the delivery is pending and due. Returns the seconds until the next
    attempt when one was scheduled, else None (sent, failed, skipped, or not ours to send)."""
    now = now or timezone.now()
    claimed = Delivery.objects.filter(
        pk=delivery_id, status=Delivery.Status.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=now + timedelta(seconds=lease_seconds()), last_attempt_at=now)
    if not claimed:
        return None
    delivery = Delivery.objects.select_related("channel", "notification").get(pk=delivery_id)
    channel, notification = delivery.channel, delivery.notification
    number = delivery.attempts + 1
    if not channel.enabled and notification.kind != notify.TEST:
        _save(delivery, now, number, Delivery.Status.SKIPPED, None, "", "the channel was disabled", 0.0)
        return None
    started = time.perf_counter()
    try:
        outcome = senders.send(delivery)
    except senders.SendError as exc:
        error, status, body, retry = exc.message, exc.status, exc.body, exc.retry
    except Exception as exc:  # a sender's bug: recorded and retried like a failure, never raised
        log.exception("delivery %s: the %s sender failed", delivery.pk, channel.kind)
        error, status, body, retry = f"{type(exc).__name__} in the {channel.kind} sender", None, "", True
    else:
        took = (time.perf_counter() - started) * 1000
        _save(
            delivery, now, number, Delivery.Status.SENT, outcome.status, outcome.body, "", took, outcome.note
        )
        log.info("delivery %s to channel %s sent (attempt %d)", delivery.pk, channel.name, number)
        return None
    took = (time.perf_counter() - started) * 1000
    error = http.scrub(error, [channel.secret])
    final = not retry or number >= settings.AGENTFLOW_NOTIFY_MAX_ATTEMPTS or notification.kind == notify.TEST
    if final:
        _save(delivery, now, number, Delivery.Status.FAILED, status, body, error, took)
        log.warning(
            "delivery %s to channel %s failed after %d attempt(s): %s",
            delivery.pk,
            channel.name,
            number,
            error,
        )
        return None
    wait = backoff_seconds(number)
    _save(
        delivery,
        now,
        number,
        Delivery.Status.PENDING,
        status,
        body,
        error,
        took,
        next_at=now + timedelta(seconds=wait),
    )
    log.info(
        "delivery %s to channel %s: attempt %d failed (%s), retry in %.1f s",
        delivery.pk,
        channel.name,
        number,
        error,
        wait,
    )
    return wait


def _save(
    delivery: Delivery,
    now: datetime,
    number: int,
    status: str,
    response_status: int | None,
    body: str,
    error: str,
    took: float,
    note: str = "",
    next_at: datetime | None = None,
) -> None:
    line = {
        "n": number,
        "at": now.isoformat(),
        "status": response_status,
        "ms": round(took, 1),
        "result": status if status != Delivery.Status.PENDING else "retry",
        "error": error[:300],
        "note": note[:200],
    }
    history = [*(delivery.history or []), line][-20:]
    Delivery.objects.filter(pk=delivery.pk).update(
        status=status,
        attempts=number,
        next_attempt_at=next_at,
        response_status=response_status,
        response_body=(body or note)[:RESPONSE_MAX_CHARS],
        error=error[:2000],
        history=history,
        sent_at=now if status == Delivery.Status.SENT else None,
        duration_ms=took,
    )


def deliver(delivery_id: Any) -> None:
    """The task's body: one attempt, then a countdown message for the retry it scheduled."""
    wait = attempt(delivery_id)
    if wait is not None:
        dispatch(str(delivery_id), countdown=wait)


def redispatch_due(now: datetime) -> int:
    """The tick's pass: a message for each delivery due for longer than
    AGENTFLOW_REDISPATCH_AFTER_SECONDS (its message lost, or a lease run out)."""
    cutoff = now - timedelta(seconds=settings.AGENTFLOW_REDISPATCH_AFTER_SECONDS)
    due = list(
        Delivery.objects.due(cutoff).order_by("next_attempt_at").values_list("pk", flat=True)[:REDISPATCH_MAX]
    )
    sent = 0
    for pk in due:
        if not dispatch(str(pk)):
            break
        sent += 1
    return sent


def thread_issue_closed(thread: str) -> bool:
    """Whether someone closed an issue a GitHub channel opened for ``thread`` (read now from
    GitHub): the blocked-provider probe takes it as "try again". Each closing is seen once (the
    thread's row then says closed); a GitHub that cannot be read says nothing."""
    closed = False
    for row in ChannelThread.objects.filter(
        thread=thread, state="open", channel__enabled=True
    ).select_related("channel"):
        try:
            closed = senders.issue_state(row.channel, row) == "closed" or closed
        except senders.SendError as exc:
            log.warning(
                "channel %s: could not read the issue of %s: %s", row.channel.name, thread, exc.message
            )
    return closed


def send_test(actor: audit.Actor, channel: Channel) -> Delivery:
    """ "Send test notification": one delivery to ``channel`` now, attempted in this request (no
    retry: the operator sees the answer). A control: role ``operate``, one audit row."""
    target = audit.Target("notification-channel", str(channel.pk), channel.name)
    with audit.control("notification.test", actor, target) as ctl:
        event = notify.Event(
            kind=notify.TEST,
            subject=f"Test notification from AgentFlow to {channel.name}",
            text=f"{actor.label} sent this test to check the channel {channel.name} "
            f"({channel.get_kind_display()}).",
            link="/notifications/",
            channel=channel.pk,
            data={"test": True, "by": actor.label},
        )
        notification = record(event, queue=False)
        delivery = notification.deliveries.get()
        attempt(delivery.pk)
        delivery.refresh_from_db()
        if delivery.status == Delivery.Status.SENT:
            ctl.note(f"sent ({delivery.response_status or delivery.response_body[:100]})")
        else:
            ctl.fail(f"{delivery.status}: {delivery.error[:300]}")
    return delivery
