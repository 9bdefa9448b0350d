"""A job's result actions in automation as code: ``on_success`` / ``on_failure`` of the
``[[automation.schedule.jobs]]`` entries (the job section owns the job's other fields)::

    [[automation.schedule.jobs]]
    name = "morning_report"
    agent = "main"
    cron = "0 9 * * *"
    on_success = [{ channel = "reports" }]             # a notification channel, by name
    on_failure = [{ run_job = "report_failed" }, { channel = "ops", enabled = false }]

    [[automation.schedule.jobs]]
    name = "review_pr"
    agent = "main"
    on_success = [{ github_comment = true }]           # on the PR or issue that triggered the run

Each action is a table with exactly one of ``channel`` (an existing notification channel's name:
channels hold secrets, so they are set up on the Notifications page or in the admin, not here),
``run_job`` (a job that exists or is declared in the same file, not the job itself) or
``github_comment = true``; ``enabled = false`` keeps it but does nothing. An action is known by
its job, ``when`` and target, so a second import changes nothing; as for schedules, an action the
file does not list is left alone unless ``--prune`` (then it is removed). A job's actions run in
the order listed; they are exported in the order they were created.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import automation
from .models import Channel, Job
from .result_models import ResultAction

KEY = "schedule.jobs"
WHEN_FIELDS = {"on_success": ResultAction.When.SUCCESS, "on_failure": ResultAction.When.FAILURE}
ACTION_FIELDS = ("channel", "run_job", "github_comment", "enabled")
TARGETS = ("channel", "run_job", "github_comment")

# An action as the file names it: (when, kind, the channel's or the target job's name; "" for a
# comment). The rows are matched on it, so a rename in the admin reads as a remove plus a create.
Ident = tuple[str, str, str]


def _ident(action: ResultAction) -> Ident:
    if action.kind == ResultAction.Kind.CHANNEL:
        return (action.when, action.kind, action.channel.name if action.channel else "")
    if action.kind == ResultAction.Kind.RUN_JOB:
        return (action.when, action.kind, action.target_job.name if action.target_job else "")
    return (action.when, action.kind, "")


def _describe(ident: Ident) -> str:
    _, kind, target = ident
    if kind == ResultAction.Kind.CHANNEL:
        return f"channel {target}"
    if kind == ResultAction.Kind.RUN_JOB:
        return f"run job {target}"
    return "comment on the GitHub PR or issue"


def _label(job: str, when: str) -> str:
    return f"{job} on {when}"


# --- export --------------------------------------------------------------------------------------


def _exported(action: ResultAction) -> dict[str, Any] | None:
    if action.kind == ResultAction.Kind.CHANNEL:
        if action.channel is None:
            return None
        entry: dict[str, Any] = {"channel": action.channel.name}
    elif action.kind == ResultAction.Kind.RUN_JOB:
        if action.target_job is None:
            return None
        entry = {"run_job": action.target_job.name}
    else:
        entry = {"github_comment": True}
    if not action.enabled:
        entry["enabled"] = False
    return entry


def export() -> list[dict[str, Any]]:
    """One entry per job with result actions: ``{"name", "on_success"?, "on_failure"?}``."""
    by_job: dict[str, dict[str, Any]] = {}
    actions = (
        ResultAction.objects.filter(job__system=False)
        .select_related("job", "channel", "target_job")
        .order_by("job__name", "id")
    )
    for action in actions:
        shown = _exported(action)
        if shown is None:
            continue
        field = "on_success" if action.when == ResultAction.When.SUCCESS else "on_failure"
        entry = by_job.setdefault(action.job.name, {"name": action.job.name})
        entry.setdefault(field, []).append(shown)
    return list(by_job.values())


# --- import --------------------------------------------------------------------------------------


def _wanted(
    entry: Mapping[str, Any], index: int, ctx: automation.PlanContext, channels: set[str]
) -> list[tuple[Ident, bool]] | None:
    """The entry's actions as (ident, enabled) in file order, or None when one is wrong (each
    problem reported on ``ctx``, named down to the action's field)."""
    before = len(ctx.errors)
    job = str(entry.get("name") or "")
    wanted: list[tuple[Ident, bool]] = []
    for field, when in WHEN_FIELDS.items():
        listed = entry.get(field, [])
        if not isinstance(listed, list):
            ctx.error(KEY, index, field, 'a list of actions, e.g. [{ channel = "reports" }]')
            continue
        seen: dict[Ident, int] = {}
        for n, action in enumerate(listed):
            where = f"{field}[{n}]"
            if not isinstance(action, dict):
                ctx.error(KEY, index, where, 'an action is a table, e.g. { run_job = "handler" }')
                continue
            for unknown in sorted(set(action) - set(ACTION_FIELDS)):
                ctx.error(
                    KEY, index, f"{where}.{unknown}", f"unknown key (known: {', '.join(ACTION_FIELDS)})"
                )
            targets = [t for t in TARGETS if t in action]
            if len(targets) != 1:
                ctx.error(
                    KEY, index, where,
                    'exactly one of channel = "<channel>", run_job = "<job>" or github_comment = true'
                    + (f" (this one has {' and '.join(targets)})" if targets else ""),
                )  # fmt: skip
                continue
            (target,) = targets
            value = action[target]
            enabled = action.get("enabled", True)
            if not isinstance(enabled, bool):
                ctx.error(KEY, index, f"{where}.enabled", "true or false")
            ident: Ident
            if target == "channel":
                if not isinstance(value, str) or value not in channels:
                    known = ", ".join(sorted(channels)) or "none is set up yet"
                    ctx.error(
                        KEY, index, f"{where}.channel",
                        f"no notification channel named {value!r} (channels are set up on the "
                        f"Notifications page or in the admin; existing: {known})",
                    )  # fmt: skip
                    continue
                ident = (when, ResultAction.Kind.CHANNEL, value)
            elif target == "run_job":
                if not isinstance(value, str) or value not in ctx.job_names:
                    ctx.error(
                        KEY, index, f"{where}.run_job",
                        f"no job named {value!r} (neither existing nor declared in the file)",
                    )  # fmt: skip
                    continue
                if value == job:
                    ctx.error(KEY, index, f"{where}.run_job", "a job cannot run itself with its own result")
                    continue
                ident = (when, ResultAction.Kind.RUN_JOB, value)
            else:
                if value is not True:
                    ctx.error(
                        KEY,
                        index,
                        f"{where}.github_comment",
                        "github_comment = true (or leave the action out)",
                    )
                    continue
                ident = (when, ResultAction.Kind.GITHUB_COMMENT, "")
            if ident in seen:
                ctx.error(KEY, index, where, f"the same action as {field}[{seen[ident]}]: list it once")
                continue
            seen[ident] = n
            wanted.append((ident, enabled if isinstance(enabled, bool) else True))
    return None if len(ctx.errors) > before else wanted


def _existing() -> dict[str, list[ResultAction]]:
    by_job: dict[str, list[ResultAction]] = {}
    for action in ResultAction.objects.select_related("job", "channel", "target_job").order_by("id"):
        by_job.setdefault(action.job.name, []).append(action)
    return by_job


def _match(
    wanted: Sequence[tuple[Ident, bool]], current: Sequence[ResultAction]
) -> tuple[list[tuple[Ident, bool, ResultAction | None]], list[ResultAction]]:
    """Each wanted action with the row it is (None: to create), and the rows the file does not list."""
    left = list(current)
    matched: list[tuple[Ident, bool, ResultAction | None]] = []
    for ident, enabled in wanted:
        row = next((a for a in left if _ident(a) == ident), None)
        if row is not None:
            left.remove(row)
        matched.append((ident, enabled, row))
    return matched, left


def _plan_all(
    entries: Sequence[Mapping[str, Any]], ctx: automation.PlanContext
) -> list[tuple[str, list[tuple[Ident, bool, ResultAction | None]], list[ResultAction]]]:
    channels = set(Channel.objects.values_list("name", flat=True))
    existing = _existing()
    out = []
    for index, entry in enumerate(entries):
        wanted = _wanted(entry, index, ctx, channels)
        name = str(entry.get("name") or "")
        if wanted is None or not name:
            continue
        matched, unlisted = _match(wanted, existing.get(name, []))
        out.append((name, matched, unlisted if ctx.prune else []))
    return out


def plan(entries: Sequence[Mapping[str, Any]], ctx: automation.PlanContext) -> list[automation.Change]:
    changes: list[automation.Change] = []
    for job, matched, removed in _plan_all(entries, ctx):
        for ident, enabled, row in matched:
            label = _label(job, ident[0])
            if row is None:
                detail = _describe(ident) + ("" if enabled else " (disabled)")
                changes.append(automation.Change("create", "result action", label, detail))
            elif row.enabled != enabled:
                detail = f"{_describe(ident)}: enabled {row.enabled!r} → {enabled!r}"
                changes.append(automation.Change("change", "result action", label, detail))
        for row in removed:
            label = _label(job, row.when)
            changes.append(automation.Change("remove", "result action", label, _describe(_ident(row))))
    return changes


def apply(entries: Sequence[Mapping[str, Any]], ctx: automation.PlanContext) -> None:
    """After the job section (order): every job and target job of the file exists."""
    planned = _plan_all(entries, ctx)
    if ctx.errors:  # what plan refused, or a channel removed since: nothing more is written
        raise automation.ConfigError(ctx.errors)
    jobs = {j.name: j for j in Job.objects.filter(name__in={job for job, _, _ in planned})}
    for job_name, matched, removed in planned:
        job = jobs[job_name]
        for (when, kind, target), enabled, row in matched:
            if row is not None:
                if row.enabled != enabled:
                    row.enabled = enabled
                    row.save(update_fields=["enabled"])
                continue
            action = ResultAction(job=job, when=when, kind=kind, enabled=enabled)
            if kind == ResultAction.Kind.CHANNEL:
                action.channel = Channel.objects.get(name=target)
            elif kind == ResultAction.Kind.RUN_JOB:
                action.target_job = Job.objects.get(name=target)
            action.full_clean()
            action.save()
        ResultAction.objects.filter(pk__in=[r.pk for r in removed]).delete()


SECTION = automation.ConfigSection(
    name="result-actions",
    key=KEY,
    order=40,
    export=export,
    plan=plan,
    apply=apply,
    fields=frozenset(WHEN_FIELDS),
)


def register() -> None:
    automation.register_config(SECTION)
