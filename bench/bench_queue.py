"""Issue 9: the execution queue against bare Celery, and the urgent latency.

1. Throughput: N no-op runs enqueue → claim → complete with 2 worker processes (solo pool),
   against N bare Celery no-op tasks on the same 2 workers in the same run. Target: the
   engine ≥ 0.5 × bare Celery. Twice: one ``queue.enqueue`` per run (one commit each), and
   ``queue.enqueue_many`` in chunks of BENCH_QUEUE_CHUNK (one commit, one wake-up per chunk).
2. Urgent latency: 1,000 normal runs queued, both slots busy with short runs (sleep_ms), 100
   urgent runs one after another: from the moment a slot frees (the previous attempt's
   finished_at on the worker that starts the urgent run) to the urgent attempt's start.
   Target: p99 ≤ 100 ms, and no normal run starts between the urgent commit and its start.

Sizes: BENCH_QUEUE_N (10000), BENCH_QUEUE_BACKLOG (1000), BENCH_QUEUE_TRIALS (100),
BENCH_QUEUE_SLEEP_MS (40), BENCH_QUEUE_CHUNK (100). On the bench SQLite database (AGENTFLOW_BENCH_DIR)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench._common import log_path, percentile, server_env, setup, stop

N = int(os.environ.get("BENCH_QUEUE_N", 10_000))
BACKLOG = int(os.environ.get("BENCH_QUEUE_BACKLOG", 1_000))
TRIALS = int(os.environ.get("BENCH_QUEUE_TRIALS", 100))
SLEEP_MS = int(os.environ.get("BENCH_QUEUE_SLEEP_MS", 40))
CHUNK = int(os.environ.get("BENCH_QUEUE_CHUNK", 100))
CELERY = str(Path(sys.executable).with_name("celery"))


def queues() -> list[str]:
    from django.conf import settings

    base = settings.CELERY_TASK_DEFAULT_QUEUE
    return [base, *(f"{base}.{p}" for p in ("urgent", "high", "normal", "low")), f"{base}.bare"]


def start_workers(n: int = 2) -> list[subprocess.Popen]:
    from django.conf import settings

    env = server_env()
    procs = []
    for i in range(n):
        log = log_path(f"queue-worker-{i}").open("wb")
        args = [
            CELERY,
            "-A",
            "agentflow",
            "worker",
            "--pool",
            "solo",
            "-n",
            f"bench{i}-{uuid.uuid4().hex[:6]}@%h",
        ]
        args += ["-Q", ",".join(queues()), "-I", "bench._queue_tasks", "-l", "WARNING"]
        args += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        procs.append(
            subprocess.Popen(args, cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
        )
    return procs


def wait_ready(procs: list[subprocess.Popen]) -> None:
    """Both workers consume: a bare task per worker ran."""
    from agentflow.lib.redis import get_redis, key
    from bench._queue_tasks import bare_noop

    client = get_redis()
    client.delete(key("bench", "bare"))
    deadline = time.monotonic() + 60
    while int(client.get(key("bench", "bare")) or 0) < 4:
        bare_noop.apply_async(queue=queues()[-1])
        time.sleep(0.5)
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError("the workers did not start: see var/bench-logs/queue-worker-*.log")


def drain_broker() -> None:
    from agentflow.lib.redis import get_redis

    for name in queues():
        get_redis().delete(name)


def bench_bare(n: int) -> float:
    from agentflow.lib.redis import get_redis, key
    from bench._queue_tasks import bare_noop

    client = get_redis()
    client.delete(key("bench", "bare"))
    started = time.perf_counter()
    for _ in range(n):
        bare_noop.apply_async(queue=queues()[-1])
    ENQUEUE_S["bare"] = time.perf_counter() - started
    while int(client.get(key("bench", "bare")) or 0) < n:
        time.sleep(0.01)
    return n / (time.perf_counter() - started)


ENQUEUE_S: dict[str, float] = {}  # how long the enqueue loops took (the rest: workers catching up)


def bench_engine(n: int, chunk: int = 0) -> float:
    """N no-op runs through ``queue.enqueue`` one by one, or (``chunk``) ``queue.enqueue_many``."""
    from scheduler import queue
    from scheduler.models import Run

    Run.objects.all().delete()
    started = time.perf_counter()
    if chunk:
        for first in range(0, n, chunk):
            queue.enqueue_many([{"kind": "noop"}] * min(chunk, n - first))
    else:
        for _ in range(n):
            queue.enqueue(kind="noop")
    ENQUEUE_S["engine_bulk" if chunk else "engine"] = time.perf_counter() - started
    while Run.objects.filter(status="succeeded").count() < n:
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    assert not Run.objects.exclude(status="succeeded").exists()
    return n / elapsed


def bench_urgent(backlog: int, trials: int, sleep_ms: int) -> dict:
    from datetime import timedelta

    from django.utils import timezone

    from scheduler import queue
    from scheduler.models import Attempt, Run

    Run.objects.all().delete()
    drain_broker()
    for _ in range(backlog):
        queue.enqueue(kind="noop", params={"sleep_ms": sleep_ms})
    time.sleep(0.5)  # both slots busy
    latencies, overtakes, skipped = [], 0, 0
    for _ in range(trials):
        if not Run.objects.filter(priority="normal", status="queued").exists():
            skipped += 1
            continue
        urgent = queue.enqueue(kind="noop", priority="urgent")
        committed = timezone.now()
        deadline = time.monotonic() + 10
        while (attempt := Attempt.objects.filter(run=urgent).first()) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("an urgent run did not start within 10 s")
            time.sleep(0.002)
        freed = (
            Attempt.objects.filter(worker=attempt.worker, finished_at__lte=attempt.started_at)
            .order_by("-finished_at")
            .values_list("finished_at", flat=True)
            .first()
        )
        if freed is None or freed < committed - timedelta(seconds=5):
            freed = committed  # the worker was idle: count from the commit
        latencies.append(max(0.0, (attempt.started_at - max(freed, committed)).total_seconds() * 1000))
        overtakes += Attempt.objects.filter(
            run__priority="normal", started_at__gt=committed, started_at__lt=attempt.started_at
        ).count()
        time.sleep(sleep_ms / 1000 * 1.5)
    left = Run.objects.filter(status="queued").count()
    return {
        "trials": len(latencies),
        "skipped_backlog_empty": skipped,
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(max(latencies), 1) if latencies else None,
        "normal_started_before_urgent": overtakes,
        "normal_left_queued_at_end": left,
    }


def run() -> dict:
    setup("queue")
    from scheduler.models import Run

    Run.objects.all().delete()
    drain_broker()
    procs = start_workers(2)
    try:
        wait_ready(procs)
        bare = bench_bare(N)
        engine = bench_engine(N)
        bulk = bench_engine(N, CHUNK)
        urgent = bench_urgent(BACKLOG, TRIALS, SLEEP_MS)
    finally:
        for proc in procs:
            stop(proc)
        drain_broker()
    ratio, bulk_ratio = engine / bare, bulk / bare
    print(f"  bare Celery {bare:.0f} tasks/s, engine {engine:.0f} runs/s (ratio {ratio:.2f}), n={N}")
    print(f"  engine, enqueue_many by {CHUNK}: {bulk:.0f} runs/s (ratio {bulk_ratio:.2f})")
    loops = f"bare {ENQUEUE_S['bare']:.1f} s, engine {ENQUEUE_S['engine']:.1f} s (of {N / engine:.1f} s)"
    loops += f", enqueue_many {ENQUEUE_S['engine_bulk']:.1f} s (of {N / bulk:.1f} s)"
    print(f"  enqueue loops: {loops}")
    print(f"  urgent latency: {urgent}")
    return {
        "n": N,
        "bare_tasks_per_s": round(bare, 1),
        "engine_runs_per_s": round(engine, 1),
        "ratio": round(ratio, 3),
        "chunk": CHUNK,
        "engine_bulk_runs_per_s": round(bulk, 1),
        "bulk_ratio": round(bulk_ratio, 3),
        "enqueue_s": {k: round(v, 2) for k, v in ENQUEUE_S.items()},
        "urgent": urgent,
        "targets": [
            {
                "name": "engine / bare Celery throughput",
                "value": round(ratio, 3),
                "target": ">= 0.5",
                "ok": ratio >= 0.5,
            },
            {
                "name": f"engine (enqueue_many by {CHUNK}) / bare Celery throughput",
                "value": round(bulk_ratio, 3),
                "target": ">= 0.5",
                "ok": bulk_ratio >= 0.5,
            },
            {
                "name": "urgent start after a slot frees, p99 ms",
                "value": urgent["p99_ms"],
                "target": "<= 100",
                "ok": urgent["p99_ms"] <= 100,
            },
            {
                "name": "normal runs started before the urgent one",
                "value": urgent["normal_started_before_urgent"],
                "target": "0",
                "ok": urgent["normal_started_before_urgent"] == 0,
            },
        ],
    }
