"""Synchronous facade over :class:`GatewayClient` for Celery tasks and management commands.

The async client runs on a private event loop in a daemon thread; each call blocks the
caller until its result (or typed error) comes back.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from .client import GatewayClient
from .frames import HelloInfo


class SyncGatewayClient:
    def __init__(self, url: str, token: str | None = None, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gateway-client", daemon=True)
        self._thread.start()
        self.client: GatewayClient = self._run(_make(url, token, options))

    def _run(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def connect(self) -> HelloInfo:
        return self._run(self.client.connect())

    @property
    def hello(self) -> HelloInfo | None:
        return self.client.hello

    def call(self, method: str, params: Any = None, **kw: Any) -> Any:
        return self._run(self.client.call(method, params, **kw))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        # Mirrors the async wrappers (health, sessions_list, chat_send, ...) one to one.
        attr = getattr(self.client, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        def blocking(*args: Any, **kwargs: Any) -> Any:
            return self._run(attr(*args, **kwargs))

        return blocking

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self.client.close(), timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()

    def __enter__(self) -> SyncGatewayClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _make(url: str, token: str | None, options: dict[str, Any]) -> GatewayClient:
    # Built inside the loop so its asyncio primitives belong to it.
    return GatewayClient(url, token, **options)
