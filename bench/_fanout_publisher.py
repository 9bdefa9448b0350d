"""The fan-out benchmark's publisher process.

    python -m bench._fanout_publisher agentflow GATEWAY_ID    (agentflow.lib.broadcast, this env's layer)
    python -m bench._fanout_publisher bare WS_URL             (a websocket to the bare server's /publish)

Commands on stdin: ``step STEP RATE_MSGS_PER_S DURATION_S`` sends RATE×DURATION messages on a fixed
schedule (one at a time, like the gateway listener), then an end marker, and prints a JSON line;
``quit`` exits. Every message is a ``sessions.changed`` event with ``step``, ``n`` and ``sent_at``
(ms since the epoch, taken just before the send); through AgentFlow it also carries broadcast's
per-group ``seq``."""

from __future__ import annotations

import asyncio
import json
import sys
import time

MAX_LIFETIME_S = 900
MAX_STEP_S = 120
MAX_RATE = 1000  # messages/s (x100 clients = 100,000 deliveries/s): a bound, never a target


def changes(n: int) -> list[dict]:
    return [
        {
            "session_key": f"agent:main:bench-{n % 50}",
            "agent_id": "main",
            "status": "active",
            "has_active_run": True,
        }
    ]


async def agentflow_sender(gateway_id: int):
    import django

    django.setup()
    from agentflow.lib import broadcast
    from fleet import live

    group = live.gateway_group(gateway_id)

    async def send(**fields) -> None:
        # publish(): the declared event plus the benchmark's own timing fields.
        await broadcast.publish(
            live.SESSIONS_CHANGED,
            group,
            {"gateway_id": gateway_id, "changes": changes(fields.get("n", 0)), **fields},
        )

    return send, None


async def bare_sender(url: str):
    from websockets.asyncio.client import connect

    ws = await connect(url, compression=None, open_timeout=10)

    async def send(**fields) -> None:
        message = {
            "gateway_id": 1,
            "changes": changes(fields.get("n", 0)),
            **fields,
            "type": "sessions.changed",
        }
        await ws.send(json.dumps(message, separators=(",", ":")))

    return send, ws


async def run_step(send, step: int, rate: float, duration: float) -> dict:
    rate = min(rate, MAX_RATE)
    count = int(rate * min(duration, MAX_STEP_S))
    interval = 1 / rate
    start = time.perf_counter() + 0.05
    behind = 0.0
    for n in range(count):
        delay = start + n * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            behind = max(behind, -delay)
        await send(step=step, n=n, sent_at=time.time() * 1000)
    elapsed = time.perf_counter() - start
    await asyncio.sleep(0.3)
    await send(step=step, n=-1, end=True, sent_at=time.time() * 1000)
    return {
        "step": step,
        "sent": count,
        "elapsed_s": round(elapsed, 2),
        "max_behind_ms": round(behind * 1000, 1),
    }


async def main(mode: str, target: str) -> None:
    send, ws = await (agentflow_sender(int(target)) if mode == "agentflow" else bare_sender(target))
    print(json.dumps({"ready": True}), flush=True)
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        parts = line.split()
        if not parts or parts[0] == "quit":
            break
        if parts[0] == "step":
            result = await run_step(send, int(parts[1]), float(parts[2]), float(parts[3]))
            print(json.dumps(result), flush=True)
    if ws is not None:
        await ws.close()


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2]), MAX_LIFETIME_S))
    except TimeoutError:
        sys.exit(2)
