"""A local HTTP receiver for notification tests: a real server on 127.0.0.1 (http.server in a
thread) that records every request and answers from a script (statuses in order; the last one
repeats), like a Slack incoming webhook ("ok") or any webhook receiver."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case (HTTP's are case-insensitive)
    body: bytes


@dataclass
class Receiver:
    url: str = ""
    statuses: list[int] = field(default_factory=lambda: [200])
    answer: bytes = b"ok"
    requests: list[Request] = field(default_factory=list)

    def next_status(self) -> int:
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]


@contextmanager
def receiver(*statuses: int, answer: bytes = b"ok") -> Iterator[Receiver]:
    state = Receiver(statuses=list(statuses) or [200], answer=answer)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            state.requests.append(
                Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            status = state.next_status()
            raw = state.answer if status < 400 else b"server trouble"
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="receiver", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


# --- channels ----------------------------------------------------------------------------------


def whsec() -> str:
    """A fresh Standard Webhooks signing secret."""
    import base64
    import secrets

    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def make_channel(name: str, kind: str, **fields: Any):
    """A channel, validated like the admin's form would (``full_clean``)."""
    from scheduler.models import Channel

    channel = Channel(name=name, kind=kind, **fields)
    channel.full_clean()
    channel.save()
    return channel


@contextmanager
def eager_celery() -> Iterator[None]:
    """The delivery tasks run in this process (the domain path is what is tested, no worker).
    The worker's after-task connection check is off meanwhile, as Django's test client turns off
    the request signals' one: inside the test's transaction it would close the connection."""
    from celery.signals import task_postrun

    from agentflow import celery

    previous = celery.app.conf.task_always_eager
    celery.app.conf.task_always_eager = True
    task_postrun.disconnect(celery._close_unusable_connections)
    try:
        yield
    finally:
        celery.app.conf.task_always_eager = previous
        task_postrun.connect(celery._close_unusable_connections)
