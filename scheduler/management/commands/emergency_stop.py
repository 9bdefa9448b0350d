"""``manage.py emergency_stop [--scope global|gateway|agent|priority|provider --value V] --reason TEXT``
(and ``--status``): engage an emergency stop from the shell (scheduler.stops.engage), audited."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from scheduler import audit, stops
from scheduler.models import EmergencyStop


class Command(BaseCommand):
    help = (
        "Engage an emergency stop: nothing in scope starts, what runs is aborted, the gateways' cron is off."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--scope", default="global", choices=EmergencyStop.Scope.values)
        parser.add_argument("--value", default="", help="the gateway, agent, priority or provider")
        parser.add_argument("--reason", default="", help="why (required to engage)")
        parser.add_argument("--status", action="store_true", help="only list the engaged stops")

    def handle(self, *args: Any, scope: str, value: str, reason: str, status: bool, **options: Any) -> None:
        if status:
            rows = stops.engaged()
            if not rows:
                self.stdout.write("no emergency stop is engaged")
            for stop in rows:
                self.stdout.write(
                    f"stop {stop.pk}: {stop.scope_label}, since {stop.engaged_at:%Y-%m-%d %H:%M:%S} "
                    f"by {stop.who}: {stop.reason}"
                )
            return
        if not reason.strip():
            raise CommandError("--reason is required: say why the fleet is stopped")
        try:
            stop = stops.engage(audit.Actor.command("emergency_stop"), scope, value, reason)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(
            f"stop {stop.pk} engaged for {stop.scope_label} in {stop.engage_ms or 0:.0f} ms: "
            f"{len(stop.aborted_ids)} run(s) aborted, {len(stop.parked_ids)} parked"
        )
        for step in stop.steps:
            if step.get("note"):
                self.stdout.write(f"  {step['step']}: {step['note']}")
