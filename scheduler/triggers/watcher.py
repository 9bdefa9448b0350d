"""The file watcher process (``manage.py run_file_watcher``, the Procfile's ``watcher``): one
watchfiles (Rust ``notify``, inotify on Linux) watcher over the directories of every enabled
watch, a debounce buffer per watch, and :func:`scheduler.triggers.watch.flush` to turn what it saw
into runs.

The loop (:meth:`Watcher.run`):

1. read the enabled watches and check each directory (watching / missing / unreadable / outside
   the roots: recorded on the watch, a problem raises its alert; never fatal);
2. start watchfiles on the good directories; as soon as it is listening, scan them: a new watch
   records the files already there as handled (they do not fire), a known one queues the
   difference from what it handled (files created, changed or deleted while the watcher was down
   or restarting);
3. each change is offered to every watch (directory, recursion, patterns); a watch's paths wait
   in its buffer until ``debounce_ms`` passes without a new one (or AGENTFLOW_WATCH_BATCH_MAX
   paths are waiting, or MAX_WAIT_SECONDS passed since the first), then are flushed;
3b. after a burst (BURST_CHANGES changes in one delivery, or a new directory), once the watch has
   been quiet for its debounce, a **rescan** compares the directory with the handled rows and
   flushes what differs. inotify's kernel queue (fs.inotify.max_queued_events, 16,384 here)
   overflows under a burst and drops events without telling watchfiles: 20,000 files written in
   1.5 s into 5,000 new directories lost 30-55 % of their events, bare watchfiles the same; the
   rescan finds every one (bench/bench_watch.py);
4. every AGENTFLOW_WATCH_POLL_SECONDS: a heartbeat in Redis (pid, uptime, counts) and a re-read
   of the watch table and the directories; anything changed (a watch added, edited, disabled;
   a directory vanished or came back) restarts watchfiles on the new set (back to 2: the scan
   covers the gap).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import watchfiles
from django.conf import settings
from django.db import close_old_connections

from . import watch as w
from .watch_models import Watch

log = logging.getLogger("agentflow.watch")

MAX_WAIT_SECONDS = 10.0  # a steady trickle still makes a run this often
BURST_CHANGES = 200  # changes in one watchfiles delivery that make a rescan due (step 3b)


@dataclass
class Pending:
    paths: set[str] = field(default_factory=set)
    first: float = 0.0
    last: float = 0.0


class Watcher:
    def __init__(self, *, poll_seconds: float | None = None, stop: threading.Event | None = None) -> None:
        self.poll_seconds = settings.AGENTFLOW_WATCH_POLL_SECONDS if poll_seconds is None else poll_seconds
        self.stop = stop or threading.Event()
        self.started = time.time()
        self.targets: list[w.Target] = []
        self.pending: dict[int, Pending] = {}
        self.directories_of: dict[int, int] = {}  # watch pk → directories it covers (one inotify watch each)
        self.fingerprint: tuple[Any, ...] = ()
        self.flushes = 0
        self.rescan_due: dict[int, float] = {}  # watch pk → monotonic time of its last burst change
        self.recovered = 0  # paths the rescans found that inotify did not report

    # --- 1. the watches and their directories ---

    def load(self) -> tuple[list[w.Target], tuple[Any, ...]]:
        close_old_connections()
        targets, seen = [], []
        for watch in Watch.objects.select_related("job").order_by("pk"):
            state, detail = w.directory_state(watch)
            w.set_state(watch, state, detail)
            seen.append((watch.pk, watch.updated_at, state))
            if state == Watch.State.WATCHING:
                targets.append(w.Target.of(watch))
        return targets, (tuple(seen), tuple(settings.AGENTFLOW_WATCH_ROOTS))

    def beat(self) -> None:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": self.started,
            "watches": len(self.targets),
            "inotify_watches": sum(self.directories_of.get(t.pk, 0) for t in self.targets),
            "pending": sum(len(p.paths) for p in self.pending.values()),
            "flushes": self.flushes,
            "recovered": self.recovered,
        }
        try:
            w.beat(info, ttl=self.poll_seconds * 3 + 5)
        except Exception as exc:  # Redis down: the page says "not seen", the watching goes on
            log.warning("watcher: heartbeat not written: %s", exc)

    # --- 2. the scan once watchfiles listens ---

    def scan(self) -> None:
        for target in self.targets:
            try:
                found = w.scan(target)
            except OSError as exc:
                log.warning("watch %s: scan failed: %s", target.name, exc)
                continue
            self.directories_of[target.pk] = found.directories
            watch = Watch.objects.filter(pk=target.pk).only("baseline_at").first()
            if watch is None:
                continue
            if watch.baseline_at is None:
                n = w.record_baseline(target, found.files)
                log.info("watch %s: %d file(s) already there recorded as handled", target.name, n)
            else:
                paths = set(found.files) | set(w.known_paths(target))
                if paths:
                    self.offer(target, paths, due_now=True)

    # --- 3. buffering and flushing ---

    def offer(self, target: w.Target, paths: set[str], *, due_now: bool = False) -> None:
        now = time.monotonic()
        pending = self.pending.setdefault(target.pk, Pending(first=now))
        if not pending.paths:
            pending.first = now
        pending.paths |= paths
        pending.last = 0.0 if due_now else now

    def route(self, changes: set[tuple[watchfiles.Change, str]]) -> None:
        """Offer each change to every watch. A new directory under a recursive watch is scanned:
        files written into it before inotify watched it (a race no watcher can close alone; it
        lost 11 % of a 5,000-file burst in 50 new directories) are found that way, and the flush
        makes one event of a file both ways see."""
        by_target: dict[int, set[str]] = {}
        now = time.monotonic()
        for change, path in changes:
            for target in self.targets:
                if target.wants(path):
                    by_target.setdefault(target.pk, set()).add(path)
                elif (
                    change == watchfiles.Change.added
                    and target.recursive
                    and target.relative(path) is not None
                    and os.path.isdir(path)
                ):
                    found = w.scan(target, top=path)
                    self.directories_of[target.pk] = self.directories_of.get(target.pk, 0) + found.directories
                    by_target.setdefault(target.pk, set()).update(found.files)
                    self.rescan_due[target.pk] = now
        for target in self.targets:
            if target.pk in by_target:
                self.offer(target, by_target[target.pk])
                if len(changes) >= BURST_CHANGES:
                    self.rescan_due[target.pk] = now

    def rescan_quiet(self) -> None:
        """Step 3b: the watches whose burst is over (quiet for their debounce, buffer empty)."""
        now = time.monotonic()
        for target in self.targets:
            since = self.rescan_due.get(target.pk)
            pending = self.pending.get(target.pk)
            if (
                since is None
                or now - since < max(target.debounce_ms / 1000, 0.5)
                or (pending and pending.paths)
            ):
                continue
            del self.rescan_due[target.pk]
            try:
                missed, self.directories_of[target.pk] = w.differences(target)
            except OSError as exc:
                log.warning("watch %s: rescan failed: %s", target.name, exc)
                continue
            if missed:
                self.recovered += len(missed)
                log.warning(
                    "watch %s: the rescan after a burst found %d change(s) inotify did not report "
                    "(its kernel queue overflowed?); queued now",
                    target.name,
                    len(missed),
                )
                self.offer(target, set(missed), due_now=True)
                self.rescan_due[target.pk] = now  # once more after these: the burst may go on

    def flush_due(self, *, everything: bool = False) -> None:
        now = time.monotonic()
        cap = settings.AGENTFLOW_WATCH_BATCH_MAX
        for target in self.targets:
            pending = self.pending.get(target.pk)
            if not pending or not pending.paths:
                continue
            quiet = now - pending.last >= target.debounce_ms / 1000
            if not (
                everything or quiet or len(pending.paths) >= cap or now - pending.first >= MAX_WAIT_SECONDS
            ):
                continue
            paths, pending.paths = pending.paths, set()
            try:
                done = w.flush(target, paths)
            except Exception:
                log.exception("watch %s: %d path(s) not flushed, retried", target.name, len(paths))
                pending.paths |= paths
                continue
            self.flushes += 1
            if done.events:
                log.info("watch %s: %d event(s) → run(s) %s", target.name, done.events, done.runs)

    # --- the loop ---

    def run(self) -> None:
        log.info(
            "file watcher started (pid %s, roots %s)", os.getpid(), ", ".join(settings.AGENTFLOW_WATCH_ROOTS)
        )
        while not self.stop.is_set():
            try:
                self.targets, self.fingerprint = self.load()
                self.beat()
                if not self.targets:
                    self.stop.wait(self.poll_seconds)
                    continue
                self.watch_once()
            except Exception:
                log.exception("watcher: restarting after an error")
                self.stop.wait(1.0)
        try:
            self.flush_due(everything=True)
        except Exception:
            log.exception("watcher: the last flush failed")
        log.info("file watcher stopped")

    def watch_once(self) -> None:
        """Watch the current targets until the watches or directories change (or stop)."""
        directories = sorted({t.directory for t in self.targets})
        restart = threading.Event()
        scanned = False
        next_poll = time.monotonic() + self.poll_seconds
        for changes in watchfiles.watch(
            *directories,
            watch_filter=None,
            debounce=200,
            step=50,
            stop_event=_Either(self.stop, restart),
            rust_timeout=200,
            yield_on_timeout=True,
            raise_interrupt=False,
            recursive=any(t.recursive for t in self.targets),
            ignore_permission_denied=True,
        ):
            if not scanned:
                self.scan()
                scanned = True
            if changes:
                self.route(changes)
            self.flush_due()
            if self.rescan_due:
                self.rescan_quiet()
                self.flush_due()
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self.poll_seconds
                self.beat()
                targets, fingerprint = self.load()
                if fingerprint != self.fingerprint:
                    log.info("watcher: the watches or their directories changed, watching again")
                    self.flush_due(everything=True)
                    restart.set()
                    break


class _Either:
    """watchfiles' stop_event: set when either event is."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)
