"""Queue one run: ``manage.py enqueue_run --job NAME`` or ``--kind KIND [--params JSON]``; or many
in one transaction: ``--from-file runs.json`` (a JSON list of objects: job or kind, params,
input, prompt, priority, timeout, run_after as ISO time, dedupe_key)."""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_datetime

from scheduler import actions, audit, ops
from scheduler.models import Priority, Run
from scheduler.runjson import run_json


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
        which.add_argument("--agent", help="an ad-hoc agent prompt: the agent's id (with --prompt)")
        which.add_argument(
            "--from-file", help="a JSON list of runs (job or kind, params, …), queued in one transaction"
        )
        parser.add_argument("--gateway", default=None, help="with --agent: the gateway's id or name")
        parser.add_argument("--json", action="store_true", help="print the run as the API's JSON")
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
        if options["from_file"]:
            self.from_file(options["from_file"], options["json"])
            return
        if options["agent"]:
            if actions.find_action(ops.AGENT_PROMPT) is None:
                raise CommandError(
                    f"the agent kind is not registered yet ({ops.AGENT_PROMPT}): use --job or --kind"
                )
            if not options["prompt"]:
                raise CommandError("--agent needs --prompt TEXT")
            options["kind"] = ops.AGENT_PROMPT
        try:
            params = json.loads(options["params"])
            input_ = json.loads(options["input"]) if options["input"] is not None else None
        except json.JSONDecodeError as exc:
            raise CommandError(f"--params / --input must be JSON: {exc}") from None
        if options["agent"]:
            params = {**params, "agent": options["agent"]}
            if options["gateway"]:
                params["gateway"] = options["gateway"]
        try:
            run, _ = ops.submit(
                audit.Actor.command("enqueue_run"),
                job=options["job"],
                kind=None if options["job"] else options["kind"],
                params=params,
                input=input_,
                prompt=options["prompt"],
                priority=options["priority"],
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.show(run, options["json"])
        if not options["wait"]:
            return
        deadline = time.monotonic() + options["timeout"]
        while not run.is_final:
            if time.monotonic() > deadline:
                raise CommandError(f"run {run.pk} is still {run.status} after {options['timeout']:.0f}s")
            time.sleep(0.2)
            run.refresh_from_db()
        self.show(run, options["json"])
        if run.result and not options["json"]:
            self.stdout.write(run.result)
        if run.status != Run.Status.SUCCEEDED:
            raise CommandError(f"run {run.pk} ended {run.status}")

    def from_file(self, path: str, as_json: bool) -> None:
        try:
            with open(path, encoding="utf-8") as handle:
                items = json.load(handle)
        except (OSError, ValueError) as exc:
            raise CommandError(f"--from-file {path}: {exc}") from None
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise CommandError(f"--from-file {path}: a JSON list of objects, one per run")
        for index, item in enumerate(items):
            if isinstance(item.get("run_after"), str):
                moment = parse_datetime(item["run_after"])
                if moment is None:
                    raise CommandError(f"item {index}: run_after must be an ISO 8601 time")
                item["run_after"] = moment
        try:
            results = ops.submit_many(audit.Actor.command("enqueue_run"), items)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        if as_json:
            self.stdout.write(json.dumps([run_json(run) for run, _ in results], indent=2))
            return
        for run, created in results:
            self.stdout.write(
                describe(run) + ("" if created else f" (existing: dedupe key {run.dedupe_key!r})")
            )

    def show(self, run: Run, as_json: bool) -> None:
        if as_json:
            self.stdout.write(json.dumps(run_json(run), indent=2))
        else:
            self.stdout.write(describe(run))
