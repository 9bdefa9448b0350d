"""Notifications: the one call every part of AgentFlow makes to tell people something happened.

``send(Event(...))`` is called where the thing happens (inside its transaction is fine: nothing
leaves before commit). Which channels receive which event kinds is configured in the admin
(issue 10 §5: email, Slack, a signed generic webhook, a GitHub issue per ``thread``).

Not yet: channels and delivery. Until they land, ``send`` only logs the event, so callers can be
written against the final interface.
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


@dataclass(frozen=True)
class Event:
    """What happened. ``thread``: events of one episode share it (``stop:12``, ``provider-block:3``)
    so a GitHub channel opens one issue and comments on the later events; ``link``: the page
    that shows it (a path; the channel makes it absolute with AGENTFLOW_PUBLIC_URL)."""

    kind: str
    subject: str
    text: str = ""
    level: str = "info"
    thread: str = ""
    link: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in EVENTS:
            raise ValueError(f"unknown notification event {self.kind!r} (one of {', '.join(EVENTS)})")
        if self.level not in LEVELS:
            raise ValueError(f"unknown level {self.level!r} (one of {', '.join(LEVELS)})")


def send(event: Event) -> None:
    """Tell the channels subscribed to ``event.kind``, after the current transaction commits."""
    transaction.on_commit(lambda: log.info("notification %s: %s", event.kind, event.subject))
