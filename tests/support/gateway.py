"""Real-gateway helpers: talking to the session's OpenClaw gateway as an operator would, and
waiting for it to settle.

Runs of the stub model take several seconds, so the one chat turn the tests need is made once
per test process (``chatted_session``) and reused; every test keys its assertions on that
session, so other sessions on the shared gateway never matter.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fleet.models import from_ms
from openclaw import SyncGatewayClient

ADMIN_SCOPES = ("operator.read", "operator.write", "operator.admin")
STUB_REPLY = "[stub:stub-model] You said: "


@contextlib.contextmanager
def admin_client(gateway) -> Iterator[SyncGatewayClient]:
    """A connected client with config.patch rights on the demo gateway."""
    client = SyncGatewayClient(gateway.url, gateway.token, scopes=ADMIN_SCOPES, name="tests")
    try:
        client.connect()
        yield client
    finally:
        client.close()


def wait_for(predicate, timeout: float, interval: float = 0.25, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def session_row(rows: list[dict], key: str) -> dict | None:
    return next((row for row in rows if row.get("key") == key), None)


def last_activity(row: dict) -> datetime:
    """The latest gateway timestamp of a session row (what the classification ages from)."""
    stamps = [from_ms(row.get(name)) for name in ("updatedAt", "lastInteractionAt", "startedAt", "endedAt")]
    return max(stamp for stamp in stamps if stamp)


def wait_quiet(client: SyncGatewayClient, timeout: float = 60) -> list[dict]:
    """Wait until no session on the gateway has a run in flight; return the rows."""
    return wait_for(
        lambda: (
            (rows := client.sessions_list()) is not None
            and not any(row.get("hasActiveRun") or row.get("activeRunIds") for row in rows)
            and rows
        ),
        timeout,
        what="every run on the gateway to finish",
    )


@dataclass(frozen=True)
class ChattedSession:
    key: str
    message: str
    rows_during_run: list[dict]  # sessions.list right after chat.send (the run in flight)
    row: dict  # the session's sessions.list row once the reply is in
    messages: list[dict]  # chat.history after the turn


_chatted: dict[str, ChattedSession] = {}


def chatted_session(gateway) -> ChattedSession:
    """One finished chat turn (user message + stub reply) on a session of its own (made once)."""
    if gateway.url in _chatted:
        return _chatted[gateway.url]
    key = f"agent:writer:aftest-{uuid.uuid4().hex[:8]}"
    # [[slow]]: the stub streams 0.3 s per word, so the run stays in flight long enough to be seen.
    message = f"[[slow]] hello from the batch tests {uuid.uuid4().hex[:6]}"
    with admin_client(gateway) as client:
        client.chat_send(key, message)

        def in_flight():
            rows = client.sessions_list()
            row = session_row(rows, key)
            return rows if row and row.get("hasActiveRun") else None

        # The gateway registers the run shortly after acknowledging chat.send: wait for it.
        during = wait_for(in_flight, timeout=60, interval=0.1, what="the run in flight")
        history = wait_for(
            lambda: len((h := client.chat_history(key, limit=20)).get("messages") or []) >= 2 and h,
            timeout=90,
            interval=0.5,
            what="the stub model's reply",
        )
        rows = wait_quiet(client)
    chatted = ChattedSession(key, message, during, session_row(rows, key) or {}, history["messages"])
    _chatted[gateway.url] = chatted
    return chatted
