"""Batch metrics kept in Redis, so they add up across worker processes and restarts, and every
web instance's /metrics reports the same numbers."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from agentflow.lib.redis import get_redis, key

from . import registry

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
    def collect(self) -> Iterator[Metric]:
        client = get_redis()
        count = CounterMetricFamily(
            "batch_execution_count", "Batch runs by status", labels=["batch", "status"]
        )
        for field, value in _decode(client.hgetall(key("metrics", "batch_count"))).items():
            batch, _, status = field.partition("|")
            count.add_metric([batch, status], float(value))
        yield count
        errors = CounterMetricFamily("batch_error_count", "Batch runs that failed", labels=["batch"])
        for batch, value in _decode(client.hgetall(key("metrics", "batch_errors"))).items():
            errors.add_metric([batch], float(value))
        yield errors
        hist = HistogramMetricFamily(
            "batch_execution_duration_seconds", "Batch run duration", labels=["batch"]
        )
        for batch in registry.batch_ids():
            data = _decode(client.hgetall(key("metrics", "batch_duration", batch)))
            if not data:
                continue
            buckets = [(str(b), float(data.get(str(b), 0))) for b in BUCKETS] + [
                ("+Inf", float(data["+Inf"]))
            ]
            hist.add_metric([batch], buckets, float(data.get("sum", 0)))
        yield hist
