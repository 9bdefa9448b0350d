from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from agentflow.lib import heartbeat
from fleet.listener import FleetListener


class Command(BaseCommand):
    help = (
        "Keep a live connection to every enabled gateway: status, sessions.subscribe and events pushed to "
        "the dashboard. Reconnects with backoff; picks up admin changes every --refresh seconds."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--refresh", type=float, default=10.0)

    def handle(self, *args: Any, refresh: float, **options: Any) -> None:
        asyncio.run(self._main(refresh))

    async def _main(self, refresh: float) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        heartbeat.start("listener")
        self.stdout.write("Gateway listener started.")
        await FleetListener(refresh_interval=refresh).run(stop)
        self.stdout.write("Gateway listener stopped.")
