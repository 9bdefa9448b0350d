"""Issue 9, the queue page: with 100,000 runs in the table, GET /queue/ (and its live fragment)
server time (Django test Client, no network) p95 <= 100 ms with <= 10 SQL queries.

The runs: 100,000 rows over the last day, 95 % finished (succeeded, a few failed / cancelled /
lost), the rest waiting or running across the four priorities, 3,000 of them finished in the
last hour (the throughput and wait sparklines), a few blocked on one provider; one pause."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

from bench import _common as common
from bench.bench_pages import measure

RUNS = 100_000
LAST_HOUR = 3000
TARGET_P95_MS = 100
TARGET_QUERIES = 10


def build_runs() -> None:
    from scheduler.models import Job, QueuePause, Run

    rng = random.Random(9)
    now = datetime.now(UTC)
    job = Job.objects.create(name="bench-queue", kind="noop", params={})
    priorities = ["urgent", "high", "normal", "normal", "normal", "low"]
    batch: list[Run] = []
    for i in range(RUNS):
        priority = rng.choice(priorities)
        if i < RUNS - 5000:
            recent = i >= RUNS - 5000 - LAST_HOUR
            finished = now - timedelta(seconds=rng.uniform(0, 3500) if recent else rng.uniform(3700, 86400))
            started = finished - timedelta(seconds=rng.uniform(0.1, 20))
            queued = started - timedelta(seconds=rng.uniform(0, 30))
            status = rng.choices(["succeeded", "failed", "cancelled", "lost"], [90, 6, 3, 1])[0]
            run = Run(job=job, job_name=job.name, kind="noop", priority=priority, status=status,
                      queued_at=queued, started_at=started, finished_at=finished, attempts=1)  # fmt: skip
        else:
            status = rng.choices(["queued", "scheduled", "parked", "running", "blocked"], [70, 10, 10, 8, 2])[
                0
            ]
            queued = now - timedelta(seconds=rng.uniform(0, 900))
            started = queued + timedelta(seconds=5) if status == "running" else None
            run = Run(job=job, job_name=job.name, kind="noop", priority=priority, status=status,
                      queued_at=queued, started_at=started,
                      gateway="1", agent="main", provider="anthropic" if status == "blocked" else "",
                      error="401: provider session expired" if status == "blocked" else "")  # fmt: skip
        batch.append(run)
        if len(batch) == 5000:
            Run.objects.bulk_create(batch)
            batch = []
    if batch:
        Run.objects.bulk_create(batch)
    QueuePause.objects.create(scope="job", value="nightly-cleanup", who="bench")


def run() -> dict:
    common.setup("queue_page")
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from scheduler import roles
    from scheduler.models import Attempt, Job, QueuePause, Run

    for model in (Attempt, Run, QueuePause, Job):
        model.objects.all().delete()
    started = time.perf_counter()
    build_runs()
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    print(f"  data: {Run.objects.count():,} runs in {time.perf_counter() - started:.1f} s", flush=True)
    user, _ = get_user_model().objects.get_or_create(username="bench-queue")
    roles.assign(user, roles.Role.OPERATOR)
    client = Client(SERVER_NAME="localhost")
    client.force_login(user)
    pages = {
        "queue": measure(client, "/queue/"),
        "fragment_queue": measure(client, "/fragments/queue/", {"HX-Request": "true"}),
        "runs_list": measure(client, "/runs/"),
        "runs_failed_high": measure(client, "/runs/?status=failed&priority=high"),
    }
    queue = pages["queue"]
    return {
        "runs": RUNS,
        "database": connection.vendor,
        "pages": pages,
        "targets": [
            {"name": "queue page p95 ms", "value": queue["p95_ms"], "target": TARGET_P95_MS,
             "ok": queue["p95_ms"] <= TARGET_P95_MS},
            {"name": "queue page queries", "value": queue["queries"], "target": TARGET_QUERIES,
             "ok": queue["queries"] <= TARGET_QUERIES},
        ],
    }  # fmt: skip


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
