"""Tracers (flows/README.md, "Tracing"): chosen per run by name with string arguments.

- ``none``: spans are kept only as ``flows.Span`` rows (the waterfall page);
- ``console``: ``stream=stdout|stderr``;
- ``sqlite``: ``db_path`` (a relative path is under ``<AGENTFLOW_DATA_DIR>/traces/``; default
  ``traces.db``), ``batch_size`` (default 500);
- ``otel``: ``exporter_endpoint`` (default ``OTEL_EXPORTER_OTLP_ENDPOINT``, else
  ``http://127.0.0.1:4317``), ``protocol`` (``grpc`` | ``http``, default grpc; with http the default
  port is 4318), ``service_name`` (default ``agentflow``), ``timeout`` (export seconds, default 10),
  ``flush_timeout`` (seconds ``flush`` waits for the export, default 0: it never does; ``close``
  waits up to ``timeout``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from .base import EventData, NoTracer, SpanData, TracerDB, new_span_id, new_trace_id, traceparent

__all__ = [
    "TRACERS", "EventData", "check", "NoTracer", "SpanData", "TracerDB", "make", "new_span_id",
    "new_trace_id", "traceparent",
]  # fmt: skip

TRACERS = ("none", "console", "sqlite", "otel")
ARGS = {
    "none": (),
    "console": ("stream",),
    "sqlite": ("db_path", "batch_size"),
    "otel": ("exporter_endpoint", "protocol", "service_name", "timeout", "flush_timeout"),
}


def check(name: str | None, args: dict[str, Any] | None = None) -> None:
    """``ValueError`` when ``make(name, args)`` would refuse (nothing is connected)."""
    make(name, args)


def _number(name: str, key: str, value: Any, kind: type = float, zero: bool = False) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"tracer {name}: {key} must be a number (got {value!r})") from None
    if number < 0 or (number == 0 and not zero):
        raise ValueError(f"tracer {name}: {key} must be {'0 or more' if zero else 'above 0'} (got {value!r})")
    return number


def sqlite_path(value: Any) -> Path:
    from django.conf import settings

    path = Path(str(value or "traces.db")).expanduser()
    return path if path.is_absolute() else Path(settings.DATA_DIR) / "traces" / path


def make(name: str | None, args: dict[str, Any] | None = None) -> TracerDB:
    """The tracer ``name`` built from ``args`` (``db_path=…``, ``exporter_endpoint=…``, …), not yet
    connected; ``ValueError`` naming the known ones for an unknown name or argument."""
    args = dict(args or {})
    name = name or "none"
    if name not in ARGS:
        raise ValueError(f"unknown tracer {name!r} (one of {', '.join(TRACERS)})")
    unknown = sorted(set(args) - set(ARGS[name]))
    if unknown:
        takes = ", ".join(ARGS[name]) or "no arguments"
        raise ValueError(f"tracer {name} takes {takes} (got {', '.join(unknown)})")
    if name == "none":
        return NoTracer()
    if name == "console":
        from .console import ConsoleTracer

        stream = str(args.get("stream", "stdout"))
        if stream not in ("stdout", "stderr"):
            raise ValueError(f"tracer console: stream is stdout or stderr (got {stream!r})")
        return ConsoleTracer(sys.stderr if stream == "stderr" else None)
    if name == "sqlite":
        from .sqlite import SQLiteTracer

        batch = _number(name, "batch_size", args.get("batch_size", 500), int)
        return SQLiteTracer(sqlite_path(args.get("db_path")), batch_size=batch)
    from .otel import PROTOCOLS, OTelTracer

    protocol = str(args.get("protocol", "grpc"))
    if protocol not in PROTOCOLS:
        raise ValueError(f"tracer otel: protocol is {' or '.join(PROTOCOLS)} (got {protocol!r})")
    default = "http://127.0.0.1:4318" if protocol == "http" else "http://127.0.0.1:4317"
    endpoint = str(args.get("exporter_endpoint") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or default)
    if not endpoint.startswith(("http://", "https://")):
        raise ValueError(f"tracer otel: exporter_endpoint is an http:// or https:// URL (got {endpoint!r})")
    return OTelTracer(
        endpoint,
        protocol=protocol,
        service_name=str(args.get("service_name", "agentflow")),
        timeout=_number(name, "timeout", args.get("timeout", 10)),
        flush_timeout=_number(name, "flush_timeout", args.get("flush_timeout", 0), zero=True),
    )
