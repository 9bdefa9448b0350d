"""The SQLite tracer: the design's ``spans`` and ``events`` tables in one file, in WAL mode, spans
written in batched transactions (``batch_size`` rows, or at ``flush``). Read it with plain
``sqlite3 traces.db "select name, duration_ms, status from spans order by start_ns"``."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from .base import EventData, SpanData, TracerDB

SCHEMA = """
create table if not exists spans (
    trace_id text not null,
    span_id text not null,
    parent_span_id text,
    name text not null,
    kind text not null,
    start_ns integer not null,
    end_ns integer not null,
    duration_ms real not null,
    status text not null,
    status_message text not null default '',
    attributes text not null default '{}',
    primary key (trace_id, span_id)
);
create index if not exists spans_start on spans (start_ns);
create table if not exists events (
    id integer primary key,
    trace_id text not null,
    span_id text not null,
    name text not null,
    time_ns integer not null,
    attributes text not null default '{}'
);
create index if not exists events_span on events (trace_id, span_id);
"""

SPAN_SQL = (
    "insert or replace into spans (trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns,"
    " duration_ms, status, status_message, attributes) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
EVENT_SQL = "insert into events (trace_id, span_id, name, time_ns, attributes) values (?, ?, ?, ?, ?)"


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, default=str, separators=(",", ":"), sort_keys=True)


class SQLiteTracer(TracerDB):
    name = "sqlite"

    def __init__(self, db_path: str | Path, batch_size: int = 500) -> None:
        self.db_path = Path(db_path)
        self.batch_size = batch_size
        self._conn: sqlite3.Connection | None = None
        self._spans: list[tuple[Any, ...]] = []
        self._events: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()

    def connect(self) -> None:
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.db_path, timeout=10, isolation_level=None, check_same_thread=False)
        conn.execute("pragma journal_mode=wal")
        conn.execute("pragma synchronous=normal")
        conn.executescript(SCHEMA)
        self._conn = conn

    def record_span(self, span: SpanData) -> None:
        row = (
            span.trace_id, span.span_id, span.parent_span_id, span.name, span.kind, span.start_ns,
            span.end_ns, round(span.duration_ms, 3), span.status, span.status_message,
            _json(span.attributes),
        )  # fmt: skip
        with self._lock:
            self._spans.append(row)
            full = len(self._spans) + len(self._events) >= self.batch_size
        if full:
            self.flush()

    def record_event(self, event: EventData) -> None:
        row = (event.trace_id, event.span_id, event.name, event.time_ns, _json(event.attributes))
        with self._lock:
            self._events.append(row)
            full = len(self._spans) + len(self._events) >= self.batch_size
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            spans, events, self._spans, self._events = self._spans, self._events, [], []
            if not (spans or events):
                return
            if self._conn is None:
                raise RuntimeError("the SQLite tracer is not connected")
            conn = self._conn
            try:
                conn.execute("begin immediate")
                conn.executemany(SPAN_SQL, spans)
                conn.executemany(EVENT_SQL, events)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("rollback")
                self._spans[:0], self._events[:0] = spans, events  # kept for the next flush
                raise
            conn.execute("commit")

    def close(self) -> None:
        if self._conn is None:
            return
        try:
            self.flush()
        finally:
            self._conn.close()
            self._conn = None
