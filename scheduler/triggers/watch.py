"""File watches (issue 11 §3): validation against the watch roots, pattern matching, turning the
paths a watch saw into runs, the baseline / catch-up scan, the move after success and the
watcher's status (heartbeat, inotify limits). The process loop is in
scheduler/triggers/watcher.py (``manage.py run_file_watcher``).

How a path becomes a run (:func:`flush`, called by the watcher once a watch's debounce window
is quiet, or its batch is full):

1. each path is stat'ed and compared with the watch's ``WatchFile`` row (the file as it was last
   handled): there and unknown → created; there and different (mtime or size) → modified; there
   and the same → already handled, nothing; gone and known → deleted; gone and unknown (created
   and removed inside the window, or moved away after a run) → nothing. The database is the truth,
   so a restart, a second look at the same file or a move by a worker agree;
2. the ``WatchFile`` rows follow (upserted, or removed for a deletion), whatever events the watch
   fires on;
3. the events the watch asked for become runs of its job, AGENTFLOW_WATCH_BATCH_MAX paths per
   run, through ``scheduler.queue.enqueue_many`` (trigger ``file``, triggered_by ``watch:<name>``,
   a dedupe key over the events: priority, limits, pauses and the emergency stop apply), with
   ``{"watch", "directory", "paths", "events": [{"event", "path"}]}`` as the run's input;
4. a ``WatchEvent`` row per event (the newest AGENTFLOW_WATCH_EVENTS_KEPT per watch are kept).

Patterns: one without ``/`` matches the file's name (at any depth the watch reaches: ``*.pdf``);
one with ``/`` matches the path relative to the directory, ``**`` spanning directories
(``in/**/*.csv`` matches ``in/a.csv`` and ``in/x/y/a.csv``). No pattern: every file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from .watch_models import EVENTS, Watch, WatchEvent, WatchFile

log = logging.getLogger("agentflow.watch")

CHUNK = 500  # paths per IN (...) query


# --- roots and validation ----------------------------------------------------------------------


def roots() -> list[Path]:
    return [Path(os.path.realpath(Path(r).expanduser())) for r in settings.AGENTFLOW_WATCH_ROOTS]


def resolve(directory: str) -> Path:
    """The absolute, symlink-free form of a watch's directory (``~`` expanded)."""
    return Path(os.path.realpath(Path(directory).expanduser()))


def under_roots(directory: str) -> bool:
    path = resolve(directory)
    return any(path == root or root in path.parents for root in roots())


def _roots_text() -> str:
    return ", ".join(str(r) for r in roots()) or "(none)"


def validate(watch: Watch) -> dict[str, list[str]]:
    """What is wrong with a watch, by field (empty: nothing). The admin, the model's ``clean`` and
    the automation import all call it, so they refuse the same things with the same words."""
    problems: dict[str, list[str]] = {}

    def bad(name: str, message: str) -> None:
        problems.setdefault(name, []).append(message)

    directory = (watch.directory or "").strip()
    if not directory:
        bad("directory", "a directory is required")
    elif not Path(directory).expanduser().is_absolute():
        bad("directory", f"{directory!r} is not an absolute path (start it with / or ~)")
    elif not under_roots(directory):
        bad(
            "directory",
            f"{resolve(directory)} is outside the watch roots ({_roots_text()}); "
            "add its parent to AGENTFLOW_WATCH_ROOTS to watch it",
        )
    patterns = watch.patterns
    if not isinstance(patterns, list) or not all(isinstance(p, str) and p.strip() for p in patterns):
        bad("patterns", "patterns must be a list of non-empty glob strings")
    else:
        for pattern in patterns:
            if pattern.startswith("/") or ".." in Path(pattern).parts:
                bad("patterns", f"{pattern!r}: a pattern is relative to the directory (no leading / or ..)")
    events = watch.events
    if not isinstance(events, list) or not events or not all(e in EVENTS for e in events):
        bad("events", f"choose one or more of {', '.join(EVENTS)} (got {events!r})")
    if watch.debounce_ms is None or not 0 <= watch.debounce_ms <= 600_000:
        bad("debounce_ms", "the debounce is 0 to 600,000 ms")
    move_to = (watch.move_to or "").strip()
    if move_to:
        if not Path(move_to).expanduser().is_absolute():
            bad("move_to", f"{move_to!r} is not an absolute path")
        elif not under_roots(move_to):
            bad("move_to", f"{resolve(move_to)} is outside the watch roots ({_roots_text()})")
        elif directory and resolve(move_to) == resolve(directory):
            bad("move_to", "the folder to move files into cannot be the watched directory itself")
    return problems


# --- matching ----------------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def matches(patterns: Sequence[str], relative: str) -> bool:
    """``relative``: the path below the watch's directory, with ``/`` separators."""
    if not patterns:
        return True
    name = relative.rsplit("/", 1)[-1]
    return any(_regex(p).match(relative if "/" in p else name) for p in patterns)


@dataclass
class Target:
    """A watch as the watcher holds it: resolved paths, so matching costs no query."""

    pk: int
    name: str
    directory: str
    patterns: tuple[str, ...]
    events: frozenset[str]
    recursive: bool
    debounce_ms: int
    move_to: str = ""

    @classmethod
    def of(cls, watch: Watch) -> Target:
        return cls(
            watch.pk,
            watch.name,
            str(resolve(watch.directory)),
            tuple(watch.patterns or ()),
            frozenset(watch.events or ()),
            watch.recursive,
            watch.debounce_ms,
            str(resolve(watch.move_to)) if watch.move_to else "",
        )

    def relative(self, path: str) -> str | None:
        """``path`` below the directory (None: not this watch's: elsewhere, too deep, in move_to)."""
        if self.move_to and (path == self.move_to or path.startswith(self.move_to + os.sep)):
            return None
        if not path.startswith(self.directory + os.sep):
            return None
        rel = path[len(self.directory) + 1 :]
        if not self.recursive and os.sep in rel:
            return None
        return rel.replace(os.sep, "/")

    def wants(self, path: str) -> bool:
        rel = self.relative(path)
        return rel is not None and matches(self.patterns, rel)


# --- directory state ---------------------------------------------------------------------------


def directory_state(watch: Watch) -> tuple[str, str]:
    """(state, detail) of a watch's directory now: watching, missing, unreadable, outside_roots
    or disabled."""
    if not watch.enabled:
        return Watch.State.DISABLED, ""
    if not under_roots(watch.directory):
        return Watch.State.OUTSIDE_ROOTS, f"{resolve(watch.directory)} is outside {_roots_text()}"
    path = resolve(watch.directory)
    if not path.exists():
        return Watch.State.MISSING, f"{path} does not exist"
    if not path.is_dir():
        return Watch.State.MISSING, f"{path} is not a directory"
    if not os.access(path, os.R_OK | os.X_OK):
        return Watch.State.UNREADABLE, f"{path}: permission denied"
    try:
        with os.scandir(path) as entries:
            next(entries, None)
    except OSError as exc:
        return Watch.State.UNREADABLE, f"{path}: {exc.strerror or exc}"
    return Watch.State.WATCHING, ""


ALERT_RULE = "watch-directory"


def set_state(watch: Watch, state: str, detail: str = "") -> bool:
    """Record the directory's state (only when it changed); a problem raises the watch's alert at
    once (the alert evaluator also finds it, and resolves it when the state is good again)."""
    if watch.state == state and watch.state_detail == detail[:500]:
        return False
    from scheduler import alert_rules

    now = timezone.now()
    # One transaction: whoever reads the new state also reads its alert (raised or resolved). The
    # alert has a savepoint of its own, so a failing alert never loses the state row.
    with transaction.atomic():
        Watch.objects.filter(pk=watch.pk).update(state=state, state_detail=detail[:500], state_changed_at=now)
        watch.state, watch.state_detail, watch.state_changed_at = state, detail[:500], now
        if state in Watch.PROBLEMS:
            log.warning("watch %s: %s (%s)", watch.name, Watch.State(state).label, detail)
            try:
                with transaction.atomic():
                    alert_rules.fire(ALERT_RULE, watch.name, f"file watch {watch.name}: {detail or state}")
            except Exception:  # an alert is a courtesy here: the state row is what the page shows
                log.exception("watch %s: the alert could not be raised", watch.name)
        else:
            try:
                with transaction.atomic():
                    alert_rules.clear(ALERT_RULE, watch.name)
            except Exception:
                log.exception("watch %s: the alert could not be resolved", watch.name)
    return True


# --- scanning ------------------------------------------------------------------------------------


@dataclass
class Scan:
    files: list[str] = field(default_factory=list)
    directories: int = 0


def scan(target: Target, top: str = "") -> Scan:
    """The matching files under the directory (or ``top``, a directory below it) now, and how
    many directories the watch covers (one inotify watch each)."""
    out = Scan()
    top = top or target.directory

    def walk(directory: str) -> None:
        out.directories += 1
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            if target.recursive and entry.path != target.move_to:
                                walk(entry.path)
                        elif target.wants(entry.path):
                            out.files.append(entry.path)
                    except OSError:
                        continue
        except OSError as exc:
            if directory == target.directory:
                raise
            log.warning("watch %s: cannot read %s: %s", target.name, directory, exc)

    walk(top)
    return out


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not os.path.isfile(path):
        return None
    return st.st_mtime_ns, st.st_size


def record_baseline(target: Target, files: Iterable[str]) -> int:
    """A new watch: the files already there are handled (they do not fire)."""
    now = timezone.now()
    rows = []
    for path in files:
        st = _stat(path)
        if st is not None:
            rows.append((path, st))
    with transaction.atomic():
        WatchFile.objects.filter(watch_id=target.pk).delete()
        _upsert_files(target.pk, rows, now)
        Watch.objects.filter(pk=target.pk).update(baseline_at=now)
    return len(rows)


def differences(target: Target) -> tuple[list[str], int]:
    """A full rescan compared with the handled rows: the paths whose file appeared, changed or
    went without the watch having handled it (events the kernel dropped), and the directories
    counted. The watcher runs it after a burst (see watcher.py)."""
    found = scan(target)
    known = {
        path: (mtime_ns, size)
        for path, mtime_ns, size in WatchFile.objects.filter(watch_id=target.pk).values_list(
            "path", "mtime_ns", "size"
        )
    }
    present = set(found.files)
    out = [p for p in found.files if known.get(p) != _stat(p)]
    out += [p for p in known if p not in present]
    return out, found.directories


def known_paths(target: Target) -> list[str]:
    return list(WatchFile.objects.filter(watch_id=target.pk).values_list("path", flat=True))


@dataclass
class Flushed:
    events: int = 0
    runs: list[int] = field(default_factory=list)
    skipped: int = 0  # already handled, or created and gone inside the window


def _dedupe_key(target: Target, events: Sequence[tuple[str, str, tuple[int, int] | None]]) -> str:
    digest = hashlib.sha256(json.dumps(sorted((e, p, s) for e, p, s in events)).encode()).hexdigest()
    return f"watch:{target.pk}:{digest[:40]}"


def flush(target: Target, paths: Iterable[str]) -> Flushed:
    """Turn the paths a watch saw into events and runs (the module's docstring, steps 1-4)."""
    from scheduler import queue
    from scheduler.models import Job, Run

    out = Flushed()
    paths = sorted(set(paths))
    if not paths:
        return out
    stats = {p: _stat(p) for p in paths}
    known: dict[str, tuple[int, int]] = {}
    for chunk in _chunks(paths):
        for path, mtime_ns, size in WatchFile.objects.filter(watch_id=target.pk, path__in=chunk).values_list(
            "path", "mtime_ns", "size"
        ):
            known[path] = (mtime_ns, size)
    events: list[tuple[str, str, tuple[int, int] | None]] = []
    upsert: list[tuple[str, tuple[int, int]]] = []
    gone: list[str] = []
    now = timezone.now()
    for path in paths:
        st, was = stats[path], known.get(path)
        if st is not None and was is None:
            events.append(("created", path, st))
        elif st is not None and was != st:
            events.append(("modified", path, st))
        elif st is None and was is not None:
            events.append(("deleted", path, None))
            gone.append(path)
        else:
            out.skipped += 1
            continue
        if st is not None:
            upsert.append((path, st))
    fired = [e for e in events if e[0] in target.events]
    with transaction.atomic():
        if upsert:
            _upsert_files(target.pk, upsert, now)
        for chunk in _chunks(gone):
            WatchFile.objects.filter(watch_id=target.pk, path__in=chunk).delete()
        if not fired:
            return out
        job = Job.objects.filter(watches__pk=target.pk).first()
        cap = settings.AGENTFLOW_WATCH_BATCH_MAX
        batches = list(_chunks(fired, cap))
        specs = [
            {
                "job": job,
                "input": {
                    "watch": target.name,
                    "directory": target.directory,
                    "paths": [p for _e, p, _s in batch],
                    "events": [{"event": e, "path": p} for e, p, _s in batch],
                },
                "dedupe_key": _dedupe_key(target, batch),
            }
            for batch in batches
        ]
        runs: list[Run | None]
        try:
            with transaction.atomic():
                runs = list(
                    queue.enqueue_many(specs, trigger=Run.Trigger.FILE, triggered_by=f"watch:{target.name}")
                )
        except ValidationError as exc:
            log.error("watch %s: its job could not be queued: %s", target.name, "; ".join(exc.messages))
            runs = [None] * len(batches)
        rows = []
        for batch, run in zip(batches, runs, strict=True):
            rows += [(e, p, run.pk if run is not None else None) for e, p, _s in batch]
        _insert_events(target.pk, rows[-settings.AGENTFLOW_WATCH_EVENTS_KEPT :], now)
        made = sum(1 for r in runs if r is not None)
        Watch.objects.filter(pk=target.pk).update(last_event_at=now, runs_made=F("runs_made") + made)
        _prune_events(target.pk)
    out.events = len(fired)
    out.runs = [r.pk for r in runs if r is not None]
    return out


# Plain executemany: bulk_create spent 0.35 ms a row building its SQL (0.7 s of a 1,000-file
# flush); these take a few milliseconds. ON CONFLICT … DO UPDATE: SQLite ≥ 3.24 and PostgreSQL.


def _upsert_files(watch_id: int, rows: Sequence[tuple[str, tuple[int, int]]], now: Any) -> None:
    table = WatchFile._meta.db_table
    at = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} (watch_id, path, mtime_ns, size, seen_at) VALUES (%s, %s, %s, %s, %s) "  # noqa: S608 - the table name is ours
            "ON CONFLICT (watch_id, path) DO UPDATE SET mtime_ns = excluded.mtime_ns, "
            "size = excluded.size, seen_at = excluded.seen_at",
            [(watch_id, path, st[0], st[1], at) for path, st in rows],
        )


def _insert_events(watch_id: int, rows: Sequence[tuple[str, str, int | None]], now: Any) -> None:
    table = WatchEvent._meta.db_table
    at = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} (watch_id, at, event, path, run_id) VALUES (%s, %s, %s, %s, %s)",  # noqa: S608
            [(watch_id, at, event, path, run_id) for event, path, run_id in rows],
        )


def _prune_events(watch_id: int) -> None:
    keep = settings.AGENTFLOW_WATCH_EVENTS_KEPT
    edge = (
        WatchEvent.objects.filter(watch_id=watch_id)
        .order_by("-id")
        .values_list("id", flat=True)[keep : keep + 1]
    )
    if edge:
        WatchEvent.objects.filter(watch_id=watch_id, id__lte=edge[0]).delete()


# --- after a run: move its files ------------------------------------------------------------------


def _free_name(folder: Path, name: str) -> Path:
    dest = folder / name
    stem, suffix, n = Path(name).stem, Path(name).suffix, 1
    while dest.exists():
        dest = folder / f"{stem}-{n}{suffix}"
        n += 1
    return dest


def move_after_success(run: Any) -> list[str]:
    """``scheduler.signals.run_finished``: a succeeded run of a watch with ``move_to`` moves its
    files (those still there, inside the watched directory) into that folder, a clashing name
    getting ``-1``, ``-2``... Their ``WatchFile`` rows go first, so the watcher reads the move as
    nothing (not as a deletion). Returns the new paths."""
    from scheduler.models import Run

    if run.trigger != Run.Trigger.FILE or run.status != Run.Status.SUCCEEDED:
        return []
    if not run.triggered_by.startswith("watch:") or not isinstance(run.input, dict):
        return []
    watch = Watch.objects.filter(name=run.triggered_by.removeprefix("watch:")).exclude(move_to="").first()
    if watch is None or not under_roots(watch.move_to):
        return []
    target = Target.of(watch)
    folder = Path(target.move_to)
    moved = []
    for item in run.input.get("events") or []:
        path = item.get("path") if isinstance(item, dict) else None
        if not isinstance(path, str) or item.get("event") == "deleted" or target.relative(path) is None:
            continue
        if not os.path.isfile(path):
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
            WatchFile.objects.filter(watch_id=watch.pk, path=path).delete()
            dest = _free_name(folder, os.path.basename(path))
            shutil.move(path, dest)
        except OSError as exc:
            log.error("watch %s: could not move %s to %s: %s", watch.name, path, folder, exc)
            continue
        moved.append(str(dest))
    if moved:
        log.info("watch %s: run %s succeeded, moved %d file(s) to %s", watch.name, run.pk, len(moved), folder)
    return moved


def on_run_finished(sender: object, run: Any, **kwargs: object) -> None:
    try:
        move_after_success(run)
    except Exception:  # a receiver must not break the run's own bookkeeping
        log.exception("watch: moving the files of run %s failed", getattr(run, "pk", "?"))


# --- the watcher's status -------------------------------------------------------------------------


def heartbeat_key() -> str:
    from agentflow.lib.redis import key

    return key("watcher", "heartbeat")


def beat(info: dict[str, Any], ttl: float) -> None:
    from agentflow.lib.redis import get_redis

    get_redis().set(heartbeat_key(), json.dumps({**info, "at": time.time()}), ex=max(1, int(ttl)))


def watcher_status() -> dict[str, Any]:
    """The watcher process from its heartbeat: ``alive``, ``pid``, ``uptime`` (s), ``watches``
    (watched directories), ``inotify_watches`` (directories covered), ``error`` (Redis down)."""
    from agentflow.lib.redis import get_redis

    try:
        raw = get_redis().get(heartbeat_key())
    except Exception as exc:
        return {"alive": False, "error": f"Redis unavailable: {exc.__class__.__name__}"}
    if not raw:
        return {"alive": False}
    info = json.loads(raw)
    info["alive"] = True
    info["uptime"] = max(0.0, time.time() - float(info.get("started", time.time())))
    info["age"] = max(0.0, time.time() - float(info.get("at", time.time())))
    return info


INOTIFY = Path("/proc/sys/fs/inotify")


def inotify_limits() -> dict[str, int | None]:
    """The kernel's inotify limits (None where unknown: not Linux)."""
    out: dict[str, int | None] = {}
    for name in ("max_user_watches", "max_user_instances", "max_queued_events"):
        try:
            out[name] = int((INOTIFY / name).read_text().strip())
        except (OSError, ValueError):
            out[name] = None
    return out
