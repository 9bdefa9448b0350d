"""Batch metrics kept in Redis, so they add up across worker processes and restarts, and every
web instance's /metrics reports the same numbers."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from agentflow.lib.redis import get_redis, key

from . import registry
from .models import BatchRun

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
