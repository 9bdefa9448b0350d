"""A real OTLP trace receiver for the tests, in its own process: gRPC (the collector's
``TraceService/Export`` from opentelemetry-proto) and HTTP/protobuf (``POST /v1/traces``) on
loopback. Every span it decodes is appended to a JSON-lines file, which the test reads back.

    python -m tests.support.otlp --grpc-port 4317 --http-port 4318 --out spans.jsonl [--fail-first N]

``--fail-first N`` answers the first N exports UNAVAILABLE / 503 (the exporter's retry is tested).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def decode(request: Any, transport: str) -> list[dict[str, Any]]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    {
                        "transport": transport,
                        "service": resource.get("service.name"),
                        "scope": scope_spans.scope.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": span.kind,
                        "start_ns": span.start_time_unix_nano,
                        "end_ns": span.end_time_unix_nano,
                        "status_code": span.status.code,
                        "status_message": span.status.message,
                        "attributes": {a.key: _value(a.value) for a in span.attributes},
                        "events": [
                            {"name": e.name, "attributes": {a.key: _value(a.value) for a in e.attributes}}
                            for e in span.events
                        ],
                    }
                )
    return spans


class Sink:
    def __init__(self, out: Path, fail_first: int) -> None:
        self.out, self.failures_left, self.lock = out, fail_first, threading.Lock()

    def refuse(self) -> bool:
        with self.lock:
            if self.failures_left > 0:
                self.failures_left -= 1
                return True
            return False

    def write(self, spans: list[dict[str, Any]]) -> None:
        with self.lock, self.out.open("a") as f:
            for span in spans:
                f.write(json.dumps(span) + "\n")


def serve(grpc_port: int, http_port: int, sink: Sink) -> None:
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            if sink.refuse():
                context.abort(grpc.StatusCode.UNAVAILABLE, "refusing on purpose (--fail-first)")
            sink.write(decode(request, "grpc"))
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    server.start()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            if sink.refuse():
                self.send_error(503, "refusing on purpose (--fail-first)")
                return
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            sink.write(decode(request, "http"))
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    httpd = ThreadingHTTPServer(("127.0.0.1", http_port), Handler)
    print("ready", flush=True)
    httpd.serve_forever()


@dataclass
class Receiver:
    """The receiver process; ``spans()`` reads what it has decoded so far."""

    proc: subprocess.Popen
    out: Path
    grpc_url: str
    http_url: str

    def spans(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]

    def wait_for(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if len(spans) >= count or time.monotonic() > deadline:
                return spans
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start(out: Path, fail_first: int = 0) -> Receiver:
    from tests.support.ports import free_port

    grpc_port, http_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.otlp", "--grpc-port", str(grpc_port), "--http-port",
         str(http_port), "--out", str(out), "--fail-first", str(fail_first)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"the OTLP receiver did not start: {line!r}")
    return Receiver(proc, out, f"http://127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fail-first", type=int, default=0)
    args = parser.parse_args()
    serve(args.grpc_port, args.http_port, Sink(args.out, args.fail_first))


if __name__ == "__main__":
    main()
