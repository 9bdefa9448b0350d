"""The fan-out ceiling: a bare ``websockets`` broadcast server (no Django, no channel layer).

    python -m bench._bare_ws PORT

Clients connect to any path; a connection to ``/publish`` is the publisher, and every text frame
it sends is broadcast as is to every other connection. Prints ``ready`` once listening."""

from __future__ import annotations

import asyncio
import sys

from websockets.asyncio.server import broadcast, serve

MAX_LIFETIME_S = 900


async def main(port: int) -> None:
    subscribers = set()

    async def handler(ws) -> None:
        if ws.request.path == "/publish":
            async for message in ws:
                broadcast(subscribers, message)
            return
        subscribers.add(ws)
        try:
            await ws.wait_closed()
        finally:
            subscribers.discard(ws)

    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None):
        print("ready", flush=True)
        await asyncio.sleep(MAX_LIFETIME_S)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
