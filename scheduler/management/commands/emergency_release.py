"""``manage.py emergency_release (--id N | --scope S [--value V] | --all) --reason TEXT`` and then
``--requeue all|ID,ID`` or ``--cancel all|ID,ID`` for the runs released stops hold; with
``--and-requeue`` the release requeues what the stops hold at once."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from scheduler import audit, stops
from scheduler.models import EmergencyStop


def _runs(text: str) -> str | list[int]:
    if text == "all":
        return "all"
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CommandError(f"runs must be 'all' or ids separated by commas, not {text!r}") from None


class Command(BaseCommand):
    help = (
        "Release an emergency stop (nothing is replayed), or requeue / cancel the runs released stops hold."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--id", type=int, help="the stop's id")
        parser.add_argument("--scope", choices=EmergencyStop.Scope.values)
        parser.add_argument("--value", default="")
        parser.add_argument("--all", action="store_true", help="every engaged stop")
        parser.add_argument("--reason", default="")
        parser.add_argument("--requeue", metavar="RUNS", help="'all' or run ids: queue the held runs again")
        parser.add_argument("--cancel", metavar="RUNS", help="'all' or run ids: cancel the held runs")
        parser.add_argument(
            "--and-requeue", action="store_true", help="release, and requeue every run the stops hold at once"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        actor = audit.Actor.command("emergency_release")
        reason = options["reason"]
        try:
            if options["requeue"] or options["cancel"]:
                cancel = bool(options["cancel"])
                out = stops.requeue(
                    actor, _runs(options["cancel"] or options["requeue"]), cancel=cancel, reason=reason
                )
                self.stdout.write(f"{out.cancelled} cancelled" if cancel else f"{out.requeued} requeued")
                for line in out.skipped:
                    self.stdout.write(f"  skipped {line}")
                return
            if not reason.strip():
                raise CommandError("--reason is required: say why it is safe to release")
            which: dict[str, Any]
            if options["id"] is not None:
                which = {"stop_id": options["id"]}
            elif options["all"] or options["scope"] in (None, "global") and not options["value"]:
                which = {"scope": "all" if options["all"] else "global"}
            else:
                which = {"scope": options["scope"], "value": options["value"]}
            released, out = stops.release_and_requeue(
                actor, reason=reason, then_requeue=options["and_requeue"], **which
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        if options["and_requeue"]:
            for stop in released:
                self.stdout.write(f"stop {stop.pk} ({stop.scope_label}) released")
            self.stdout.write(f"{out.requeued} requeued")
            for line in out.skipped:
                self.stdout.write(f"  skipped {line}")
            return
        for stop in released:
            held = stops.held_runs(stop).count()
            self.stdout.write(
                f"stop {stop.pk} ({stop.scope_label}) released; {held} run(s) wait: "
                "--requeue all or --cancel all (or ids) to decide"
            )
