"""Issue 2: ``health`` round trips on one connection (p50 <= 5 ms, p99 <= 20 ms over 1,000
calls) and 200 concurrent in-flight requests correlated correctly, against a real local gateway."""

from __future__ import annotations

import asyncio
import secrets
import statistics
import tempfile
import time

from demo.gateway import DemoGateway, ensure_installed
from openclaw import GatewayClient
from tests.support.ports import free_port_block


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def measure(url: str, token: str) -> dict:
    client = GatewayClient(url, token)
    await client.connect()
    try:
        for _ in range(50):  # warm-up
            await client.health()
        samples = []
        for _ in range(1000):
            started = time.perf_counter()
            await client.health()
            samples.append((time.perf_counter() - started) * 1000)
        keys = [f"agent:main:bench-{i}" for i in range(200)]
        started = time.perf_counter()
        results = await asyncio.gather(*[client.chat_history(k, limit=1) for k in keys])
        concurrent_ms = (time.perf_counter() - started) * 1000
        correlated = sum(1 for k, r in zip(keys, results, strict=True) if r.get("sessionKey") == k)
    finally:
        await client.close()
    return {
        "health_p50_ms": round(statistics.median(samples), 2),
        "health_p99_ms": round(percentile(samples, 99), 2),
        "health_mean_ms": round(statistics.fmean(samples), 2),
        "concurrent_200_ms": round(concurrent_ms, 1),
        "concurrent_200_correlated": correlated,
    }


def run() -> dict:
    ensure_installed()
    with (
        tempfile.TemporaryDirectory() as state,
        DemoGateway(state, free_port_block(), secrets.token_hex(16)) as gw,
    ):
        figures = asyncio.run(measure(gw.url, gw.token))
    figures["targets"] = [
        {
            "name": "health p50 (ms)",
            "value": figures["health_p50_ms"],
            "target": "<= 5",
            "ok": figures["health_p50_ms"] <= 5,
        },
        {
            "name": "health p99 (ms)",
            "value": figures["health_p99_ms"],
            "target": "<= 20",
            "ok": figures["health_p99_ms"] <= 20,
        },
        {
            "name": "200 concurrent requests correlated",
            "value": figures["concurrent_200_correlated"],
            "target": "200",
            "ok": figures["concurrent_200_correlated"] == 200,
        },
    ]
    return figures
