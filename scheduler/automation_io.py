"""Automation as code: ``manage.py automation export`` / ``import`` over the registered sections.

The document is TOML (read with the standard library's ``tomllib``, written with ``tomli-w``):
every table is an array ``[[automation.<key>]]`` whose entries carry a ``name``; the sections of
:mod:`scheduler.automation` own the keys (several may share one: the job section and the
schedule section both own fields of ``[[automation.schedule.jobs]]``).

Import, all or nothing:

1. parse; refuse anything outside ``automation``, a key no section owns, an entry that is not a
   table, a missing or repeated ``name``, a field no section of the key owns (each error names
   its place: ``automation.schedule.jobs[2].cron: …``);
2. every section's ``plan`` (validation only, no writes) with one :class:`PlanContext`;
3. any error: nothing is written (:class:`ConfigError` with every message);
4. unless a dry run: every section's ``apply`` in ``order`` inside one transaction, one audit
   row (``automation.import``).

Export: each section's entries merged by ``name`` within its key (first section's fields first),
secrets as ``${ENV_VAR}`` references (the sections never return a value).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import tomli_w
from django.db import transaction

from . import audit
from .automation import Change, ConfigError, ConfigSection, PlanContext, config_sections
from .models import Job

HEADER = (
    "# AgentFlow automation: jobs, their schedules, webhook handlers and file watches.\n"
    "# manage.py automation import FILE [--dry-run] [--prune]; secrets are ${ENV_VAR} references.\n"
)


def _sections_by_key() -> dict[str, list[ConfigSection]]:
    by_key: dict[str, list[ConfigSection]] = {}
    for section in config_sections():
        by_key.setdefault(section.key, []).append(section)
    return by_key


# --- export --------------------------------------------------------------------------------------


def export_document() -> dict[str, Any]:
    """``{"automation": {"schedule": {"jobs": [...]}, ...}}``: every section's entries, merged by
    name within a key, in the order of the key's first section."""
    root: dict[str, Any] = {}
    for key, sections in _sections_by_key().items():
        merged: dict[str, dict[str, Any]] = {}
        for section in sections:
            for entry in section.export():
                name = str(entry.get("name", ""))
                target = merged.setdefault(name, {"name": name})
                target.update({k: v for k, v in entry.items() if v is not None})
        if not merged:
            continue
        node = root
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = list(merged.values())
    return {"automation": root} if root else {}


def export_toml() -> str:
    return HEADER + "\n" + tomli_w.dumps(export_document(), multiline_strings=True)


# --- import --------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    changes: list[Change] = field(default_factory=list)
    dry_run: bool = False

    def lines(self) -> list[str]:
        """What the import did (or would do), one line a change, creates first."""
        order = {"create": 0, "change": 1, "remove": 2}
        verb = {"create": "create", "change": "change", "remove": "remove"}
        out = []
        for c in sorted(self.changes, key=lambda c: (order[c.action], c.kind, c.name)):
            out.append(f"{verb[c.action]:<7} {c.kind} {c.name}" + (f": {c.detail}" if c.detail else ""))
        return out

    def summary(self) -> str:
        counts = {a: sum(1 for c in self.changes if c.action == a) for a in ("create", "change", "remove")}
        head = "dry run, nothing written: would " if self.dry_run else ""
        if not self.changes:
            return ("dry run: " if self.dry_run else "") + "nothing to change"
        words = {"create": "created", "change": "changed", "remove": "removed"}
        if self.dry_run:
            words = {"create": "create", "change": "change", "remove": "remove"}
        return head + ", ".join(f"{words[a]} {n}" for a, n in counts.items() if n)


def parse(text: str) -> dict[str, list[Mapping[str, Any]]]:
    """The document's entries per key, checked for shape (:class:`ConfigError` naming every
    problem). Only the keys of registered sections are accepted."""
    found, errors = _parse(text)
    if errors:
        raise ConfigError(errors)
    return found


def _parse(text: str) -> tuple[dict[str, list[Mapping[str, Any]]], list[str]]:
    """The entries that have the right shape, and the problems found (the sections still plan
    the well-formed entries, so one pass reports every error)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"]) from None
    by_key = _sections_by_key()
    errors: list[str] = []
    for top in document:
        if top != "automation":
            errors.append(f"{top}: unknown key (the document's tables are under [automation])")
    root = document.get("automation", {})
    if not isinstance(root, dict):
        raise ConfigError([*errors, "automation: must be a table"])
    found: dict[str, list[Mapping[str, Any]]] = {}
    _walk(root, "", by_key, found, errors)
    for key in list(found):
        if not _check_entries(key, found[key], by_key[key], errors):
            del found[key]  # its entries' positions are unsure: their errors are enough
    return found, errors


def _walk(
    node: Mapping[str, Any],
    prefix: str,
    by_key: Mapping[str, list[ConfigSection]],
    found: dict[str, list[Mapping[str, Any]]],
    errors: list[str],
) -> None:
    for name, value in node.items():
        key = f"{prefix}{name}"
        if key in by_key:
            if not isinstance(value, list):
                errors.append(f"automation.{key}: must be an array of tables ([[automation.{key}]])")
                continue
            found[key] = value
        elif isinstance(value, dict) and any(k.startswith(f"{key}.") for k in by_key):
            _walk(value, f"{key}.", by_key, found, errors)
        else:
            known = ", ".join(f"automation.{k}" for k in sorted(by_key)) or "none registered"
            errors.append(f"automation.{key}: unknown key (known: {known})")


def _check_entries(
    key: str, entries: Sequence[Any], sections: Sequence[ConfigSection], errors: list[str]
) -> bool:
    """Report what is wrong with the key's entries; False when one is not a table with a unique
    name (the sections then see none of them)."""
    owned: set[str] | None = {"name"}
    for section in sections:
        if section.fields is None:
            owned = None
            break
        assert owned is not None
        owned |= section.fields
    seen: dict[str, int] = {}
    good = True
    for index, entry in enumerate(entries):
        where = f"automation.{key}[{index}]"
        if not isinstance(entry, dict):
            errors.append(f"{where}: must be a table")
            good = False
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            errors.append(f"{where}.name: required (a non-empty string)")
            good = False
        elif name in seen:
            errors.append(f"{where}.name: {name!r} is listed twice (also at [{seen[name]}])")
            good = False
        else:
            seen[name] = index
        if owned is not None:
            for field_name in entry:
                if field_name not in owned:
                    errors.append(f"{where}.{field_name}: unknown key (known: {', '.join(sorted(owned))})")
    return good


def plan(
    entries: Mapping[str, Sequence[Mapping[str, Any]]], *, prune: bool = False, errors: Sequence[str] = ()
) -> tuple[PlanContext, list[Change]]:
    """Run every section's ``plan``; :class:`ConfigError` with all messages (``errors``: the
    parse's, first) when any failed."""
    ctx = PlanContext(prune=prune, errors=list(errors))
    declared = {str(e.get("name")) for e in entries.get("schedule.jobs", [])}
    existing = set(Job.objects.filter(system=False).values_list("name", flat=True))
    system = set(Job.objects.filter(system=True).values_list("name", flat=True))
    ctx.job_names = declared | system | (set() if prune else existing)
    changes: list[Change] = []
    for section in config_sections():
        try:
            changes += section.plan(entries.get(section.key, []), ctx)
        except ConfigError as exc:
            ctx.errors += exc.messages
    if ctx.errors:
        raise ConfigError(ctx.errors)
    return ctx, changes


def import_text(
    text: str,
    *,
    dry_run: bool = False,
    prune: bool = False,
    actor: audit.Actor | None = None,
    source: str = "automation.toml",
) -> ImportResult:
    """Validate the whole document, then (unless ``dry_run``) apply every section in one
    transaction. :class:`ConfigError` when anything is wrong: nothing was written."""
    entries, errors = _parse(text)
    ctx, changes = plan(entries, prune=prune, errors=errors)
    result = ImportResult(changes=changes, dry_run=dry_run)
    if dry_run or not changes:
        return result
    actor = actor or audit.Actor.command("automation import")
    target = audit.Target("automation", source[:255], source[:300])
    with audit.control("automation.import", actor, target, needs="administer") as ctl:
        with transaction.atomic():
            for section in config_sections():
                section.apply(entries.get(section.key, []), ctx)
            if ctx.errors:  # an apply found what its plan could not (a race): undo it all
                raise ConfigError(ctx.errors)
        ctl.note(result.summary())
    return result
