"""``manage.py automation status | logs | export | import``: the automation daemon from the shell.

- ``status``: every AgentFlow process with a heartbeat (role, host, pid, uptime), then each
  registered status section (schedules, webhook endpoints, file watches…) as a table;
- ``logs [--job NAME] [--run ID] [-n N] [--follow] [--json]``: the automation log (runs and
  triggers, agentflow/lib/eventlog.py);
- ``export``: the automation as TOML on stdout (secrets as ``${ENV_VAR}``);
- ``import FILE [--dry-run] [--prune]``: validate all, then write all in one transaction.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agentflow.lib import eventlog
from scheduler import automation_io, automation_status
from scheduler.automation import ConfigError


class Command(BaseCommand):
    help = "Automation: status (processes and triggers), logs, export to TOML, import from TOML."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True)
        sub.add_parser("status", help="processes with pid and uptime, then schedules, webhooks and watches")
        logs = sub.add_parser("logs", help="the structured log lines of runs and triggers")
        logs.add_argument("--job", default="", help="only this job's lines")
        logs.add_argument("--run", type=int, default=None, help="only this run's lines")
        logs.add_argument("-n", "--lines", type=int, default=50, help="how many of the newest lines (50)")
        logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines (Ctrl-C ends)")
        logs.add_argument("--json", action="store_true", help="one JSON object a line")
        logs.add_argument("--max-seconds", type=float, default=None, help=argparse_hidden())
        sub.add_parser("export", help="print the automation as TOML (secrets as ${ENV_VAR})")
        load = sub.add_parser("import", help="apply a TOML file: all of it or nothing")
        load.add_argument("file", help="the TOML file (- for stdin)")
        load.add_argument("--dry-run", action="store_true", help="print what would change, write nothing")
        load.add_argument("--prune", action="store_true", help="also remove what the file does not list")

    def handle(self, *args: Any, subcommand: str, **options: Any) -> None:
        getattr(self, f"do_{subcommand}")(**options)

    # --- status ------------------------------------------------------------------------------------

    def do_status(self, **options: Any) -> None:
        for table in automation_status.tables():
            self.stdout.write(table.title)
            self.stdout.write(table.render_text() + "\n")

    # --- logs --------------------------------------------------------------------------------------

    def do_logs(
        self,
        *,
        job: str,
        run: int | None,
        lines: int,
        follow: bool,
        json: bool,
        max_seconds: float | None,
        **_: Any,
    ) -> None:
        import time

        def show(line: dict[str, Any]) -> None:
            self.stdout.write(_json_line(line) if json else eventlog.format_line(line))
            self.stdout.flush()

        start = eventlog.last_id()
        for line in eventlog.read(max(1, lines), job=job, run=run):
            show(line)
        if not follow:
            return
        ends = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            for followed in eventlog.follow(start, job=job, run=run, block_ms=500):
                if followed is not None:
                    show(followed)
                if ends is not None and time.monotonic() > ends:
                    return
        except KeyboardInterrupt:
            return

    # --- export / import ---------------------------------------------------------------------------

    def do_export(self, **options: Any) -> None:
        self.stdout.write(automation_io.export_toml(), ending="")

    def do_import(self, *, file: str, dry_run: bool, prune: bool, **options: Any) -> None:
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {file}: {exc}") from None
        try:
            result = automation_io.import_text(text, dry_run=dry_run, prune=prune, source=file)
        except ConfigError as exc:
            for message in exc.messages:
                self.stderr.write(f"error: {message}")
            raise CommandError(f"{file}: {len(exc.messages)} error(s), nothing was written") from None
        for line in result.lines():
            self.stdout.write(line)
        self.stdout.write(result.summary())


def _json_line(line: dict[str, Any]) -> str:
    return json.dumps(line, default=str, separators=(",", ":"))


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS
