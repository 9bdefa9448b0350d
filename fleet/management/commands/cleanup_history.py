from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from fleet import batches
from scheduler import runner
from scheduler.runner import Outcome


class Command(BaseCommand):
    help = (
        "Delete config history and chat history past retention, in bounded batches (same work as BATCH-004)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--config-days", type=int, default=settings.AGENTFLOW_CONFIG_RETENTION_DAYS)
        parser.add_argument("--chat-days", type=int, default=settings.AGENTFLOW_CHAT_RETENTION_DAYS)
        parser.add_argument("--batch-size", type=int, default=settings.AGENTFLOW_CLEANUP_BATCH_SIZE)
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )

    def handle(
        self, *args: Any, config_days: int, chat_days: int, batch_size: int, dry_run: bool, **options: Any
    ) -> None:
        last = {"n": 0}

        def progress(table: str, deleted: int) -> None:
            if deleted - last["n"] >= 100_000 or deleted < last["n"]:
                self.stdout.write(f"  {table}: {deleted} rows deleted so far")
                last["n"] = deleted

        def work(_gateway: None) -> Outcome:
            return batches.cleanup_history(
                config_days=config_days,
                chat_days=chat_days,
                batch_size=batch_size,
                dry_run=dry_run,
                progress=progress,
            )

        run = runner.run(batches.HISTORY_CLEANUP, None, work)
        verb = "would delete" if dry_run else "deleted"
        c = run.counts
        if run.status == "ok":
            self.stdout.write(
                f"Cleanup {verb}: config={c.get('config', 0)}, chat={c.get('chat', 0)} "
                f"(retention: config {config_days} days, chat {chat_days} days; "
                f"{run.duration_ms / 1000:.2f} s)"
            )
        else:
            self.stderr.write(f"Cleanup {run.status}: {run.error}")
            raise SystemExit(1)
