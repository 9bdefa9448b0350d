"""The engine's own cost per no-op run, without Celery or a second process: N no-op runs queued
with ``enqueue_many``, then drained in this process by ``queue.start_runs`` (what one dispatch
task does: claim, start, complete, each completion in the next claim's transaction). Median of
BENCH_DRAIN_ROUNDS (3) rounds of BENCH_DRAIN_N (3,000) runs, in runs/s and ms per run.

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
        started_at = time.perf_counter()
        started, _ = queue.start_runs(time.monotonic() + 600, worker="bench-drain@local")
        elapsed = time.perf_counter() - started_at
        assert started == N and Run.objects.filter(status="succeeded").count() == N
        rates.append(N / elapsed)
        print(f"  round {round_ + 1}/{ROUNDS}: {N} runs in {elapsed:.2f} s ({N / elapsed:.0f}/s)", flush=True)
    median = statistics.median(rates)
    print(f"  median {median:.0f} runs/s ({1000 / median:.2f} ms per run), n={N}")
    Run.objects.all().delete()
    return {
        "n": N,
        "rounds": ROUNDS,
        "runs_per_s": [round(r, 1) for r in rates],
        "median_runs_per_s": round(median, 1),
    }
