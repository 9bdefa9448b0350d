"""The flow tracers (issue 12): for each of none, console, SQLite and OpenTelemetry (OTLP over gRPC
and over HTTP, into the tests' OTLP receiver process on loopback):

- start-up: a fresh interpreter importing the tracer's module, building and connecting it (median
  of BENCH_TRACER_STARTS, 9), "none" being the import of the interface alone;
- sustained spans/s: BENCH_TRACER_SPANS (20,000) spans recorded in flushes of 500 (the SQLite
  tracer's batch), until written (SQLite, console to /dev/null) or until the receiver has decoded
  all of them (OTLP); bytes per 1,000 spans of the SQLite file after a checkpoint;
- the overhead per flow step: a flow of BENCH_TRACER_STEPS (20) ``set`` steps through
  ``flows.api.run`` with each tracer, median of BENCH_TRACER_FLOWS (5) runs each, interleaved,
  minus the same with no tracer, in the same run; also OTLP to a receiver that is down (a closed
  port), which must cost a step no more than a live one (no step waits on an export).

Target: SQLite ≥ 20,000 spans/s."""

from __future__ import annotations

import logging
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import _common as common

STARTS = int(os.environ.get("BENCH_TRACER_STARTS", 9))
SPANS = int(os.environ.get("BENCH_TRACER_SPANS", 20_000))
STEPS = int(os.environ.get("BENCH_TRACER_STEPS", 20))
FLOWS = int(os.environ.get("BENCH_TRACER_FLOWS", 5))
CHUNK = 500

STARTUP = """
import sys, time
t = time.perf_counter()
from flows.tracing import make
tracer = make(sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:]))
tracer.connect()
print((time.perf_counter() - t) * 1000)
"""


def _startup_ms(name: str, args: dict[str, str]) -> float:
    argv = [sys.executable, "-c", STARTUP, name, *(f"{k}={v}" for k, v in args.items())]
    times = []
    for _ in range(STARTS):
        out = subprocess.run(argv, cwd=common.ROOT, capture_output=True, text=True, check=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return round(statistics.median(times), 1)


def _span(i: int, trace: str):
    from flows.tracing import SpanData

    now = time.time_ns()
    return SpanData(trace, f"{i + 1:016x}", f"step s{i % 20}", now, now + 1000, "00f067aa0ba902b7",
                    attributes={"flow.step.type": "set", "flow.step.attempts": 1})  # fmt: skip


def _throughput(tracer, receiver=None) -> float:
    from flows.tracing import new_trace_id

    trace = new_trace_id()
    tracer.connect()
    started = time.perf_counter()
    for i in range(SPANS):
        tracer.record_span(_span(i, trace))
        if (i + 1) % CHUNK == 0:
            tracer.flush()
    tracer.flush()
    if receiver is not None:
        got = receiver.wait_for(SPANS, timeout=120)
        assert len(got) >= SPANS, f"the receiver has {len(got)} of {SPANS} spans"
    elapsed = time.perf_counter() - started
    tracer.close()
    return round(SPANS / elapsed)


FLOW = "name: bench\npreset: dev\nsteps:\n" + "".join(
    f"  - {{id: s{i}, type: set, with: {{values: {{v{i}: {i}}}}}}}\n" for i in range(STEPS)
)


def run() -> dict:
    common.setup("tracers")
    from django.conf import settings

    from flows import api, engine
    from flows.models import FlowRun
    from flows.tracing.console import ConsoleTracer
    from flows.tracing.otel import OTelTracer
    from flows.tracing.sqlite import SQLiteTracer
    from scheduler.models import Run
    from tests.support import otlp
    from tests.support.ports import closed_port

    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)  # the down receiver's errors
    tmp = Path(tempfile.mkdtemp(prefix="bench-tracers-"))
    settings.AGENTFLOW_FLOWS_ROOTS = [str(tmp)]
    receiver = otlp.start(tmp / "spans.jsonl")
    results: dict = {"spans": SPANS, "steps": STEPS, "flows": FLOWS}
    try:
        _startup_ms("none", {})  # a warm-up: the first interpreter reads every file from disk
        baseline = _startup_ms("none", {})
        startup = {
            "none": baseline,
            "console": _startup_ms("console", {}),
            "sqlite": _startup_ms("sqlite", {"db_path": str(tmp / "start.db")}),
            "otel_grpc": _startup_ms("otel", {"exporter_endpoint": receiver.grpc_url}),
            "otel_http": _startup_ms("otel", {"exporter_endpoint": receiver.http_url, "protocol": "http"}),
        }
        results["startup_ms"] = startup
        print(f"  start-up (import, build, connect; median of {STARTS}): {startup}")

        db = tmp / "throughput.db"
        rates = {
            "sqlite": _throughput(SQLiteTracer(db, batch_size=CHUNK)),
            "console": _throughput(ConsoleTracer(open(os.devnull, "w"))),  # noqa: SIM115
        }
        with sqlite3.connect(db) as conn:
            conn.execute("pragma wal_checkpoint(truncate)")
        size = sum(p.stat().st_size for p in tmp.glob("throughput.db*"))
        results["sqlite_bytes_per_1000_spans"] = round(size / (SPANS / 1000))
        for protocol, url in (("grpc", receiver.grpc_url), ("http", receiver.http_url)):
            (tmp / "spans.jsonl").write_text("")
            rates[f"otel_{protocol}"] = _throughput(OTelTracer(url, protocol=protocol), receiver)
        results["spans_per_s"] = rates
        print(
            f"  sustained spans/s: {rates}; SQLite {results['sqlite_bytes_per_1000_spans']} B per 1,000 spans"
        )

        (tmp / "flow.yaml").write_text(FLOW)
        variants = {
            "none": ("none", {}),
            "console": ("console", {"stream": "stderr"}),
            "sqlite": ("sqlite", {"db_path": str(tmp / "flows.db")}),
            "otel_grpc": ("otel", {"exporter_endpoint": receiver.grpc_url}),
            "otel_down": ("otel", {"exporter_endpoint": f"http://127.0.0.1:{closed_port()}", "timeout": "2"}),
        }
        per_step: dict[str, list[float]] = {k: [] for k in variants}
        stderr, sys.stderr = sys.stderr, open(os.devnull, "w")  # noqa: SIM115 (the console tracer's lines)
        try:
            for _ in range(FLOWS + 1):  # the first round warms up and is dropped
                for key, (name, args) in variants.items():
                    started = time.perf_counter()
                    result = api.run(str(tmp / "flow.yaml"), {}, tracer=name, tracer_args=args)
                    elapsed = time.perf_counter() - started
                    assert result.status == "succeeded", result.error
                    per_step[key].append(elapsed * 1000 / STEPS)
        finally:
            sys.stderr = stderr
        engine.close_tracers()
        med = {k: round(statistics.median(v[1:]), 2) for k, v in per_step.items()}
        results["per_step_ms"] = med
        results["per_step_overhead_ms"] = {
            k: round(v - med["none"], 2) for k, v in med.items() if k != "none"
        }
        print(f"  per flow step (median of {FLOWS} flows of {STEPS} steps): {med} ms")
        print(f"  overhead per step against no tracer: {results['per_step_overhead_ms']} ms")
        FlowRun.objects.all().delete()
        Run.objects.filter(kind="flow").delete()
    finally:
        receiver.stop()
    results["targets"] = [
        {"name": "SQLite spans/s (batched)", "value": rates["sqlite"], "target": ">= 20000",
         "ok": rates["sqlite"] >= 20_000},
        {"name": "OTLP down: per-step cost vs live (no step waits on an export)",
         "value": f"{med['otel_down']} vs {med['otel_grpc']} ms",
         "target": "<= live + 2 ms", "ok": med["otel_down"] <= med["otel_grpc"] + 2},
    ]  # fmt: skip
    return results
