"""The engine's own cost per no-op run, without Celery or a second process: N no-op runs queued
with ``enqueue_many``, then drained in this process by ``queue.start_runs`` (what one dispatch
task does: claim, start, complete, each completion in the next claim's transaction). Median of
BENCH_DRAIN_ROUNDS (3) rounds of BENCH_DRAIN_N (3,000) runs, in runs/s and ms per run.
BENCH_DRAIN_PROCESSES (1): that many forked processes drain the same queue at once (two are what
``python -m bench queue``'s two workers do, without Celery), to measure what they cost each other.

A diagnostic for issue 9's throughput figure (``python -m bench queue`` compares two Celery
workers with bare Celery): it shows what the engine costs per run when nothing else competes,
so a change to the claim or completion path can be measured without the two workers' noise.
Informational: no target of its own."""

from __future__ import annotations

import os
import statistics
import time

from bench._common import setup

N = int(os.environ.get("BENCH_DRAIN_N", 3000))
ROUNDS = int(os.environ.get("BENCH_DRAIN_ROUNDS", 3))
PROCESSES = int(os.environ.get("BENCH_DRAIN_PROCESSES", 1))


def _drain_in_children(n: int) -> float:
    """PROCESSES forked drainers released at once; the seconds until the last one finished."""
    import multiprocessing

    from django.db import connections

    from scheduler import queue

    context = multiprocessing.get_context("fork")
    go, done = context.Event(), context.Queue()

    def drain(index: int) -> None:
        go.wait()
        started, _ = queue.start_runs(time.monotonic() + 600, worker=f"bench-drain-{index}@local")
        done.put((started, time.perf_counter()))

    connections.close_all()  # each child opens its own
    children = [context.Process(target=drain, args=(i,)) for i in range(PROCESSES)]
    for child in children:
        child.start()
    time.sleep(0.5)  # every child is waiting
    started_at = time.perf_counter()
    go.set()
    results = [done.get(timeout=600) for _ in children]
    for child in children:
        child.join()
    assert sum(started for started, _ in results) == n, results
    return max(ended for _, ended in results) - started_at


def run() -> dict:
    setup("queue_drain")
    from bench.bench_queue import drain_broker
    from scheduler import queue
    from scheduler.models import Run

    rates = []
    for round_ in range(ROUNDS):
        Run.objects.all().delete()
        for first in range(0, N, 100):
            queue.enqueue_many([{"kind": "noop"}] * min(100, N - first))
        drain_broker()  # the wake-ups: this process drains, no worker runs
        if PROCESSES > 1:
            elapsed = _drain_in_children(N)
        else:
            started_at = time.perf_counter()
            started, _ = queue.start_runs(time.monotonic() + 600, worker="bench-drain@local")
            elapsed = time.perf_counter() - started_at
            assert started == N
        assert Run.objects.filter(status="succeeded").count() == N
        rates.append(N / elapsed)
        print(f"  round {round_ + 1}/{ROUNDS}: {N} runs in {elapsed:.2f} s ({N / elapsed:.0f}/s)", flush=True)
    median = statistics.median(rates)
    print(f"  median {median:.0f} runs/s ({1000 / median:.2f} ms per run), n={N}, processes={PROCESSES}")
    Run.objects.all().delete()
    return {
        "n": N,
        "rounds": ROUNDS,
        "processes": PROCESSES,
        "runs_per_s": [round(r, 1) for r in rates],
        "median_runs_per_s": round(median, 1),
    }
