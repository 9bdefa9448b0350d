"""The console tracer: one readable line per span and per event, as they end.

12:00:01.204  trace 4bf92f35  step draft        ok      812.4 ms  agent=main tokens=412/96
12:00:01.204  trace 4bf92f35  · event step.retry  attempt=1 error=…
"""

from __future__ import annotations

import sys
import threading
from datetime import datetime
from typing import IO, Any

from .base import EventData, SpanData, TracerDB

SHOWN = {  # attribute → label, in this order; the rest are left to the other tracers
    "gen_ai.agent.name": "agent",
    "gen_ai.request.model": "model",
    "gen_ai.usage.input_tokens": "in",
    "gen_ai.usage.output_tokens": "out",
    "agentflow.cost": "cost",
    "agentflow.run_id": "run",
    "flow.step.attempts": "attempts",
    "flow.steps": "steps",
    "flow.status": "status",
}


def _clock(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9).strftime("%H:%M:%S.%f")[:-3]


def _short(value: Any, limit: int = 80) -> str:
    text = str(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ConsoleTracer(TracerDB):
    name = "console"

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def _write(self, line: str) -> None:
        stream = self.stream or sys.stdout
        with self._lock:
            stream.write(line + "\n")

    def connect(self) -> None:
        pass

    def record_span(self, span: SpanData) -> None:
        shown = [(label, span.attributes[key]) for key, label in SHOWN.items() if key in span.attributes]
        attrs = " ".join(f"{label}={_short(value, 40)}" for label, value in shown)
        error = f"  ! {_short(span.status_message)}" if span.status_message else ""
        self._write(
            f"{_clock(span.end_ns)}  trace {span.trace_id[:8]}  {span.name:<24} {span.status:<5} "
            f"{span.duration_ms:>9.1f} ms  {attrs}{error}".rstrip()
        )

    def record_event(self, event: EventData) -> None:
        attrs = " ".join(f"{k}={_short(v, 60)}" for k, v in sorted(event.attributes.items()))
        line = f"{_clock(event.time_ns)}  trace {event.trace_id[:8]}  · event {event.name}  {attrs}"
        self._write(line.rstrip())

    def flush(self) -> None:
        stream = self.stream or sys.stdout
        stream.flush()

    def close(self) -> None:
        self.flush()
