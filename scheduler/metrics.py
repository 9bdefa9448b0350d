"""Batch and run metrics kept in Redis, so they add up across worker processes and restarts, and
every web instance's /metrics reports the same numbers."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from agentflow.lib.redis import get_redis, key, write_pipeline

from . import actions, registry
from .models import BatchRun, Job, Priority, Run

log = logging.getLogger("agentflow.scheduler")

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def record(batch: str, status: str, duration_s: float) -> None:
    try:
        pipe = get_redis().pipeline(transaction=False)
        pipe.hincrby(key("metrics", "batch_count"), f"{batch}|{status}", 1)
        if status == "error":
            pipe.hincrby(key("metrics", "batch_errors"), batch, 1)
        hist = key("metrics", "batch_duration", batch)
        for bound in BUCKETS:
            if duration_s <= bound:
                pipe.hincrby(hist, str(bound), 1)
        pipe.hincrby(hist, "+Inf", 1)
        pipe.hincrbyfloat(hist, "sum", duration_s)
        pipe.execute()
    except Exception:  # metrics must never break a batch
        log.warning("could not record batch metrics", exc_info=True)


def _decode(mapping: dict) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in mapping.items()
    }


class BatchCollector(Collector):
    """Every registered batch and every run status is exported, at 0 before its first run, so an
    alert rule such as ``increase(batch_error_count[1h]) > 0`` sees the series from the start."""

    def collect(self) -> Iterator[Metric]:
        client = get_redis()
        batches = registry.batch_ids()
        # Every way a run ends (a run is counted when it ends, so "running" has no series).
        ended = [s for s in BatchRun.Status.values if s != BatchRun.Status.RUNNING]
        counts = {(b, str(s)): 0.0 for b in batches for s in ended}
        for field, raw in _decode(client.hgetall(key("metrics", "batch_count"))).items():
            batch, _, status = field.partition("|")
            counts[(batch, status)] = float(raw)
        count = CounterMetricFamily(
            "batch_execution_count", "Batch runs by status", labels=["batch", "status"]
        )
        for (batch, status), n in sorted(counts.items()):
            count.add_metric([batch, status], n)
        yield count
        failed = dict.fromkeys(batches, 0.0)
        failed.update(
            {b: float(v) for b, v in _decode(client.hgetall(key("metrics", "batch_errors"))).items()}
        )
        errors = CounterMetricFamily("batch_error_count", "Batch runs that failed", labels=["batch"])
        for batch, n in sorted(failed.items()):
            errors.add_metric([batch], n)
        yield errors
        hist = HistogramMetricFamily(
            "batch_execution_duration_seconds", "Batch run duration", labels=["batch"]
        )
        for batch in registry.batch_ids():
            data = _decode(client.hgetall(key("metrics", "batch_duration", batch)))
            buckets = [(str(b), float(data.get(str(b), 0))) for b in BUCKETS] + [
                ("+Inf", float(data.get("+Inf", 0)))
            ]
            hist.add_metric([batch], buckets, float(data.get("sum", 0)))
        yield hist


# --- the execution queue's runs (scheduler/queue.py) -------------------------------------------

# Waits and run times reach an hour (an agent run's default timeout is 10 minutes; a rate-limit
# backoff is up to 5): the default buckets stop at 10 s.
RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


def job_label(run: Run) -> str:
    """A bounded label: the job's name (the Job table), else the run's kind (the registry)."""
    return run.job_name or run.kind


def _bins_key(name: str, label: str) -> str:
    """Per-bucket (not cumulative) counts: one HINCRBY per observation, summed up on /metrics.
    The cumulative hash of ``key("metrics", name, label)`` (written before) is still read."""
    return key("metrics", f"{name}_bins", label)


def _observe(pipe: Any, name: str, label: str, value: float) -> None:
    bound = next((str(b) for b in RUN_BUCKETS if value <= b), "+Inf")
    hist = _bins_key(name, label)
    pipe.hincrby(hist, bound, 1)
    pipe.hincrbyfloat(hist, "sum", value)


def _histogram(cumulative: dict[str, str], bins: dict[str, str]) -> tuple[list[tuple[str, float]], float]:
    """Prometheus buckets and sum from the cumulative hash plus the per-bucket one."""
    buckets, running = [], 0.0
    for bound in [*map(str, RUN_BUCKETS), "+Inf"]:
        running += float(bins.get(bound, 0))
        buckets.append((bound, float(cumulative.get(bound, 0)) + running))
    return buckets, float(cumulative.get("sum", 0)) + float(bins.get("sum", 0))


def observe_run(run: Run) -> None:
    """A run reached a final state: count it and observe its wait and run time (in Redis, so
    every worker, the listener and the tick add up). Never raises."""
    try:
        pipe, execute = write_pipeline()  # inside redis.batched(): sent when the block ends
        pipe.hincrby(key("metrics", "runs"), f"{run.status}|{run.priority}|{job_label(run)}", 1)
        wait = run.wait_seconds
        if wait is not None:
            _observe(pipe, "run_wait", run.priority, max(0.0, wait))
        duration = run.execution_seconds
        if duration is not None:
            _observe(pipe, "run_duration", run.priority, max(0.0, duration))
        if execute:
            pipe.execute()
    except Exception:  # metrics must never break a run
        log.warning("could not record run metrics", exc_info=True)


def on_run_finished(sender: object, run: Run, **kwargs: object) -> None:
    observe_run(run)


class RunCollector(Collector):
    """``agentflow_runs_total{status,priority,job}`` (every final status x priority x job name
    or kind, at 0 before the first run), ``agentflow_queue_depth{priority,state}`` (from the
    database: waiting and running runs) and the wait and run-time histograms per priority."""

    def collect(self) -> Iterator[Metric]:
        client = get_redis()
        labels = sorted({*Job.objects.values_list("name", flat=True), *(a.key for a in actions.actions())})
        counts = {(s, p, j): 0.0 for s in Run.FINAL for p in Priority.values for j in labels}
        for field, raw in _decode(client.hgetall(key("metrics", "runs"))).items():
            status, _, rest = field.partition("|")
            priority, _, job = rest.partition("|")
            counts[(status, priority, job)] = float(raw)
        runs = CounterMetricFamily(
            "agentflow_runs", "Runs that reached a final state", labels=["status", "priority", "job"]
        )
        for (status, priority, job), n in sorted(counts.items()):
            runs.add_metric([status, priority, job], n)
        yield runs
        depth = {(p, s): 0 for p in Priority.values for s in Run.NOT_FINAL}
        for priority, by_status in Run.objects.filter(status__in=Run.NOT_FINAL).counts().items():
            for status, n in by_status.items():
                depth[(priority, status)] = n
        gauge = GaugeMetricFamily(
            "agentflow_queue_depth", "Runs waiting or running now", labels=["priority", "state"]
        )
        for (priority, status), n in sorted(depth.items()):
            gauge.add_metric([priority, status], n)
        yield gauge
        for name, metric, help_text in (
            ("run_wait", "agentflow_run_wait_seconds", "Queued to started, per priority"),
            ("run_duration", "agentflow_run_duration_seconds", "Started to finished, per priority"),
        ):
            hist = HistogramMetricFamily(metric, help_text, labels=["priority"])
            pipe = client.pipeline(transaction=False)
            for priority in Priority.values:
                pipe.hgetall(key("metrics", name, priority))
                pipe.hgetall(_bins_key(name, priority))
            replies = iter(pipe.execute())
            for priority in Priority.values:
                buckets, total = _histogram(_decode(next(replies)), _decode(next(replies)))
                hist.add_metric([priority], buckets, total)
            yield hist
