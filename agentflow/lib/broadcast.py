"""The one module that sends to the channel layer, and the registry of live events.

Each live event is declared once, by the app that owns it (``fleet/live.py``,
``scheduler/live.py``), as a :class:`LiveEvent`: its name (``noun.verb``), the group it goes to
and its fields. Senders call ``EVENT.send(...)``, ``await EVENT.asend(...)`` or
``EVENT.send_on_commit(...)``; the dashboard consumer forwards every declared event as it is,
and pages (``static/js/live.js``) subscribe to them by name. Nothing secret goes out: events are
small JSON (ids, statuses, labels).

Every group message carries a per-group sequence number (a Redis counter), so consumers can
tell when the channel layer dropped one, count it in /metrics and re-sync.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction

from .redis import get_redis, key

log = logging.getLogger("agentflow.broadcast")

GroupOf = Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True)
class LiveEvent:
    name: str  # "sessions.changed": what pages subscribe to
    group: GroupOf  # the channel-layer group, computed from the event's fields
    fields: tuple[str, ...]
    doc: str = ""

    @property
    def handler(self) -> str:
        """The consumer method name Channels would dispatch to (``sessions_changed``)."""
        return self.name.replace(".", "_")

    def check(self, data: Mapping[str, Any]) -> None:
        if set(data) != set(self.fields):
            missing = sorted(set(self.fields) - set(data))
            extra = sorted(set(data) - set(self.fields))
            raise TypeError(f"live event {self.name}: missing fields {missing}, unexpected fields {extra}")

    async def asend(self, **data: Any) -> None:
        self.check(data)
        await publish(self, self.group(data), data)

    def send(self, **data: Any) -> None:
        self.check(data)
        async_to_sync(publish)(self, self.group(data), data)

    def send_on_commit(self, **data: Any) -> None:
        """Send once the current transaction commits (at once outside one), so a page never
        re-fetches a row that is not there yet."""
        self.check(data)
        transaction.on_commit(lambda: self.send(**data))


EVENTS: dict[str, LiveEvent] = {}


def _fixed_group(group: str) -> GroupOf:
    return lambda _data: group


def declare(name: str, group: GroupOf | str, fields: tuple[str, ...] = (), doc: str = "") -> LiveEvent:
    """Declare a live event (once, at import of the owning app's ``live`` module)."""
    group_of = _fixed_group(group) if isinstance(group, str) else group
    event = LiveEvent(name, group_of, tuple(fields), doc)
    existing = EVENTS.get(name)
    if existing is not None and existing.fields != event.fields:
        raise ValueError(f"live event {name} is declared twice with different fields")
    EVENTS[name] = event
    return event


def _next_seq(group: str) -> int | None:
    try:
        return int(get_redis().incr(key("seq", group)))
    except Exception:
        return None


async def publish(event: LiveEvent, group: str, data: Mapping[str, Any]) -> None:
    """The raw send behind ``LiveEvent.send``: no field check. Apps use the event's methods; tests
    and benchmarks use this for a partial event or one with a timestamp field of their own."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        seq = await sync_to_async(_next_seq, thread_sensitive=False)(group)
        await layer.group_send(
            group, {"type": event.handler, "kind": event.name, "group": group, "seq": seq, **data}
        )
    except Exception:  # a push is best effort: the polling batches reconcile
        log.exception("broadcast %s to %s failed", event.name, group)
