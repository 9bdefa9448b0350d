"""The queue from the shell: ``manage.py queue status | pause | resume [--scope S --value V]``."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from scheduler import audit, controls, stats
from scheduler.models import Priority, QueuePause, Run


class Command(BaseCommand):
    help = "Show the queue (counts per priority and state, pauses) or pause / resume a scope."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["status", "pause", "resume"])
        parser.add_argument("--scope", default="all", choices=QueuePause.Scope.values)
        parser.add_argument("--value", default="", help="the priority, gateway, agent or job name")
        parser.add_argument("--reason", default="")

    def handle(self, *args: Any, action: str, scope: str, value: str, reason: str, **options: Any) -> None:
        actor = audit.Actor.command("queue")
        try:
            if action == "pause":
                row = controls.pause(actor, scope, value, reason)
                self.stdout.write(f"{row} ({Run.objects.filter(status='parked').count()} run(s) parked)")
            elif action == "resume":
                released = controls.resume(actor, scope, value, reason)
                self.stdout.write(f"resumed {scope} {value}".rstrip() + f": {released} run(s) released")
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        if action == "status":
            self.status()

    def add_figures(self) -> None:
        """Oldest wait, throughput and average wait per priority (scheduler.stats, last hour)."""
        figures = stats.queue_status(60)["priorities"]
        self.stdout.write("priority  oldest wait  finished/min  average wait (last hour)")
        for priority in Priority.values:
            row = figures.get(priority, {})
            oldest, average = row.get("oldest_wait"), row.get("average_wait")
            oldest_text = "-" if oldest is None else f"{oldest:.1f}s"
            average_text = "-" if average is None else f"{average:.1f}s"
            rate = row.get("throughput_per_minute", 0)
            self.stdout.write(f"{priority:<9} {oldest_text:>11}  {rate:>12}  {average_text:>12}")

    def status(self) -> None:
        counts = Run.objects.counts()
        states = [s for s in Run.Status.values]
        self.stdout.write("priority  " + " ".join(f"{s:>9}" for s in states))
        for priority in Priority.values:
            row = counts.get(priority, {})
            self.stdout.write(f"{priority:<9} " + " ".join(f"{row.get(s, 0):>9}" for s in states))
        pauses = list(QueuePause.objects.all())
        if not pauses:
            self.stdout.write("not paused")
        for pause in pauses:
            self.stdout.write(f"{pause} since {pause.since:%Y-%m-%d %H:%M:%S} by {pause.who}: {pause.reason}")
        self.add_figures()
