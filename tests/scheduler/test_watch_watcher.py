"""The file watcher's loop (scheduler/triggers/watcher.py) in a thread against a real directory,
real inotify (watchfiles), the real database and Redis: create / modify / delete, a burst of
5,000 files (0 missed), a restart that does not refire, a vanished directory, a watch added while
it runs, and its heartbeat."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connections

from scheduler import alert_rules
from scheduler.models import Alert, Job, Run, Watch
from scheduler.triggers import watch as w
from scheduler.triggers.watcher import Watcher

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]


@pytest.fixture
def root(tmp_path, settings, redis_prefix, own_queues):
    settings.AGENTFLOW_WATCH_ROOTS = [str(tmp_path / "root")]
    (tmp_path / "root" / "in").mkdir(parents=True)
    return tmp_path / "root"


class Running:
    def __init__(self) -> None:
        self.stop = threading.Event()
        self.watcher = Watcher(poll_seconds=0.3, stop=self.stop)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.watcher.run()
        finally:
            connections.close_all()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()


@pytest.fixture
def start() -> Iterator[Callable[[], Running]]:
    started: list[Running] = []

    def _start() -> Running:
        started.append(Running())
        return started[-1]

    yield _start
    for running in started:
        running.stop.set()
        running.thread.join(timeout=20)


def wait_for(check: Callable[[], object], timeout: float = 30.0, every: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s: {check}")


def watching(name: str = "inbox") -> bool:
    watch = Watch.objects.get(name=name)
    return watch.state == Watch.State.WATCHING and watch.baseline_at is not None


def make_watch(root: Path, **fields) -> Watch:
    job = Job.objects.get_or_create(name="process-file", defaults={"kind": "noop"})[0]
    values = {
        "name": "inbox",
        "directory": str(root / "in"),
        "patterns": ["*.pdf"],
        "events": ["created", "modified", "deleted"],
        "debounce_ms": 200,
        "job": job,
    }
    values.update(fields)
    watch = Watch(**values)
    watch.full_clean()
    watch.save()
    return watch


def events_of(watch: Watch) -> list[tuple[str, str]]:
    out = []
    for run in Run.objects.filter(triggered_by=f"watch:{watch.name}").order_by("id"):
        out += [(e["event"], Path(e["path"]).name) for e in run.input["events"]]
    return out


def test_create_modify_and_delete_under_a_real_directory_each_make_a_run(root, start):
    watch = make_watch(root)
    (root / "in" / "before.pdf").write_bytes(b"there first")  # the baseline: it does not fire
    start()
    wait_for(watching)
    pdf = root / "in" / "a.pdf"
    pdf.write_bytes(b"one")
    (root / "in" / "notes.txt").write_text("not matched")
    wait_for(lambda: events_of(watch) == [("created", "a.pdf")])
    time.sleep(0.05)
    pdf.write_bytes(b"two, longer")
    wait_for(lambda: events_of(watch)[1:] == [("modified", "a.pdf")])
    pdf.unlink()
    wait_for(lambda: events_of(watch)[2:] == [("deleted", "a.pdf")])
    time.sleep(0.5)
    assert events_of(watch) == [("created", "a.pdf"), ("modified", "a.pdf"), ("deleted", "a.pdf")]
    run = Run.objects.filter(triggered_by="watch:inbox").first()
    assert run.trigger == Run.Trigger.FILE
    watch.refresh_from_db()
    assert watch.runs_made == 3


def test_a_burst_of_5000_files_misses_none_and_is_batched(root, start, settings):
    settings.AGENTFLOW_WATCH_BATCH_MAX = 1000
    make_watch(root, patterns=["**/*.dat"], recursive=True, events=["created"])
    start()
    wait_for(watching)
    names = set()
    for d in range(50):
        folder = root / "in" / f"d{d:02}"
        folder.mkdir()
        for i in range(100):
            (folder / f"f{i:03}.dat").write_bytes(b"x")
            names.add(str(folder / f"f{i:03}.dat"))

    def seen() -> set[str]:
        runs = Run.objects.filter(triggered_by="watch:inbox")
        return {p for r in runs for p in r.input["paths"]}

    wait_for(lambda: seen() == names, timeout=30, every=0.5)
    runs = list(Run.objects.filter(triggered_by="watch:inbox"))
    assert all(len(r.input["paths"]) <= 1000 for r in runs)
    assert len(runs) < 50  # batched: not a run per file
    assert sum(len(r.input["paths"]) for r in runs) == 5000  # and none twice


def test_a_restart_does_not_refire_but_catches_up_on_what_came_while_down(root, start):
    watch = make_watch(root)
    first = start()
    wait_for(watching)
    (root / "in" / "a.pdf").write_bytes(b"x")
    wait_for(lambda: events_of(watch) == [("created", "a.pdf")])
    first.close()
    (root / "in" / "while-down.pdf").write_bytes(b"y")
    start()
    wait_for(lambda: len(events_of(watch)) == 2)
    time.sleep(1.0)  # more polls: nothing else
    assert events_of(watch) == [("created", "a.pdf"), ("created", "while-down.pdf")]


def test_a_vanished_directory_is_reported_and_watched_again_when_back(root, start):
    alert_rules.ensure_rules()  # a transactional test starts without the rows migrate made
    watch = make_watch(root)
    running = start()
    wait_for(watching)
    shutil.rmtree(root / "in")
    wait_for(lambda: Watch.objects.get(pk=watch.pk).state == Watch.State.MISSING)
    assert "does not exist" in Watch.objects.get(pk=watch.pk).state_detail
    assert Alert.objects.open().filter(rule=w.ALERT_RULE, subject="inbox").exists()
    assert running.thread.is_alive()
    (root / "in").mkdir()
    wait_for(lambda: Watch.objects.get(pk=watch.pk).state == Watch.State.WATCHING)
    (root / "in" / "back.pdf").write_bytes(b"x")
    wait_for(lambda: events_of(watch) == [("created", "back.pdf")])
    assert not Alert.objects.open().filter(rule=w.ALERT_RULE, subject="inbox").exists()


def test_a_watch_added_while_it_runs_is_picked_up_and_the_heartbeat_says_so(root, start):
    running = start()
    wait_for(lambda: w.watcher_status()["alive"])
    assert w.watcher_status()["watches"] == 0
    (root / "other").mkdir()
    watch = make_watch(root, name="late", directory=str(root / "other"))
    wait_for(lambda: watching("late"))
    (root / "other" / "x.pdf").write_bytes(b"x")
    wait_for(lambda: events_of(watch) == [("created", "x.pdf")])
    status = wait_for(lambda: (s := w.watcher_status())["watches"] == 1 and s)
    assert status["pid"] and status["uptime"] >= 0 and status["inotify_watches"] >= 1
    Watch.objects.filter(pk=watch.pk).update(enabled=False, updated_at=watch.updated_at.replace(year=2030))
    wait_for(lambda: Watch.objects.get(pk=watch.pk).state == Watch.State.DISABLED)
    (root / "other" / "y.pdf").write_bytes(b"y")
    time.sleep(1.0)
    assert events_of(watch) == [("created", "x.pdf")]
    running.close()


def test_the_real_process_watches_heartbeats_and_stops_on_sigterm(root, settings, tmp_path):
    """``manage.py run_file_watcher`` as the Procfile starts it: the test database and Redis
    prefix, a file → a run, its heartbeat on the page's key, exit 0 on SIGTERM."""
    import os
    import signal
    import subprocess
    import sys

    from tests.support.processes import database_url

    watch = make_watch(root)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_VERSION"}
    env.update(
        AGENTFLOW_ENV="test",
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        AGENTFLOW_REDIS_PREFIX=settings.REDIS_PREFIX,
        AGENTFLOW_WATCH_ROOTS=str(root),
        PYTHONUNBUFFERED="1",
    )
    log_path = tmp_path / "watcher.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "run_file_watcher", "--poll", "0.5"],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(watching, timeout=30)
            (root / "in" / "from-the-process.pdf").write_bytes(b"x")
            wait_for(lambda: events_of(watch) == [("created", "from-the-process.pdf")])
            status = wait_for(lambda: (s := w.watcher_status())["alive"] and s)
            assert status["pid"] == proc.pid and status["watches"] == 1
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0, log_path.read_text(errors="replace")[-2000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    assert "File watcher stopped." in log_path.read_text()
