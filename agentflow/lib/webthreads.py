"""Django's ASGI handler on a fixed set of long-lived threads.

Django's own ``ASGIHandler`` runs the synchronous part of each HTTP request (the middleware and a
sync view) in a ``ThreadSensitiveContext`` of its own: a new thread per request, a second thread
to join it, and so a new database connection per request (connections are per thread). Measured
on ``POST /api/v1/runs/`` (bench/README.md) that was ≈ 0.9 ms of CPU per request on SQLite (open
+ PRAGMAs + function registration), and on PostgreSQL, with ``CONN_MAX_AGE``, one connection per
request thread until garbage collection closed it: 64 concurrent clients ran the server out of
PostgreSQL connections ("too many clients", 500s).

Its middleware chain is also adapted for a sync-first project: with sync-only middleware
(WhiteNoise, ours) in the list, Django's async chain crossed between the event loop and the
request's thread about a dozen times per request (every async-capable ``MiddlewareMixin`` runs
its ``process_request`` / ``process_response`` through ``sync_to_async`` in async mode).
``ThreadedASGIHandler`` loads the chain in sync mode and runs ``get_response`` (the whole chain
and the view) in one call on the request's thread, as a WSGI server does; the event loop only
reads the request and writes the response.

``ThreadedASGIHandler(threads)`` keeps ``threads`` single-thread executors for the life of the
process and sends each request to the one with the fewest requests in hand (asgiref's
``ThreadSensitiveContext(executor=...)``, asgiref ≥ 3.13). As in a WSGI server's
thread pool: one request at a time per thread, each thread keeps its connection between
requests (``CONN_MAX_AGE`` still applies), at most ``threads`` connections per process; when every
thread is busy a request waits for the least loaded one. A request that waits on a gateway
holds only its own thread.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import django
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.db import connections
from django.http import HttpRequest
from django.http.response import HttpResponseBase


class ThreadedASGIHandler(ASGIHandler):
    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        super().__init__()
        self.executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"web-{i}") for i in range(threads)
        ]
        self.in_hand = [0] * threads  # requests sent to each executor and not finished

    def load_middleware(self, is_async: bool = False) -> None:
        # ASGIHandler asks for the async chain; every view of this project is sync.
        super().load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)

    def pick(self) -> int:
        """The executor with the fewest requests in hand (the first of them on a tie)."""
        return min(range(len(self.in_hand)), key=self.in_hand.__getitem__)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        lane = self.pick()
        self.in_hand[lane] += 1  # the event loop's thread only: no lock needed
        try:
            async with ThreadSensitiveContext(executor=self.executors[lane]):
                await self.handle(scope, receive, send)
        finally:
            self.in_hand[lane] -= 1

    def close(self) -> None:
        """Close each thread's database connections and stop the threads (tests; process exit)."""
        for executor in self.executors:
            executor.submit(connections.close_all).result()
            executor.shutdown()


def get_asgi_application(threads: int) -> ThreadedASGIHandler:
    """``django.core.asgi.get_asgi_application()`` with :class:`ThreadedASGIHandler`."""
    django.setup(set_prefix=False)
    return ThreadedASGIHandler(threads)
