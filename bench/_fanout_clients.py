"""The fan-out benchmark's websocket clients: N connections in one asyncio process.

    python -m bench._fanout_clients URL --clients 100 [--cookie SESSIONID] [--origin ORIGIN]

Prints one JSON line when every client is connected, then answers commands on stdin:

    report STEP COUNT   wait (<= 5 s) for every client to see STEP's end marker, print STEP's stats
    quit                close every connection and exit

Each message carries ``step``, ``n`` (0..COUNT-1) and ``sent_at`` (ms since the epoch, taken by
the publisher just before it sent); latency is receive time minus ``sent_at`` (same clock). A message
counts as lost when it has not arrived by the report (the end marker, or at most 5 s)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import defaultdict

from websockets.asyncio.client import connect

MAX_LIFETIME_S = 900  # a runaway parent never leaves this process behind for long
REPORT_WAIT_S = 5.0


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class Client:
    def __init__(self) -> None:
        self.received: dict[int, list[tuple[int, float]]] = defaultdict(list)
        self.ended: set[int] = set()
        self.closed: str | None = None


async def run_client(
    args: argparse.Namespace, client: Client, ready: asyncio.Semaphore, connected: list
) -> None:
    headers = {"Cookie": f"sessionid={args.cookie}"} if args.cookie else None
    try:
        async with ready:
            ws = await connect(
                args.url,
                origin=args.origin,
                additional_headers=headers,
                compression=None,  # Daphne does not negotiate permessage-deflate either
                max_queue=None,
                open_timeout=30,
            )
        connected.append(client)
        async with ws:
            async for raw in ws:
                now = time.time() * 1000
                message = json.loads(raw)
                step = message.get("step")
                if step is None:
                    continue
                if message.get("end"):
                    client.ended.add(step)
                else:
                    client.received[step].append((message["n"], now - message["sent_at"]))
            client.closed = f"closed {ws.close_code}"
    except Exception as exc:
        client.closed = f"{type(exc).__name__}: {exc}"


def step_stats(clients: list[Client], step: int, count: int) -> dict:
    latencies: list[float] = []
    lost = duplicated = reordered = clients_with_loss = 0
    for client in clients:
        rows = client.received.pop(step, [])
        highest = -1
        seen: set[int] = set()
        for n, latency in rows:
            latencies.append(latency)
            if n in seen:
                duplicated += 1
            seen.add(n)
            if n < highest:
                reordered += 1
            highest = max(highest, n)
        missing = count - len(seen & set(range(count)))
        lost += missing
        clients_with_loss += missing > 0
    latencies.sort()
    return {
        "step": step,
        "clients": len(clients),
        "expected_deliveries": count * len(clients),
        "deliveries": len(latencies),
        "lost": lost,
        "clients_with_loss": clients_with_loss,
        "duplicated": duplicated,
        "reordered": reordered,
        "ended": sum(1 for c in clients if step in c.ended),
        "closed": sorted({c.closed for c in clients if c.closed}),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p90_ms": round(percentile(latencies, 90), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(latencies[-1], 2) if latencies else None,
        "mean_ms": round(sum(latencies) / len(latencies), 2) if latencies else None,
    }


async def main(args: argparse.Namespace) -> None:
    clients = [Client() for _ in range(args.clients)]
    connected: list[Client] = []
    gate = asyncio.Semaphore(20)
    started = time.perf_counter()
    tasks = [asyncio.create_task(run_client(args, c, gate, connected)) for c in clients]
    deadline = time.monotonic() + 60
    while len(connected) + sum(1 for c in clients if c.closed) < len(clients) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    print(
        json.dumps(
            {
                "connected": len(connected),
                "connect_s": round(time.perf_counter() - started, 2),
                "errors": sorted({c.closed for c in clients if c.closed}),
            }
        ),
        flush=True,
    )
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        parts = line.split()
        if not parts or parts[0] == "quit":
            break
        if parts[0] == "report":
            step, count = int(parts[1]), int(parts[2])
            until = time.monotonic() + REPORT_WAIT_S
            while time.monotonic() < until and any(step not in c.ended and not c.closed for c in clients):
                await asyncio.sleep(0.05)
            print(json.dumps(step_stats(clients, step, count)), flush=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--cookie", default="")
    parser.add_argument("--origin", default=None)
    ns = parser.parse_args()
    try:
        asyncio.run(asyncio.wait_for(main(ns), MAX_LIFETIME_S))
    except TimeoutError:
        sys.exit(2)
