"""Automation's registries: what each trigger kind adds to ``manage.py automation status`` (and the
Automation page) and to automation as code (``manage.py automation export`` / ``import``).

The engine knows no trigger kind by name (ARCHITECTURE.md rule 6): schedules, webhooks and file
watches each register a :class:`StatusSection` and a :class:`ConfigSection` in their app's
``ready()``; the command and the page only walk the registries.

Automation as code reads one TOML document whose tables are ``[[automation.<key>]]`` arrays, e.g.
``[[automation.schedule.jobs]]``. Several sections may own fields of the same key's entries (the job
section owns a job's name, agent and prompt; the schedule section owns ``cron`` / ``every`` /
``at`` / ``timezone`` of the same entries): export merges their dicts by ``name``.

Import is all or nothing: every section's ``plan`` runs first (validation only, no writes; errors
collected as ``"automation.<key>[<index>].<field>: <what is wrong>"``); only when none failed are
the ``apply`` calls made, in ``order``, inside one transaction. ``plan`` returns the
:class:`Change` list the dry run prints.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Change:
    """One thing an import would do: create, change or remove ``kind`` ``name`` (``detail``: what
    differs, e.g. ``cron "0 9 * * *" → "0 8 * * *"``)."""

    action: Literal["create", "change", "remove"]
    kind: str
    name: str
    detail: str = ""


class ConfigError(Exception):
    """The document cannot be imported; ``messages`` name each entry and field that is wrong."""

    def __init__(self, messages: Sequence[str]) -> None:
        self.messages = list(messages)
        super().__init__("; ".join(self.messages))


@dataclass
class PlanContext:
    """What every section of one import sees. ``job_names``: the jobs that exist after the import
    (existing ones plus those the document declares), so a webhook handler may name a job declared
    in the same file. ``prune``: remove what the document does not list (else leave it)."""

    prune: bool = False
    job_names: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    def error(self, key: str, index: int | None, name: str, message: str) -> None:
        where = f"automation.{key}" + (f"[{index}]" if index is not None else "")
        self.errors.append(f"{where}.{name}: {message}" if name else f"{where}: {message}")


@dataclass(frozen=True)
class ConfigSection:
    """``key``: the array under ``automation`` (``"schedule.jobs"``, ``"webhook.handlers"``,
    ``"watch.watchers"``). ``export()`` returns its entries (secrets as ``${ENV_VAR}`` references,
    never values). ``plan(entries, ctx)`` validates (report with ``ctx.error``) and returns the
    changes; ``apply(entries, ctx)`` writes them.

    ``fields``: the entry fields this section owns. The import refuses a field that no section of
    the key owns ("unknown key"), so every section that shares a key should name its fields; a
    key with a section that names none is not checked for unknown fields."""

    name: str
    key: str
    order: int
    export: Callable[[], list[dict[str, Any]]]
    plan: Callable[[Sequence[Mapping[str, Any]], PlanContext], list[Change]]
    apply: Callable[[Sequence[Mapping[str, Any]], PlanContext], None]
    fields: frozenset[str] | None = None


@dataclass(frozen=True)
class StatusSection:
    """A table of ``automation status``: ``columns`` are (row key, heading) pairs; ``rows()``
    returns dicts of plain strings (already formatted: "in 4 min", "2026-12-02 09:00 CET")."""

    key: str
    title: str
    order: int
    columns: Sequence[tuple[str, str]]
    rows: Callable[[], list[dict[str, str]]]
    empty: str = "None."


_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def env_ref(name: str) -> str:
    """The form a secret is exported in: ``${NAME}`` (never its value)."""
    return "${" + name + "}"


def expand_env(value: str) -> str:
    """A secret as the file gives it: ``${NAME}`` → the environment variable's value (``ValueError``
    naming the variable when it is unset or empty); anything else is refused, so a secret's value
    is never written into the file."""
    match = _ENV_REF.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError('a secret is given as "${ENV_VAR}" (the environment variable that holds it)')
    found = os.environ.get(match.group(1), "")
    if not found:
        raise ValueError(f"the environment variable {match.group(1)} is not set")
    return found


_CONFIG: dict[str, ConfigSection] = {}
_STATUS: dict[str, StatusSection] = {}


def register_config(section: ConfigSection) -> None:
    _CONFIG[section.name] = section


def register_status(section: StatusSection) -> None:
    _STATUS[section.key] = section


def config_sections() -> list[ConfigSection]:
    return sorted(_CONFIG.values(), key=lambda s: (s.order, s.name))


def status_sections() -> list[StatusSection]:
    return sorted(_STATUS.values(), key=lambda s: (s.order, s.key))
