from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from agentflow.lib import heartbeat
from scheduler.triggers.watcher import Watcher


class Command(BaseCommand):
    help = (
        "Watch the directories of every enabled file watch (under AGENTFLOW_WATCH_ROOTS) and queue a run "
        "of each watch's job for the files created, modified or deleted there. Picks up watch changes "
        "every --poll seconds (AGENTFLOW_WATCH_POLL_SECONDS)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--poll", type=float, default=None, help="seconds between re-reads of the watches"
        )

    def handle(self, *args: Any, poll: float | None, **options: Any) -> None:
        default_root = Path(settings.DATA_DIR) / "watch"
        if str(default_root) in settings.AGENTFLOW_WATCH_ROOTS:
            default_root.mkdir(mode=0o700, exist_ok=True)  # the default root exists from the first start
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        heartbeat.start("watcher")  # manage.py automation status and the Automation page list it
        self.stdout.write(f"File watcher started (roots: {', '.join(settings.AGENTFLOW_WATCH_ROOTS)}).")
        Watcher(poll_seconds=poll, stop=stop).run()
        self.stdout.write("File watcher stopped.")
