"""The tracer interface every tracer implements (SQLite, OpenTelemetry, console, none).

A span is recorded once, when it has ended (a flow runs across workers: nothing is held open in
memory between steps). Times are Unix epoch nanoseconds; ids are W3C hex (trace 32, span 16).
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


def new_trace_id() -> str:
    return secrets.token_hex(16)


def new_span_id() -> str:
    return secrets.token_hex(8)


def traceparent(trace_id: str, span_id: str) -> str:
    """The W3C ``traceparent`` header of a span (sampled)."""
    return f"00-{trace_id}-{span_id}-01"


@dataclass
class SpanData:
    trace_id: str
    span_id: str
    name: str  # "flow coding_assistant", "step draft", "agent main", "command pytest"
    start_ns: int
    end_ns: int
    parent_span_id: str | None = None
    kind: str = "step"  # flow | step | agent | command | http | internal
    status: str = "ok"  # ok | error
    status_message: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


@dataclass
class EventData:
    trace_id: str
    span_id: str
    name: str
    time_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)


class TracerDB(ABC):
    """``connect`` once, ``record_span`` / ``record_event`` as things end, ``flush`` at a step's
    end (must not wait on a remote export), ``close`` at the end of the run's work."""

    name: str = "none"

    @abstractmethod
    def connect(self) -> None: ...

    @abstractmethod
    def record_span(self, span: SpanData) -> None: ...

    @abstractmethod
    def record_event(self, event: EventData) -> None: ...

    @abstractmethod
    def flush(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...


class NoTracer(TracerDB):
    name = "none"

    def connect(self) -> None:
        pass

    def record_span(self, span: SpanData) -> None:
        pass

    def record_event(self, event: EventData) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
