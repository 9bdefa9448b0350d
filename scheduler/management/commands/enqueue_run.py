"""Queue one run: ``manage.py enqueue_run --job NAME`` or ``--kind KIND [--params JSON]``."""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from scheduler import actions, queue
from scheduler.models import Priority, Run


def describe(run: Run) -> str:
    parts = [f"run {run.pk}", run.job_name or run.kind, run.priority, run.status]
    if run.attempts:
        parts.append(f"{run.attempts} attempt(s)")
    if run.error_class:
        parts.append(f"{run.error_class}: {run.error}")
    return " · ".join(parts)


class Command(BaseCommand):
    help = "Queue a run of a job (or of an action kind, ad hoc); --wait prints its result."

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--job", help="the job's name")
        which.add_argument(
            "--kind",
            help=f"an action kind, ad hoc (registered: {', '.join(a.key for a in actions.actions())})",
        )
        which.add_argument("--agent", help="the agent kind (wired in the second wave)")
        parser.add_argument(
            "--params", default="{}", help="the action's parameters as JSON, e.g. '{\"sleep_ms\": 10}'"
        )
        parser.add_argument(
            "--input", default=None, help="the run's input as JSON (the prompt template's {{ input }})"
        )
        parser.add_argument("--prompt", default=None)
        parser.add_argument("--priority", choices=Priority.values)
        parser.add_argument(
            "--wait", action="store_true", help="wait until the run ends and print its result"
        )
        parser.add_argument(
            "--timeout", type=float, default=600, help="with --wait: give up after this many seconds"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["agent"]:
            if actions.find_action("agent_prompt") is None:
                raise CommandError("the agent kind is not registered yet: use --job or --kind")
            options["kind"] = "agent_prompt"
        try:
            params = json.loads(options["params"])
            input_ = json.loads(options["input"]) if options["input"] is not None else None
        except json.JSONDecodeError as exc:
            raise CommandError(f"--params / --input must be JSON: {exc}") from None
        if options["agent"]:
            params = {**params, "agent": options["agent"]}
        try:
            run = queue.enqueue(
                options["job"],
                kind=None if options["job"] else options["kind"],
                params=params,
                input=input_,
                prompt=options["prompt"],
                priority=options["priority"],
                trigger=Run.Trigger.USER,
                triggered_by="command enqueue_run",
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(describe(run))
        if not options["wait"]:
            return
        deadline = time.monotonic() + options["timeout"]
        while not run.is_final:
            if time.monotonic() > deadline:
                raise CommandError(f"run {run.pk} is still {run.status} after {options['timeout']:.0f}s")
            time.sleep(0.2)
            run.refresh_from_db()
        self.stdout.write(describe(run))
        if run.result:
            self.stdout.write(run.result)
        if run.status != Run.Status.SUCCEEDED:
            raise CommandError(f"run {run.pk} ended {run.status}")
