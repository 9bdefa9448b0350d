"""Live-event helpers: a channel-layer listener, as a dashboard consumer would be, and a raw push."""

from __future__ import annotations

import asyncio
from typing import Any

from channels.layers import get_channel_layer

from agentflow.lib import broadcast


async def apush(group: str, kind: str, **data: Any) -> None:
    """Send ``kind`` to ``group`` with any fields (declared events check theirs; tests sometimes
    need a partial or made-up one)."""
    event = broadcast.EVENTS.get(kind) or broadcast.LiveEvent(kind, lambda _d: group, tuple(data))
    await broadcast.publish(event, group, data)


class Listener:
    """A channel of our own in a channel-layer group, as a dashboard consumer would have.

    All its layer calls run on one event loop of its own: channels_redis binds a channel's
    receive buffer to the loop that first received on it."""

    def __init__(self, group: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.layer = get_channel_layer()
        self.group = group
        self.channel = self.loop.run_until_complete(self.layer.new_channel())
        self.loop.run_until_complete(self.layer.group_add(group, self.channel))

    def receive(self, timeout: float = 3.0) -> dict | None:
        try:
            return self.loop.run_until_complete(asyncio.wait_for(self.layer.receive(self.channel), timeout))
        except TimeoutError:
            return None

    def close(self) -> None:
        async def shut() -> None:
            await self.layer.group_discard(self.group, self.channel)
            if hasattr(type(self.layer), "close_pools"):  # core: this loop's connection pools
                await self.layer.close_pools()
            else:  # pubsub: flush closes this loop's shard connections
                await self.layer.flush()

        try:
            self.loop.run_until_complete(shut())
        finally:
            self.loop.close()
