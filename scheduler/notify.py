"""Notifications: the one call every part of AgentFlow makes to tell people something happened.

``send(Event(...))`` is called where the thing happens (inside its transaction is fine: nothing
leaves before commit). Which channels receive which event kinds is configured in the admin
(issue 10 §5: email, Slack, a signed generic webhook, a GitHub issue per ``thread``).

On commit, ``send`` writes one ``Notification`` and one ``Delivery`` per enabled channel that
subscribes to the kind (at or above its minimum level), then queues one Celery task per delivery;
the sending, the retries with backoff and the delivery log are
:mod:`scheduler.notifications.delivery`'s (scheduler/README.md, "Notifications"). Nothing a channel
does (down, slow, refusing) ever raises into the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

log = logging.getLogger("agentflow.notify")

# The event kinds a channel can subscribe to (the admin's checkboxes), with their labels.
EVENTS: dict[str, str] = {
    "stop.engaged": "Emergency stop engaged",
    "stop.released": "Emergency stop released",
    "alert.raised": "Alert raised",
    "alert.resolved": "Alert resolved",
    "provider.blocked": "Provider blocked",
    "provider.restored": "Provider restored",
    "job.failed": "Job failed",
}

LEVELS = ("info", "warning", "error", "critical")

# The kind of a "send test notification" (not a subscription: it goes to the one channel named).
TEST = "test"

# Kinds sent to one named channel only, never a subscription: a job's result action
# (scheduler/results.py) delivering a run's reply.
DIRECT: dict[str, str] = {TEST: "Test notification", "job.result": "Job result"}

# The kinds that end an episode: a GitHub channel comments on the thread's issue and closes it.
CLOSING = frozenset({"stop.released", "alert.resolved", "provider.restored"})


@dataclass(frozen=True)
class Event:
    """What happened. ``thread``: events of one episode share it (``stop:12``, ``provider-block:3``)
    so a GitHub channel opens one issue and comments on the later events; ``link``: the page
    that shows it (a path; the channel makes it absolute with AGENTFLOW_PUBLIC_URL);
    ``channel``: deliver to this channel id only, whatever it subscribes to (the test action)."""

    kind: str
    subject: str
    text: str = ""
    level: str = "info"
    thread: str = ""
    link: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    channel: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in EVENTS and not (self.kind in DIRECT and self.channel is not None):
            raise ValueError(f"unknown notification event {self.kind!r} (one of {', '.join(EVENTS)})")
        if self.level not in LEVELS:
            raise ValueError(f"unknown level {self.level!r} (one of {', '.join(LEVELS)})")


def send(event: Event) -> None:
    """Tell the channels subscribed to ``event.kind``, after the current transaction commits
    (at once outside one). Never raises: a failure to record is logged."""
    transaction.on_commit(lambda: _record(event))


def _record(event: Event) -> None:
    # Imported here: the notification models import this module (EVENTS, LEVELS, Event).
    from .notifications import delivery

    try:
        delivery.record(event)
    except Exception:  # the caller's work is done and committed: never undo or break it
        log.exception("notification %s (%s) could not be recorded", event.kind, event.subject[:80])
