"""The OpenTelemetry tracer: spans exported over OTLP (gRPC by default, HTTP/protobuf as an
option) by opentelemetry-sdk's exporters, which retry with exponential backoff on their own
thread. The only module that imports opentelemetry.

A span arrives here already ended, with the ids the engine chose (so a trace spans processes and
the gateway continues it from the ``traceparent``): it is built as a ``ReadableSpan`` with those
ids and handed to a ``BatchSpanProcessor``. ``record_span`` never waits on the network; ``flush``
hands the pending spans over and starts a ``force_flush`` on a thread (it waits for it at most
``flush_timeout``, default 0: not at all); ``close`` waits for the export.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from .base import EventData, SpanData, TracerDB, new_span_id

SCOPE = InstrumentationScope("agentflow.flows", "1")
KINDS = {"agent": SpanKind.CLIENT, "http": SpanKind.CLIENT}
PROTOCOLS = ("grpc", "http")
MAX_ORPHAN_EVENTS = 10_000
BACKLOG = 8192


def _value(value: Any) -> Any:
    """OTLP attribute values are str, bool, int, float or lists of one of them."""
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, bool, int, float)) for v in value):
        return list(value)
    return json.dumps(value, default=str, separators=(",", ":"))


def _attributes(attrs: dict[str, Any]) -> dict[str, Any]:
    return {str(k): _value(v) for k, v in attrs.items() if v is not None}


def make_exporter(endpoint: str, protocol: str, timeout: float, headers: dict[str, str]) -> SpanExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        target = endpoint.split("://", 1)[-1]
        return GrpcExporter(
            endpoint=target, insecure=not endpoint.startswith("https://"), timeout=timeout, headers=headers
        )
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        url = endpoint if endpoint.rstrip("/").endswith("/v1/traces") else endpoint.rstrip("/") + "/v1/traces"
        return HttpExporter(endpoint=url, timeout=timeout, headers=headers)
    raise ValueError(f"unknown OTLP protocol {protocol!r} (one of {', '.join(PROTOCOLS)})")


class _Counted(SpanExporter):
    """The exporter, counting the spans it has finished with (exported or given up on)."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner, self.done = inner, 0

    def export(self, spans: Any) -> Any:
        try:
            return self.inner.export(spans)
        finally:
            self.done += len(spans)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class OTelTracer(TracerDB):
    name = "otel"

    def __init__(
        self,
        exporter_endpoint: str,
        protocol: str = "grpc",
        service_name: str = "agentflow",
        timeout: float = 10.0,
        flush_timeout: float = 0.0,
        headers: dict[str, str] | None = None,
        exporter: SpanExporter | None = None,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown OTLP protocol {protocol!r} (one of {', '.join(PROTOCOLS)})")
        self.endpoint, self.protocol = exporter_endpoint, protocol
        self.timeout, self.flush_timeout = timeout, flush_timeout
        self.resource = Resource.create({"service.name": service_name})
        self._exporter = exporter
        self._headers = headers or {}
        self._processor: BatchSpanProcessor | None = None
        self._counted: _Counted | None = None
        self._handed = 0
        self._provider: TracerProvider | None = None
        self._pending: dict[tuple[str, str], SpanData] = {}
        self._events: dict[tuple[str, str], list[EventData]] = {}
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None

    def connect(self) -> None:
        inner = self._exporter or make_exporter(self.endpoint, self.protocol, self.timeout, self._headers)
        self._counted = _Counted(inner)
        self._handed = 0
        # The processor drops what does not fit its queue: _hand_over waits (backpressure) when
        # BACKLOG spans are handed over and not yet exported, which a flow's flush never reaches.
        self._processor = BatchSpanProcessor(
            self._counted, max_queue_size=2 * BACKLOG, max_export_batch_size=512, schedule_delay_millis=500
        )
        self._provider = TracerProvider(resource=self.resource)  # owns the processor's shutdown
        self._provider.add_span_processor(self._processor)

    def record_span(self, span: SpanData) -> None:
        with self._lock:
            self._pending[(span.trace_id, span.span_id)] = span

    def record_event(self, event: EventData) -> None:
        """Kept with its span (an event may come before or after its span in this process)."""
        with self._lock:
            if sum(len(v) for v in self._events.values()) < MAX_ORPHAN_EVENTS:
                self._events.setdefault((event.trace_id, event.span_id), []).append(event)

    def _readable(self, span: SpanData, events: list[EventData]) -> ReadableSpan:
        context = SpanContext(
            int(span.trace_id, 16), int(span.span_id, 16), is_remote=False, trace_flags=TraceFlags(1)
        )
        parent = (
            SpanContext(int(span.trace_id, 16), int(span.parent_span_id, 16), is_remote=False)
            if span.parent_span_id
            else None
        )
        status = (
            Status(StatusCode.ERROR, span.status_message or None)
            if span.status == "error"
            else Status(StatusCode.OK)
        )
        attrs = _attributes({"agentflow.span.kind": span.kind, **span.attributes})
        return ReadableSpan(
            name=span.name,
            context=context,
            parent=parent,
            resource=self.resource,
            attributes=attrs,
            events=[Event(e.name, _attributes(e.attributes), e.time_ns) for e in events],
            kind=KINDS.get(span.kind, SpanKind.INTERNAL),
            status=status,
            start_time=span.start_ns,
            end_time=span.end_ns,
            instrumentation_scope=SCOPE,
        )

    def _hand_over(self) -> None:
        if self._processor is None:
            raise RuntimeError("the OpenTelemetry tracer is not connected")
        with self._lock:
            pending, self._pending = self._pending, {}
            ready = [(span, self._events.pop(key, [])) for key, span in pending.items()]
        for span, events in ready:
            if self._counted is not None and self._handed - self._counted.done >= BACKLOG:
                self._processor.force_flush(timeout_millis=int(self.timeout * 1000))
            self._processor.on_end(self._readable(span, events))
            self._handed += 1

    def flush(self) -> None:
        """Hand the pending spans over and start a ``force_flush`` on a thread of its own: the
        SDK's force_flush exports in the caller's thread, retries included, and a step must not
        wait on the receiver (``flush_timeout`` bounds only how long ``flush`` waits for it)."""
        self._hand_over()
        processor = self._processor
        assert processor is not None
        with self._lock:
            flusher = self._flusher
            if flusher is None or not flusher.is_alive():
                flusher = threading.Thread(target=processor.force_flush, name="otel-flush", daemon=True)
                self._flusher = flusher
                flusher.start()
        if self.flush_timeout:
            flusher.join(self.flush_timeout)

    def close(self) -> None:
        if self._provider is None:
            return
        self._hand_over()
        with self._lock:  # events whose span ended in another process: zero-length child spans
            orphans, self._events = self._events, {}
        assert self._processor is not None
        for (trace_id, span_id), events in orphans.items():
            for e in events:
                orphan = SpanData(trace_id, new_span_id(), f"event {e.name}", e.time_ns, e.time_ns, span_id)
                orphan.kind, orphan.attributes = "internal", e.attributes
                self._processor.on_end(self._readable(orphan, []))
        assert self._processor is not None
        self._processor.force_flush(timeout_millis=int(self.timeout * 1000))
        self._provider.shutdown()
        self._provider = self._processor = None
