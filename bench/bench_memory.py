"""Issue 4, memory: a Daphne process serving 100 idle dashboard websockets grows <= 100 KB per
connection over its idle baseline (VmRSS from /proc/<pid>/status: warmed up with 1 connection,
then with 100, each after ~3 s to settle). A second round (close 99, reopen 99) shows whether the
memory is reused or keeps growing.

Idle dashboards must also stay connected: the 100 are held idle for 15 s and the ones the server
closed are counted; alongside, 20 idle receives on channel layers configured like the app's show
whether a blocking receive can fail on its own (a consumer whose receive raises is closed)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

from bench import _common as common

CONNECTIONS = 100
SETTLE_S = 3.0
IDLE_HOLD_S = 12.0  # more than two of the channel layer's 5 s BZPOPMIN windows
LAYER_PROBES = 20


REJECTED: list[int] = []  # close codes of sockets the server closed right after the handshake


async def open_many(url: str, origin: str, cookie: str, n: int) -> list:
    """``n`` authenticated dashboard websockets, each confirmed by a ping round trip (Daphne
    accepts first; the consumer joins its groups in connect()). A socket the server closes at
    once is counted in REJECTED and replaced (at most 3 rounds)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    gate = asyncio.Semaphore(20)

    async def one():
        async with gate:
            ws = await connect(
                url,
                origin=origin,
                additional_headers={"Cookie": f"sessionid={cookie}"},
                compression=None,
                open_timeout=30,
            )
        try:
            await asyncio.wait_for(ws.ping(), 30)
        except ConnectionClosed:
            REJECTED.append(ws.close_code)
            return None
        return ws

    sockets: list = []
    for _ in range(3):
        sockets += [ws for ws in await asyncio.gather(*[one() for _ in range(n - len(sockets))]) if ws]
        if len(sockets) == n:
            return sockets
    raise RuntimeError(f"only {len(sockets)} of {n} websockets stayed open (closed with {REJECTED})")


async def close_all(sockets: list) -> None:
    await asyncio.gather(*[ws.close() for ws in sockets], return_exceptions=True)


async def idle_layer_receives(n: int, seconds: float) -> list[str]:
    """``n`` channel layers configured like the app's, each waiting on an idle channel for
    ``seconds``; returns the errors their receive() raised."""
    from channels.layers import channel_layers

    async def one() -> str | None:
        layer = channel_layers.make_backend("default")
        channel = await layer.new_channel()
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(layer.receive(channel), left)
        except Exception as exc:
            return f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
        finally:
            with contextlib.suppress(Exception):
                await layer.close_pools() if hasattr(layer, "close_pools") else None
        return None

    return [e for e in await asyncio.gather(*[one() for _ in range(n)]) if e]


async def measure(pid: int, base_url: str, cookie: str) -> dict:
    REJECTED.clear()
    ws_url = base_url.replace("http://", "ws://") + "/ws/dashboard/"
    rss: dict[str, int] = {"started": common.rss_kb(pid)}
    # Warm-up: the first connections import and allocate what every later one reuses.
    await close_all(await open_many(ws_url, base_url, cookie, 10))
    common.http_get(f"{base_url}/healthz")
    one = await open_many(ws_url, base_url, cookie, 1)
    await asyncio.sleep(SETTLE_S)
    rss["baseline_1"] = common.rss_kb(pid)
    rest = await open_many(ws_url, base_url, cookie, CONNECTIONS - 1)
    await asyncio.sleep(SETTLE_S)
    rss["open_100"] = common.rss_kb(pid)
    open_at_measure = sum(1 for ws in one + rest if ws.close_code is None)
    # Idle dashboards must stay connected: hold them and count the ones the server closed. In the
    # meantime, idle receives on channel layers built from the app's own settings, each on its own
    # connection, show the cause directly (Daphne shares one blocking receive between consumers).
    layer_errors = await idle_layer_receives(LAYER_PROBES, IDLE_HOLD_S)
    closed_by_server = sorted(ws.close_code for ws in one + rest if ws.close_code is not None)
    await close_all(rest)
    await asyncio.sleep(SETTLE_S)
    rss["closed_99"] = common.rss_kb(pid)
    rest = await open_many(ws_url, base_url, cookie, CONNECTIONS - 1)
    await asyncio.sleep(SETTLE_S)
    rss["reopened_100"] = common.rss_kb(pid)
    await close_all(rest + one)
    n = CONNECTIONS - 1
    return {
        "rss_kb": rss,
        "open_at_measure": open_at_measure,
        "idle_hold_s": SETTLE_S + IDLE_HOLD_S,
        "closed_by_server_while_idle": len(closed_by_server),
        "close_codes": sorted(set(closed_by_server)),
        "rejected_at_connect": len(REJECTED),
        "rejected_close_codes": sorted(set(REJECTED)),
        "idle_layer_receives": LAYER_PROBES,
        "idle_layer_receive_errors": len(layer_errors),
        "idle_layer_receive_error_kinds": sorted({e.split(":")[0] for e in layer_errors}),
        # Per connection still open when measured (a consumer the server closed no longer counts).
        "growth_kb_per_connection": round(
            (rss["open_100"] - rss["baseline_1"]) / max(1, open_at_measure - 1), 1
        ),
        "second_round_growth_kb_per_connection": round((rss["reopened_100"] - rss["closed_99"]) / n, 1),
        "retained_after_close_kb_per_connection": round((rss["closed_99"] - rss["baseline_1"]) / n, 1),
    }


def run() -> dict:
    common.setup("memory")
    from fleet.models import Gateway

    Gateway.objects.get_or_create(name="memory", defaults={"url": "ws://127.0.0.1:1/", "token": "x"})
    cookie = common.login_cookie()
    started = time.perf_counter()
    with common.daphne(common.server_env(), "memory-daphne") as (proc, url):
        figures = asyncio.run(asyncio.wait_for(measure(proc.pid, url, cookie), 180))
    figures["seconds"] = round(time.perf_counter() - started, 1)
    figures["daphne_exceptions"] = common.app_exceptions("memory-daphne")
    figures["connections"] = CONNECTIONS
    figures["loadavg_1m"] = round(os.getloadavg()[0], 2)
    common.clear_redis()
    growth = figures["growth_kb_per_connection"]
    closed = figures["closed_by_server_while_idle"]
    figures["targets"] = [
        {
            "name": "Daphne RSS growth per idle dashboard websocket (KB)",
            "value": growth,
            "target": "<= 100",
            "ok": growth <= 100,
        },
        {
            "name": f"idle dashboard websockets the server closed within {figures['idle_hold_s']:.0f} s",
            "value": closed,
            "target": "0",
            "ok": closed == 0,
        },
        {
            "name": f"idle channel-layer receives (app settings) that raised, of {LAYER_PROBES}",
            "value": figures["idle_layer_receive_errors"],
            "target": "0",
            "ok": figures["idle_layer_receive_errors"] == 0,
        },
    ]
    return figures
