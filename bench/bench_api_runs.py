"""Issue 9, the ops API under load, over a real Daphne on a free loopback port.

1. ``POST /api/v1/runs/`` ({"job": a no-op job}) with an operator API token, open loop at
   RATE requests/s for DURATION s: request i is due at t0 + i / RATE whatever happened before
   it, and its latency is measured from that due time (not from when a client thread got to
   send it), so a slow server is not hidden by the generator waiting for it (coordinated
   omission). Target: p99 ≤ 20 ms at 200 requests/s for 30 s, 0 errors. No worker runs: the
   runs just queue (each one's wake-up message goes to Redis).
2. ``GET /api/v1/queue/status/`` with 100,000 runs in the table (bench_queue_page's rows:
   every state and priority), closed loop, one request at a time. Target: p95 ≤ 50 ms.

Sizes: BENCH_API_RATE (200), BENCH_API_SECONDS (30), BENCH_API_CLIENTS (64 threads, each with
its own keep-alive connection), BENCH_API_STATUS_REQUESTS (300), BENCH_API_WEB_PROCESSES (1: more
are Daphne processes sharing one listening socket, ``daphne --fd``). The database is the bench
SQLite (fresh), or PostgreSQL with BENCH_DATABASE_URL (its tables are emptied first)."""

from __future__ import annotations

import http.client
import io
import itertools
import json
import os
import threading
import time
from typing import Any

from bench import _common as common

RATE = float(os.environ.get("BENCH_API_RATE", 200))
SECONDS = float(os.environ.get("BENCH_API_SECONDS", 30))
CLIENTS = int(os.environ.get("BENCH_API_CLIENTS", 64))
STATUS_REQUESTS = int(os.environ.get("BENCH_API_STATUS_REQUESTS", 300))
# Web processes sharing one listening socket (daphne --fd; README "Scaling out"), 1 by default.
WEB_PROCESSES = int(os.environ.get("BENCH_API_WEB_PROCESSES", 1))
JOB = "bench-noop"
TARGET_POST_P99_MS = 20
TARGET_STATUS_P95_MS = 50


def operator_token() -> str:
    """An operator user and a token issued by ``manage.py create_api_token`` (printed once)."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from scheduler import roles

    user, _ = get_user_model().objects.get_or_create(username="bench-api")
    roles.assign(user, roles.Role.OPERATOR)
    out = io.StringIO()
    call_command(
        "create_api_token", "bench api", user=user.username, role="operator", stdout=out, stderr=io.StringIO()
    )
    return out.getvalue().strip()


def empty_tables() -> None:
    from scheduler.models import Attempt, Job, QueuePause, Run

    for model in (Attempt, Run, QueuePause, Job):
        model.objects.all().delete()


class Client:
    """One keep-alive connection; reconnects after an error."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.headers = port, {"Authorization": f"Bearer {token}", "Host": "localhost"}
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise


def open_loop(port: int, token: str, rate: float, seconds: float, clients: int) -> dict[str, Any]:
    """RATE POSTs/s for SECONDS; latency from each request's due time."""
    total = int(rate * seconds)
    body = json.dumps({"job": JOB}).encode()
    counter = itertools.count()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    late_sends: list[float] = []
    lock = threading.Lock()
    t0 = time.perf_counter() + 0.5

    def worker() -> None:
        client = Client(port, token)
        while (i := next(counter)) < total:
            due = t0 + i / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            sent = time.perf_counter()
            try:
                status, _ = client.request("POST", "/api/v1/runs/", body)
                label = str(status)
            except (OSError, http.client.HTTPException) as exc:
                label = type(exc).__name__
            done = time.perf_counter()
            with lock:
                latencies.append((done - due) * 1000)
                late_sends.append((sent - due) * 1000)
                statuses[label] = statuses.get(label, 0) + 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - t0
    errors = sum(n for label, n in statuses.items() if label != "201")
    return {
        "requests": total,
        "rate_target": rate,
        "rate_achieved": round(total / elapsed, 1),
        "statuses": statuses,
        "errors": errors,
        "p50_ms": round(common.percentile(latencies, 50), 2),
        "p95_ms": round(common.percentile(latencies, 95), 2),
        "p99_ms": round(common.percentile(latencies, 99), 2),
        "max_ms": round(max(latencies), 2),
        "client_send_late_p99_ms": round(common.percentile(late_sends, 99), 2),
    }


def closed_loop(port: int, token: str, path: str, n: int, warmup: int = 20) -> dict[str, Any]:
    client = Client(port, token)
    latencies, bad = [], 0
    for i in range(warmup + n):
        started = time.perf_counter()
        status, _ = client.request("GET", path)
        if i >= warmup:
            latencies.append((time.perf_counter() - started) * 1000)
            bad += status != 200
    return {
        "requests": n,
        "non_200": bad,
        "p50_ms": round(common.percentile(latencies, 50), 2),
        "p95_ms": round(common.percentile(latencies, 95), 2),
        "max_ms": round(max(latencies), 2),
    }


def run() -> dict:
    common.setup("api_runs")
    from django.db import connection

    from bench.bench_queue import drain_broker
    from bench.bench_queue_page import RUNS, build_runs
    from scheduler.models import Job, Run

    empty_tables()
    token = operator_token()
    Job.objects.create(name=JOB, kind="noop", params={})
    env = common.server_env()
    with common.daphnes(env, WEB_PROCESSES, name="api-runs-daphne") as (procs, url):
        port = int(url.rsplit(":", 1)[1])
        warm = Client(port, token)
        for _ in range(50):
            status, body = warm.request("POST", "/api/v1/runs/", json.dumps({"job": JOB}).encode())
            if status != 201:
                raise RuntimeError(f"POST /api/v1/runs/ answered {status}: {body[:300]!r}")
        Run.objects.all().delete()
        cpu_before = sum(common.cpu_seconds(p.pid) for p in procs)
        post = open_loop(port, token, RATE, SECONDS, CLIENTS)
        cpu_after = sum(common.cpu_seconds(p.pid) for p in procs)
        post["server_cpu_ms_per_request"] = round((cpu_after - cpu_before) * 1000 / post["requests"], 2)
        post["web_processes"] = len(procs)
        post["runs_queued"] = Run.objects.filter(status="queued").count()
        print(f"  POST runs/: {post}", flush=True)

        empty_tables()
        started = time.perf_counter()
        build_runs()
        if connection.vendor == "sqlite":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        else:
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE scheduler_run")
        print(f"  data: {Run.objects.count():,} runs in {time.perf_counter() - started:.1f} s", flush=True)
        status_figures = closed_loop(port, token, "/api/v1/queue/status/", STATUS_REQUESTS)
        print(f"  GET queue/status/: {status_figures}", flush=True)
    drain_broker()  # the runs' wake-up messages (no worker consumed them)
    exceptions: dict[str, int] = {}
    for log in (
        ["api-runs-daphne"] if WEB_PROCESSES <= 1 else [f"api-runs-daphne-{i}" for i in range(WEB_PROCESSES)]
    ):
        for message, n in common.app_exceptions(log).items():
            exceptions[message] = exceptions.get(message, 0) + n
    return {
        "database": connection.vendor,
        "web_processes": WEB_PROCESSES,
        "post_runs": post,
        "queue_status": {"runs_in_table": RUNS, **status_figures},
        "server_exceptions": exceptions,
        "targets": [
            {"name": f"POST runs/ p99 ms at {RATE:g}/s for {SECONDS:g} s", "value": post["p99_ms"],
             "target": f"<= {TARGET_POST_P99_MS}", "ok": post["p99_ms"] <= TARGET_POST_P99_MS},
            {"name": "POST runs/ errors", "value": post["errors"], "target": "0",
             "ok": post["errors"] == 0 and post["runs_queued"] == post["requests"]},
            {"name": f"GET queue/status/ p95 ms, {RUNS:,} runs", "value": status_figures["p95_ms"],
             "target": f"<= {TARGET_STATUS_P95_MS}",
             "ok": status_figures["p95_ms"] <= TARGET_STATUS_P95_MS and status_figures["non_200"] == 0},
        ],
    }  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
