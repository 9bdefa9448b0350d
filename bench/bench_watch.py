"""File watch under a burst (issue 11 §3's performance target): BENCH_WATCH_FILES (20,000) files
created in BENCH_WATCH_DIRS (5,000) new directories as fast as this process can, under one
recursive watch (events created, debounce 1 s, AGENTFLOW_WATCH_BATCH_MAX 1000 paths per run,
the noop job), with the real ``manage.py run_file_watcher`` process and the bench database.

Each of BENCH_WATCH_ROUNDS (3) rounds writes into a fresh sub-directory (the watcher keeps
running) and measures:

- missed: files that no run's input names (target 0), and files named twice (0);
- the last run enqueued after the burst's last file was written (``Run.queued_at``; target
  ≤ 5 s); the number of runs.

Baseline in the same run: bare watchfiles (bench/_bare_watchfiles.py, no Django, no database,
no queue) over the same kind of burst: the files it reports and when its last report came. It
misses the files written into a directory before inotify watched it; AgentFlow's watcher scans
each new directory to find them."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import _common as common

FILES = int(os.environ.get("BENCH_WATCH_FILES", 20_000))
DIRS = int(os.environ.get("BENCH_WATCH_DIRS", 5_000))
ROUNDS = int(os.environ.get("BENCH_WATCH_ROUNDS", 3))
SETTLE_S = 60.0


def burst(top: Path) -> tuple[set[str], float, float]:
    """Create the files; returns (paths, start, end) as time.time()."""
    per_dir = FILES // DIRS
    paths: set[str] = set()
    started = time.time()
    for d in range(DIRS):
        folder = top / f"d{d:05}"
        folder.mkdir(parents=True)
        for i in range(per_dir):
            path = folder / f"f{i}.dat"
            path.write_bytes(b"x")
            paths.add(str(path))
    return paths, started, time.time()


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def bare_round(root: Path, n: int) -> dict:
    top = root / f"bare{n}"
    top.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._bare_watchfiles", str(top)],
        cwd=common.ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=common.server_env(),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        paths, _started, ended = burst(top)
        time.sleep(5.0)  # quiet: whatever it will report has come
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    lines = [line.split() for line in out.splitlines() if line.strip()]
    seen, last = (int(lines[-1][0]), float(lines[-1][1])) if lines else (0, ended)
    return {"seen": seen, "missed": len(paths) - seen, "last_after_burst_s": round(last - ended, 2)}


def run() -> dict:
    common.setup("watch")
    from django.db.models import Max

    from scheduler.models import Job, Run, Watch

    root = Path(tempfile.mkdtemp(prefix="agentflow-bench-watch-"))
    from django.conf import settings

    settings.AGENTFLOW_WATCH_ROOTS = [str(root)]
    Watch.objects.all().delete()
    Run.objects.all().delete()
    job, _ = Job.objects.get_or_create(name="bench-watch", defaults={"kind": "noop"})
    watched = root / "watched"
    watched.mkdir()
    watch = Watch(
        name="bench", directory=str(watched), events=["created"], recursive=True, debounce_ms=1000, job=job
    )
    watch.full_clean()
    watch.save()
    log = common.log_path("watch").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run_file_watcher", "--poll", "1"],
        cwd=common.ROOT,
        env=common.server_env(
            AGENTFLOW_WATCH_ROOTS=str(root), AGENTFLOW_WATCH_BATCH_MAX="1000", LOG_LEVEL="INFO"
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    rounds, baseline = [], []
    try:
        _wait(
            lambda: Watch.objects.filter(pk=watch.pk, state="watching", baseline_at__isnull=False).exists(),
            60,
            "the watcher to start",
        )
        for n in range(ROUNDS):
            baseline.append(bare_round(root, n))
            before = Run.objects.aggregate(m=Max("id"))["m"] or 0
            paths, started, ended = burst(watched / f"r{n}")

            def seen(before=before) -> set[str]:
                runs = Run.objects.filter(id__gt=before, triggered_by="watch:bench").values_list(
                    "input", flat=True
                )
                return {p for i in runs for p in i["paths"]}

            deadline = time.monotonic() + SETTLE_S
            while time.monotonic() < deadline and len(seen()) < len(paths):
                time.sleep(0.25)
            time.sleep(2.0)  # anything late (or twice) arrives too
            runs = list(Run.objects.filter(id__gt=before, triggered_by="watch:bench"))
            named = [p for r in runs for p in r.input["paths"]]
            last = max((r.queued_at for r in runs), default=None)
            last_s = (last - datetime.fromtimestamp(ended, UTC)).total_seconds() if last else float("inf")
            rounds.append(
                {
                    "burst_s": round(ended - started, 2),
                    "runs": len(runs),
                    "missed": len(paths - set(named)),
                    "twice": len(named) - len(set(named)),
                    "last_run_after_burst_s": round(last_s, 2),
                }
            )
            print(f"  round {n + 1}: {rounds[-1]} · bare watchfiles {baseline[-1]}", flush=True)
    finally:
        common.stop(proc)
        log.close()
    missed = max(r["missed"] for r in rounds)
    twice = max(r["twice"] for r in rounds)
    last_med = statistics.median(r["last_run_after_burst_s"] for r in rounds)
    last_max = max(r["last_run_after_burst_s"] for r in rounds)
    bare_missed = statistics.median(b["missed"] for b in baseline)
    bare_last = statistics.median(b["last_after_burst_s"] for b in baseline)
    return {
        "files": FILES,
        "directories": DIRS,
        "rounds": rounds,
        "bare_watchfiles": baseline,
        "last_run_after_burst_median_s": last_med,
        "bare_watchfiles_missed_median": bare_missed,
        "bare_watchfiles_last_event_after_burst_median_s": bare_last,
        "targets": [
            {
                "name": f"{FILES:,} files in {DIRS:,} new directories: missed",
                "value": missed,
                "target": "0",
                "ok": missed == 0,
            },  # fmt: skip
            {"name": "files named by two runs", "value": twice, "target": "0", "ok": twice == 0},
            {
                "name": "last run enqueued after the burst ends (median / worst)",
                "value": f"{last_med:.2f} s / {last_max:.2f} s "
                f"(bare watchfiles' last event {bare_last:.2f} s, it missed {bare_missed:,.0f})",
                "target": "≤ 5 s",
                "ok": last_max <= 5.0,
            },
        ],
    }
