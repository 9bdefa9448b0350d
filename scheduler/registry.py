"""What the engine can run, filled by the apps above it in ``AppConfig.ready()``.

The engine knows batches by id and never what they do (ARCHITECTURE.md rule 6): an app
registers a :class:`BatchSpec` (id, label, default schedule, global or per target, lock TTL)
and, for per-target batches, a :class:`Scope` that lists and loads the targets. Adding a
batch kind is a registration, not a migration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


class Skip(Exception):
    """Raised by a batch to end its run as ``skipped`` with a reason (e.g. gateway unreachable)."""


@dataclass
class Outcome:
    """What a batch returns: the log line's summary and the counts recorded on its run."""

    summary: str  # the part of the log line after the batch name, e.g. "12 sessions"
    counts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scope:
    """A kind of target a batch runs once per (e.g. every enabled gateway)."""

    name: str
    ids: Callable[[], Iterable[int]]  # the targets a scheduled run fans out to
    load: Callable[[int], Any | None]  # a target by id, None when it is gone or disabled
    label: Callable[[Any], str] = str  # the name recorded on the run


@dataclass(frozen=True)
class BatchSpec:
    id: str  # "BATCH-001": the key on runs, schedules, locks and metrics
    label: str  # "Session polling"
    fn: Callable[[Any], Outcome]  # the work: one target (or None for a global batch) → Outcome
    every_seconds: int | None = None  # default schedule: an interval...
    crontab: tuple[str, str] | None = None  # ...or (minute, hour) in UTC
    description: str = ""
    scope: str | None = None  # None: one global run; else one run per target of this scope
    lock_ttl: int = 120  # seconds a run may hold its no-overlap lock
    alert_on_error: bool = False  # a failed run raises an Alert and mails the admins

    def __post_init__(self) -> None:
        if (self.every_seconds is None) == (self.crontab is None):
            raise ValueError(f"{self.id}: give exactly one of every_seconds and crontab")

    @property
    def task_name(self) -> str:
        """The name of its django-celery-beat periodic task."""
        return f"{self.id} {self.label}"


_batches: dict[str, BatchSpec] = {}
_scopes: dict[str, Scope] = {}


def register_scope(scope: Scope) -> Scope:
    _scopes[scope.name] = scope
    return scope


def register_batch(spec: BatchSpec) -> BatchSpec:
    existing = _batches.get(spec.id)
    if existing is not None and existing != spec:
        raise ValueError(f"batch {spec.id} is registered twice")
    _batches[spec.id] = spec
    return spec


def find(batch_id: str) -> BatchSpec | None:
    return _batches.get(batch_id)


class UnknownBatchError(LookupError, ValueError):
    pass


def get(batch_id: str) -> BatchSpec:
    try:
        return _batches[batch_id]
    except KeyError:
        raise UnknownBatchError(f"unknown batch {batch_id!r}") from None


def batches() -> list[BatchSpec]:
    return sorted(_batches.values(), key=lambda spec: spec.id)


def batch_ids() -> list[str]:
    return [spec.id for spec in batches()]


def scope(name: str) -> Scope:
    try:
        return _scopes[name]
    except KeyError:
        raise LookupError(
            f"unknown scope {name!r} (registered: {', '.join(sorted(_scopes)) or 'none'})"
        ) from None
