"""The file watch's registrations (``register()``, called from ``SchedulerConfig.ready()``): its
section of ``manage.py automation status``, its ``[[automation.watch.watchers]]`` config section
(export / plan / apply), the ``watch-directory`` alert condition and the move after success.

An entry of the config file::

    [[automation.watch.watchers]]
    name = "pdfs"
    directory = "~/Downloads"        # ~ expanded; must lie under AGENTFLOW_WATCH_ROOTS; a relative
                                     # path is taken under the first root ("pdfs": <root>/pdfs)
    pattern = "*.pdf"                # or a list; "**" spans directories; none: every file
    events = ["created"]             # created | modified | deleted (default ["created"])
    job = "process_pdf"              # a job that exists or is declared in the same file
    recursive = false                # default false
    debounce = "1s"                  # "500ms", "2s" or a number of seconds (default 1 s)
    move_to = "~/Downloads/done"     # optional: after a run succeeds, move its files there
    enabled = true
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from django.conf import settings

from scheduler import alert_rules, automation
from scheduler.models import AlertRule, Job

from . import watch as w
from .watch_models import Watch

KEY = "watch.watchers"


def _under_first_root(directory: str) -> str:
    """A relative directory of the file lies under the first watch root (the example file's
    ``directory = "pdfs"`` works on any install); ``~`` and absolute paths are kept."""
    if not directory or Path(directory).expanduser().is_absolute() or not settings.AGENTFLOW_WATCH_ROOTS:
        return directory
    return str(Path(settings.AGENTFLOW_WATCH_ROOTS[0]) / directory)


FIELDS = ("name", "directory", "pattern", "events", "job", "recursive", "debounce", "move_to", "enabled")
_DEBOUNCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$")


# --- status --------------------------------------------------------------------------------------


def status_rows() -> list[dict[str, str]]:
    rows = []
    for watch in Watch.objects.select_related("job").order_by("name"):
        rows.append(
            {
                "name": watch.name,
                "directory": watch.directory,
                "patterns": ", ".join(watch.patterns) or "(every file)",
                "events": ", ".join(watch.events),
                "job": watch.job.name,
                "state": watch.get_state_display()
                + (f": {watch.state_detail}" if watch.state_detail else ""),
                "last_event": watch.last_event_at.strftime("%Y-%m-%d %H:%M:%S %Z")
                if watch.last_event_at
                else "never",
            }
        )
    return rows


# --- automation as code --------------------------------------------------------------------------


def _debounce_text(ms: int) -> str:
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def export() -> list[dict[str, Any]]:
    out = []
    for watch in Watch.objects.select_related("job").order_by("name"):
        entry: dict[str, Any] = {
            "name": watch.name,
            "directory": watch.directory,
            "pattern": watch.patterns[0] if len(watch.patterns) == 1 else list(watch.patterns),
            "events": list(watch.events),
            "job": watch.job.name,
            "recursive": watch.recursive,
            "debounce": _debounce_text(watch.debounce_ms),
            "enabled": watch.enabled,
        }
        if watch.move_to:
            entry["move_to"] = watch.move_to
        out.append(entry)
    return out


def _parse_debounce(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, (int, float)):
        return int(round(value * 1000))
    match = _DEBOUNCE.match(str(value))
    if not match:
        raise ValueError
    number = float(match.group(1))
    return int(round(number if match.group(2) == "ms" else number * 1000))


def _fields(entry: Mapping[str, Any], index: int, ctx: automation.PlanContext) -> dict[str, Any] | None:
    """The entry as Watch field values (None: it is wrong; ``ctx.error`` says why)."""
    before = len(ctx.errors)
    name = entry.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[-a-zA-Z0-9_]{1,100}", name or ""):
        ctx.error(KEY, index, "name", "a name of letters, digits, - and _ is required")
    directory = entry.get("directory")
    if not isinstance(directory, str) or not directory.strip():
        ctx.error(KEY, index, "directory", "a directory is required")
        directory = ""
    pattern = entry.get("pattern", [])
    patterns = [pattern] if isinstance(pattern, str) else pattern
    events = entry.get("events", ["created"])
    events = [events] if isinstance(events, str) else events
    job = entry.get("job")
    if not isinstance(job, str) or job not in ctx.job_names:
        ctx.error(KEY, index, "job", f"{job!r} is not a job (declare it in [[automation.schedule.jobs]])")
    try:
        debounce_ms = _parse_debounce(entry.get("debounce", 1))
    except (ValueError, TypeError):
        ctx.error(
            KEY, index, "debounce", f'{entry.get("debounce")!r}: write "500ms", "2s" or a number of seconds'
        )
        debounce_ms = 1000
    for flag in ("recursive", "enabled"):
        if flag in entry and not isinstance(entry[flag], bool):
            ctx.error(KEY, index, flag, "true or false")
    move_to = entry.get("move_to", "")
    if not isinstance(move_to, str):
        ctx.error(KEY, index, "move_to", "a folder path")
        move_to = ""
    values = {
        "name": name,
        "directory": _under_first_root(directory.strip()),
        "patterns": patterns,
        "events": events,
        "recursive": bool(entry.get("recursive", False)),
        "debounce_ms": debounce_ms,
        "move_to": move_to.strip(),
        "enabled": bool(entry.get("enabled", True)),
    }
    for field_name, messages in w.validate(Watch(**values)).items():
        label = {"patterns": "pattern", "debounce_ms": "debounce"}.get(field_name, field_name)
        for message in messages:
            ctx.error(KEY, index, label, message)
    values["job"] = job
    return values if len(ctx.errors) == before else None


def _current(watch: Watch) -> dict[str, Any]:
    return {
        "directory": watch.directory,
        "patterns": list(watch.patterns),
        "events": list(watch.events),
        "recursive": watch.recursive,
        "debounce_ms": watch.debounce_ms,
        "move_to": watch.move_to,
        "enabled": watch.enabled,
        "job": watch.job.name,
    }


def plan(entries: Sequence[Mapping[str, Any]], ctx: automation.PlanContext) -> list[automation.Change]:
    changes: list[automation.Change] = []
    existing = {w_.name: w_ for w_ in Watch.objects.select_related("job")}
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            ctx.error(KEY, index, "", "each watcher is a table")
            continue
        values = _fields(entry, index, ctx)
        if values is None:
            continue
        name = values.pop("name")
        if name in seen:
            ctx.error(KEY, index, "name", f"{name!r} is declared twice")
            continue
        seen.add(name)
        watch = existing.get(name)
        if watch is None:
            changes.append(
                automation.Change("create", "watch", name, f"{values['directory']} → job {values['job']}")
            )
            continue
        now = _current(watch)
        diff = [f"{k} {now[k]!r} → {v!r}" for k, v in values.items() if now[k] != v]
        if diff:
            changes.append(automation.Change("change", "watch", name, "; ".join(diff)))
    if ctx.prune:
        changes += [automation.Change("remove", "watch", n) for n in sorted(set(existing) - seen)]
    return changes


def apply(entries: Sequence[Mapping[str, Any]], ctx: automation.PlanContext) -> None:
    names = []
    for index, entry in enumerate(entries):
        values = _fields(entry, index, ctx)
        if values is None:  # plan refused it first; apply is only called when plan passed
            continue
        name = values.pop("name")
        values["job"] = Job.objects.get(name=values["job"])
        names.append(name)
        watch = Watch.objects.filter(name=name).first() or Watch(name=name)
        for key, value in values.items():
            setattr(watch, key, value)
        watch.save()
    if ctx.prune:
        Watch.objects.exclude(name__in=names).delete()


# --- the alert condition -------------------------------------------------------------------------


def watch_directory(rule: AlertRule, ctx: alert_rules.Context) -> Iterable[alert_rules.Finding]:
    """An enabled watch whose directory is missing, unreadable or outside the roots."""
    return [
        alert_rules.Finding(
            watch.name, f"file watch {watch.name}: {watch.state_detail or watch.get_state_display()}"
        )
        for watch in Watch.objects.filter(enabled=True, state__in=Watch.PROBLEMS)
    ]


def register() -> None:
    from scheduler import signals

    automation.register_status(
        automation.StatusSection(
            key="watches",
            title="File watches",
            order=30,
            columns=(
                ("name", "Name"),
                ("directory", "Directory"),
                ("patterns", "Patterns"),
                ("events", "Events"),
                ("job", "Job"),
                ("state", "State"),
                ("last_event", "Last event"),
            ),
            rows=status_rows,
            empty="No file watches.",
        )
    )
    automation.register_config(
        automation.ConfigSection(
            name="watch",
            key=KEY,
            order=30,
            export=export,
            plan=plan,
            apply=apply,
            fields=frozenset(FIELDS),  # the import refuses any other key of a watcher
        )
    )
    alert_rules.register_condition(
        alert_rules.Condition(
            w.ALERT_RULE,
            "A file watch's directory is missing or unreadable",
            "",
            watch_directory,
            level=AlertRule.Level.WARNING,
            cooldown_seconds=60,
            doc="the watcher records each watch's directory state; resolved when it is readable again",
        )
    )
    signals.run_finished.connect(w.on_run_finished, dispatch_uid="scheduler-watch-move")
