"""What the Flows pages show: the stored flow definitions with their last run, and recent flow
runs with the step each is in and how long it has taken (the trace page is one link away)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Count, Max, QuerySet

from flows import spec
from flows.models import Flow, FlowRun

RECENT_RUNS = 50
MAX_FILES = 100  # flow files listed from AGENTFLOW_FLOWS_ROOTS
MAX_FILE_BYTES = 256 * 1024


@dataclass
class FlowRow:
    flow: Flow
    steps: int | None  # None: the stored YAML no longer validates
    problem: str
    runs: int
    last_run: FlowRun | None


def _parsed(flow: Flow) -> tuple[spec.FlowSpec | None, str]:
    try:
        return spec.parse(flow.source, origin=flow.name), ""
    except spec.FlowError as exc:
        return None, str(exc)
    except Exception as exc:  # YAML that does not even load is the flow's problem, not the page's
        return None, f"{type(exc).__name__}: {exc}"


def flow_rows() -> list[FlowRow]:
    flows = list(Flow.objects.order_by("name"))
    names = [f.name for f in flows]
    counts = dict(
        FlowRun.objects.filter(flow_name__in=names)
        .values("flow_name")
        .annotate(n=Count("id"))
        .values_list("flow_name", "n")
    )
    last_ids = (
        FlowRun.objects.filter(flow_name__in=names)
        .values("flow_name")
        .annotate(last=Max("id"))
        .values("last")
    )
    last = {fr.flow_name: fr for fr in FlowRun.objects.filter(id__in=last_ids).select_related("run")}
    rows = []
    for f in flows:
        parsed, problem = _parsed(f)
        rows.append(
            FlowRow(
                flow=f,
                steps=len(parsed.steps) if parsed else None,
                problem=problem,
                runs=counts.get(f.name, 0),
                last_run=last.get(f.name),
            )
        )
    return rows


@dataclass
class FlowFile:
    path: str  # as run_flow and a flow job take it: relative to the project when under it
    name: str
    description: str
    steps: int | None
    problem: str
    runs: int
    last_run: FlowRun | None


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(settings.BASE_DIR))
    except ValueError:
        return str(path)


def flow_files() -> list[FlowFile]:
    """The YAML files under the flow roots (at most ``MAX_FILES``), each validated, with its runs."""
    found: list[Path] = []
    for root in settings.AGENTFLOW_FLOWS_ROOTS:
        base = Path(root)
        if not base.is_dir():
            continue
        for pattern in ("*.yaml", "*.yml"):
            found.extend(p for p in sorted(base.rglob(pattern)) if p.is_file())
    files: list[FlowFile] = []
    for path in list(dict.fromkeys(found))[:MAX_FILES]:
        shown = _shown(path)
        try:
            source = path.read_text() if path.stat().st_size <= MAX_FILE_BYTES else ""
            parsed = spec.parse(source, origin=shown) if source else None
            problem = "" if parsed else f"over {MAX_FILE_BYTES // 1024} KB"
        except spec.FlowError as exc:
            parsed, problem = None, str(exc)
        except (OSError, UnicodeDecodeError) as exc:
            parsed, problem = None, f"unreadable: {exc}"
        files.append(
            FlowFile(shown, parsed.name if parsed else "", parsed.description if parsed else "",
                     len(parsed.steps) if parsed else None, problem, 0, None)
        )  # fmt: skip
    names = [f.name for f in files if f.name]
    counts = dict(
        FlowRun.objects.filter(flow_name__in=names).values("flow_name").annotate(n=Count("id"))
        .values_list("flow_name", "n")
    )  # fmt: skip
    last_ids = FlowRun.objects.filter(flow_name__in=names).values("flow_name").annotate(last=Max("id"))
    last = {fr.flow_name: fr for fr in FlowRun.objects.filter(id__in=last_ids.values("last"))}
    for f in files:
        f.runs, f.last_run = counts.get(f.name, 0), last.get(f.name)
    return files


def recent_runs(flow_name: str = "", limit: int = RECENT_RUNS) -> QuerySet[FlowRun]:
    qs = FlowRun.objects.select_related("run").order_by("-id")
    if flow_name:
        qs = qs.filter(flow_name=flow_name)
    return qs[:limit]


def flow_detail(flow: Flow) -> dict[str, Any]:
    parsed, problem = _parsed(flow)
    steps = []
    if parsed is not None:
        for step in parsed.steps:
            steps.append({"id": step.id, "type": step.type, "next": list(dict.fromkeys(parsed.edges(step)))})
    return {"steps": steps, "problem": problem, "preset": parsed.preset if parsed else ""}
