"""Tracers (flows/README.md, "Tracing"): chosen per run by name with string arguments."""

from __future__ import annotations

from typing import Any

from .base import EventData, NoTracer, SpanData, TracerDB, new_span_id, new_trace_id, traceparent

__all__ = [
    "TRACERS", "EventData", "check", "NoTracer", "SpanData", "TracerDB", "make", "new_span_id",
    "new_trace_id", "traceparent",
]  # fmt: skip

TRACERS = ("none", "console", "sqlite", "otel")


def check(name: str | None, args: dict[str, Any] | None = None) -> None:
    """``ValueError`` when ``make(name, args)`` would refuse (nothing is connected)."""
    make(name, args)


def make(name: str | None, args: dict[str, Any] | None = None) -> TracerDB:
    """The tracer ``name`` built from ``args`` (``db_path=…``, ``exporter_endpoint=…``, …);
    ``ValueError`` naming the known ones for an unknown name or argument."""
    args = dict(args or {})
    name = name or "none"
    if name == "none":
        if args:
            raise ValueError(f"tracer none takes no arguments (got {', '.join(sorted(args))})")
        return NoTracer()
    raise ValueError(f"unknown tracer {name!r} (one of {', '.join(TRACERS)})")
