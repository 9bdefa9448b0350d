"""``manage.py run_flow FLOW.yaml --context '{…}' --tracer console`` (flows/README.md, "Running")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from flows import api, engine, spec, tracing
from flows.models import FlowRun


class Command(BaseCommand):
    help = "Run a flow to its end here and print its summary (the gateway listener completes agent runs)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("flow", help="A flow file (under AGENTFLOW_FLOWS_ROOTS) or a stored flow's name.")
        parser.add_argument("--context", default="{}", help="The context: JSON, or @file.json.")
        parser.add_argument("--tracer", choices=tracing.TRACERS, default="none")
        parser.add_argument(
            "--tracer-arg",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="A tracer argument, e.g. db_path=traces.db or exporter_endpoint=http://127.0.0.1:4317.",
        )
        parser.add_argument(
            "--preset", choices=sorted(spec.PRESETS), help="Policy preset (default: the flow's)."
        )
        parser.add_argument("--write", action="store_true", help="Let patch steps change files on disk.")
        parser.add_argument("--check", action="store_true", help="Only validate the flow and exit.")
        parser.add_argument("--json", action="store_true", help="Print the final context as JSON too.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            flow, _source, _path = spec.load(options["flow"])
        except spec.FlowError as exc:
            raise CommandError("the flow does not validate:\n  " + "\n  ".join(exc.problems)) from None
        if options["check"]:
            self.stdout.write(f"{flow.name}: {len(flow.steps)} steps, valid")
            return
        context = _context(options["context"])
        tracer_args = {}
        for item in options["tracer_arg"]:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise CommandError(f"--tracer-arg {item!r}: use NAME=VALUE")
            tracer_args[name] = value
        try:
            result = api.run(
                options["flow"],
                context,
                tracer=options["tracer"],
                tracer_args=tracer_args,
                preset=options["preset"],
                write=options["write"],
                triggered_by="manage.py run_flow",
            )
        except api.FlowRefused as exc:
            raise CommandError(str(exc)) from None
        finally:
            engine.close_tracers()  # every span written or exported before the summary
        self.stdout.write(result.report)
        if options["json"]:
            self.stdout.write(json.dumps(result.context, indent=2, ensure_ascii=False))
        line = f"flow {flow.name}: {result.status} in {result.seconds:.1f} s (run {result.run_id})"
        trace = FlowRun.objects.filter(run_id=result.run_id).values_list("trace_id", flat=True).first()
        if trace:
            db = tracing.sqlite_path(tracer_args.get("db_path"))
            where = f" in {db}" if options["tracer"] == "sqlite" else ""
            self.stdout.write(f"trace {trace}{where} (the waterfall: /runs/{result.run_id}/trace/)")
        if result.status != "succeeded":
            raise CommandError(f"{line}: {result.error}")
        self.stdout.write(self.style.SUCCESS(line))


def _context(value: str) -> dict[str, Any]:
    if value.startswith("@"):
        try:
            value = Path(value[1:]).read_text()
        except OSError as exc:
            raise CommandError(f"--context {value}: {exc.strerror}") from None
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise CommandError(f"--context is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CommandError("--context must be a JSON object")
    return data
