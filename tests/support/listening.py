"""The real fleet listener in a thread of the test process (its own event loop), for tests whose
agent runs complete from the gateway's events."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections

from fleet import agent_runs
from fleet.listener import FleetListener


@contextmanager
def listening(refresh_interval: float = 0.5) -> Iterator[FleetListener]:
    listener = FleetListener(refresh_interval=refresh_interval)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        try:
            await listener.run(stop)
        finally:
            await agent_runs.drain()

    def target() -> None:
        try:
            loop.run_until_complete(main())
        finally:
            connections.close_all()
            loop.close()

    thread = threading.Thread(target=target, name="listener-under-test", daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
