"""A canned, OpenAI-compatible chat model for the demo gateway and the tests.

The gateway's ``stub`` provider (``api: "openai-completions"``) points here. Every reply is
``"[stub:<model>] You said: <operator text>"``, so a test can predict exactly what lands in the transcript.

Endpoints:

* ``POST /v1/chat/completions`` -- SSE ``chat.completion.chunk`` stream (one chunk per word, a
  ``finish_reason: "stop"`` chunk, a usage chunk, ``data: [DONE]``) or a plain ``chat.completion``.
* ``GET /v1/models`` -- lists ``stub-model``.
* ``GET /healthz`` -- liveness.

Skills: a prompt with a line ``AgentFlow skill: <name>`` is answered by ``demo.skills`` (the example
flows' draft, review and classifier), not echoed.

Trigger words in the operator text, for tests (demo/README.md has the full table):

* ``[[slow]]`` -- stream each word 0.3 s apart, so a run can be aborted while in flight.
* ``[[slow:N]]`` -- spread the reply over about N seconds.
* ``[[big:N]]`` -- reply with about N KiB of text.
* ``[[error]]`` -- answer HTTP 500 with an OpenAI-style ``server_error`` (a provider failure).
* ``[[ratelimit]]`` -- answer HTTP 429 ``rate_limit_exceeded`` with ``Retry-After: 1``.
* ``[[ratelimit:N]]`` / ``[[ratelimit:none]]`` -- HTTP 429 with ``Retry-After: N`` / without the header.
* ``[[auth]]`` -- answer HTTP 401 ``invalid_api_key`` (the provider login expired).
* ``[[hang]]`` / ``[[hang:N]]`` -- accept the request, never answer; hang up after N s (bounded).
* ``[[stall]]`` / ``[[stall:N]]`` -- stream the first chunk, then go silent for N s and hang up unfinished.

Fault model ids make every request to that model fail the same way, whatever the prompt: ``stub-fail-<fault>``
with the marker's argument after a dash, e.g. ``stub-fail-auth``, ``stub-fail-ratelimit-30``,
``stub-fail-ratelimit-none``, ``stub-fail-error``, ``stub-fail-hang-10``, ``stub-fail-stall``,
``stub-fail-slow-5``.
``stub-fallback`` never fails: it ignores the markers, so an agent whose fallback it is always recovers.

The gateway's own retries re-send the transcript with a "Continue the current task…" turn appended; the stub
reads markers from the last *operator* turn before such continuation turns, so a fault holds on every retry.

Every request body is appended as one JSON line to the log file, so tests can assert on what the gateway sent.

Run standalone: ``python -m demo.stub_model --port 18939 --log var/stub-requests.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from demo import skills

__all__ = [
    "DEFAULT_MODEL_ID",
    "FALLBACK_MODEL_ID",
    "FAULT_MODEL_PREFIX",
    "Arrival",
    "Fault",
    "fault_for",
    "StubModelServer",
    "build_reply",
    "extract_operator_text",
    "parse_word_delay",
    "read_request_log",
]

DEFAULT_MODEL_ID = "stub-model"
# A model id that never fails (markers are ignored): the fallback the gateway's failover path lands on.
FALLBACK_MODEL_ID = "stub-fallback"
FAULT_MODEL_PREFIX = "stub-fail-"
# Bounds for [[hang]] / [[stall]] / [[slow:N]], so a test that forgets to abort still ends.
DEFAULT_HANG_SECONDS = 120.0
MAX_FAULT_SECONDS = 600.0
# What OpenClaw appends as a user turn when it retries a failed model call (embedded runner recovery).
CONTINUATION_PREFIX = "Continue the current task from the existing transcript"
INTERNAL_CONTEXT_MARKER = "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>"
WORD_DELAY_ENV = "STUB_MODEL_WORD_DELAY"
DEFAULT_WORD_DELAY: tuple[float, float] = (0.0, 0.02)
SLOW_TRIGGER = "[[slow]]"
ERROR_TRIGGER = "[[error]]"
RATE_LIMIT_TRIGGER = "[[ratelimit]]"
SLOW_WORD_DELAY = 0.3
# Cap for [[big:N]] so a typo cannot make the stub allocate gigabytes.
MAX_BIG_KIB = 16 * 1024
# Big replies are streamed in chunks of roughly this many characters instead of one chunk per word: a 1 MiB
# reply would otherwise be ~170k SSE events, which tests the harness's patience rather than the gateway.
BIG_CHUNK_CHARS = 1024

# OpenClaw prefixes the operator's turn with an envelope timestamp such as "[Sun 2026-11-22 02:10 UTC] ".
# Requiring a digit inside the brackets keeps operator text like "[[slow]] hi" or "[todo] x" intact when the
# stub is called directly, without the gateway's envelope.
_TIMESTAMP_PREFIX = re.compile(r"^\[[^\[\]\n]*\d[^\[\]\n]*\] ")
_RUNTIME_SUFFIX = "\n\nRuntime:"
_BIG_TRIGGER = re.compile(r"\[\[big:(\d+)\]\]")
# [[kind]] or [[kind:arg]]; "slow" alone keeps its historical per-word meaning, handled in _stream.
_FAULT_MARKER = re.compile(r"\[\[(ratelimit|auth|error|hang|stall|slow)(?::([0-9]+(?:\.[0-9]+)?|none))?\]\]")
_FAULT_MODEL = re.compile(
    r"^stub-fail-(ratelimit|auth|error|hang|stall|slow)(?:-([0-9]+(?:\.[0-9]+)?|none))?$"
)


# ------------------------------------------------------------------------------------------------------------
# Prompt handling (pure functions, unit-tested without a server)
# ------------------------------------------------------------------------------------------------------------


def content_text(content: Any) -> str:
    """Flatten an OpenAI message ``content`` (a string or a list of ``{type: "text", text}`` parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            # "text" is the chat-completions part type; "input_text" appears in responses-style payloads.
            elif (
                isinstance(part, dict)
                and isinstance(part.get("text"), str)
                and part.get("type", "text") in ("text", "input_text")
            ):
                parts.append(part["text"])
        return "\n".join(parts)
    return ""


def _clean_operator_turn(text: str) -> str:
    # Should the gateway inline the internal context into the same item, nothing after it is operator text.
    marker_at = text.find(INTERNAL_CONTEXT_MARKER)
    if marker_at >= 0:
        text = text[:marker_at]
    runtime_at = text.find(_RUNTIME_SUFFIX)
    if runtime_at >= 0:
        text = text[:runtime_at]
    text = _TIMESTAMP_PREFIX.sub("", text.lstrip(), count=1)
    return text.strip()


def extract_operator_text(messages: Any) -> str:
    """Return what the operator actually typed, given OpenClaw's chat-completions ``messages``.

    OpenClaw sends a large system message, then the operator turn as ``"[<ts>] <text>\\n\\nRuntime: ..."``,
    then a *separate* user item holding ``<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>...``. Echoing the last user
    item (the naive choice) would echo the internal context, so pick the last user item that is not that.
    """
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        text = content_text(message.get("content"))
        if text.lstrip().startswith(INTERNAL_CONTEXT_MARKER):
            continue
        return _clean_operator_turn(text)
    return ""


def extract_fault_text(messages: Any) -> str:
    """The operator turn the gateway is (re)trying: like :func:`extract_operator_text`, but skipping the
    "Continue the current task…" turns OpenClaw appends when it retries, so a marker holds on every retry."""
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        text = content_text(message.get("content"))
        if text.lstrip().startswith(INTERNAL_CONTEXT_MARKER):
            continue
        cleaned = _clean_operator_turn(text)
        if cleaned.startswith(CONTINUATION_PREFIX):
            continue
        return cleaned
    return ""


@dataclasses.dataclass(frozen=True)
class Arrival:
    """One chat request as the stub saw it: when, for which model, which fault it played, the operator text
    (the continuation turn on a gateway retry) followed by the turn the fault was read from."""

    at: float
    model: str
    fault: str | None
    text: str


@dataclasses.dataclass(frozen=True)
class Fault:
    """How the stub misbehaves for one request.

    ``kind``: ``ratelimit`` (429), ``auth`` (401), ``error`` (500), ``hang`` (no response), ``stall`` (first
    chunk, then silence), ``slow`` (the reply spread over ``seconds``). ``seconds`` is the ``Retry-After``
    value for ``ratelimit`` (``None``: no header) and the duration for the others.
    """

    kind: str
    seconds: float | None = None

    @property
    def retry_after_header(self) -> str | None:
        if self.kind != "ratelimit" or self.seconds is None:
            return None
        return str(int(self.seconds)) if float(self.seconds).is_integer() else str(self.seconds)


def _fault_from(kind: str, arg: str | None) -> Fault | None:
    if kind == "ratelimit":
        if arg == "none":
            return Fault("ratelimit", None)
        return Fault("ratelimit", float(arg) if arg is not None else 1.0)
    if kind in ("auth", "error"):
        return Fault(kind)
    if arg == "none":
        return None
    if kind == "slow" and arg is None:
        return None  # plain [[slow]]: the per-word delay of _stream, not a fault
    seconds = float(arg) if arg is not None else DEFAULT_HANG_SECONDS
    return Fault(kind, min(seconds, MAX_FAULT_SECONDS))


def fault_for(model: str, fault_text: str) -> Fault | None:
    """The fault to play for a request to ``model`` whose operator turn is ``fault_text``, or ``None``.

    A fault model id (``stub-fail-…``) wins over markers; :data:`FALLBACK_MODEL_ID` never fails.
    """
    if model == FALLBACK_MODEL_ID:
        return None
    by_model = _FAULT_MODEL.match(model)
    if by_model:
        return _fault_from(by_model.group(1), by_model.group(2))
    for marker in _FAULT_MARKER.finditer(fault_text):
        fault = _fault_from(marker.group(1), marker.group(2))
        if fault is not None:
            return fault
    return None


def build_reply(model: str, operator_text: str) -> str:
    """The canned reply, including the ``[[big:N]]`` padding; a prompt with a line
    ``AgentFlow skill: <name>`` gets that skill's answer instead (demo/skills.py)."""
    skilled = skills.reply(operator_text)
    if skilled is not None:
        return skilled
    reply = f"[stub:{model}] You said: {operator_text}"
    big = _BIG_TRIGGER.search(operator_text)
    if big:
        target = min(int(big.group(1)), MAX_BIG_KIB) * 1024
        filler_words = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")
        pieces = [reply]
        size = len(reply)
        i = 0
        while size < target:
            word = filler_words[i % len(filler_words)]
            pieces.append(word)
            size += len(word) + 1
            i += 1
        reply = " ".join(pieces)
    return reply


def parse_word_delay(value: str | None) -> tuple[float, float]:
    """Parse ``STUB_MODEL_WORD_DELAY``: ``"0.05"`` (fixed) or ``"0-0.02"`` (uniform range, seconds)."""
    if value is None or not value.strip():
        return DEFAULT_WORD_DELAY
    raw = value.strip()
    try:
        if "-" in raw:
            low_s, high_s = raw.split("-", 1)
            low, high = float(low_s), float(high_s)
        else:
            low = high = float(raw)
    except ValueError as exc:
        raise ValueError(f"{WORD_DELAY_ENV} must be 'SECONDS' or 'MIN-MAX', got {value!r}") from exc
    if low < 0 or high < low:
        raise ValueError(f"{WORD_DELAY_ENV} must satisfy 0 <= MIN <= MAX, got {value!r}")
    return (low, high)


def _word_chunks(reply: str, big: bool) -> Iterator[str]:
    """Split the reply into stream deltas that concatenate back to exactly ``reply``."""
    words = reply.split(" ")
    if not big:
        for index, word in enumerate(words):
            yield word if index == len(words) - 1 else word + " "
        return
    buffer: list[str] = []
    size = 0
    for index, word in enumerate(words):
        piece = word if index == len(words) - 1 else word + " "
        buffer.append(piece)
        size += len(piece)
        if size >= BIG_CHUNK_CHARS:
            yield "".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield "".join(buffer)


def _estimate_tokens(text: str) -> int:
    # Rough 4-characters-per-token heuristic: enough for usage figures in dashboards; nothing relies on it.
    return max(1, (len(text) + 3) // 4)


def read_request_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read the request bodies the stub has logged so far (an empty list if nothing was logged)."""
    log = Path(path)
    if not log.exists():
        return []
    with log.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# ------------------------------------------------------------------------------------------------------------
# HTTP server
# ------------------------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so non-streaming replies can be kept alive; streams close the connection to delimit the body.
    protocol_version = "HTTP/1.1"
    server: _StubHTTPServer
    server_version = "AgentFlowStubModel/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    # -- helpers ---------------------------------------------------------------------------------------------

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline().split(b";", 1)[0].strip()
                size = int(size_line or b"0", 16)
                if size == 0:
                    # Consume optional trailers up to the blank line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    # -- routes ----------------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/healthz", "/v1/healthz"):
            self._send_json(HTTPStatus.OK, {"ok": True})
        elif path in ("/v1/models", "/models"):
            self._send_json(
                HTTPStatus.OK,
                {
                    "object": "list",
                    "data": [
                        {"id": DEFAULT_MODEL_ID, "object": "model", "created": 0, "owned_by": "agentflow"}
                    ],
                },
            )
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path not in ("/v1/chat/completions", "/chat/completions"):
            self._send_json(HTTPStatus.NOT_FOUND, {"error": {"message": f"no route {self.path}"}})
            return
        raw = self._read_body()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self.server.log_request_body({"_invalid_body": raw.decode("utf-8", "replace")})
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": {"message": "body must be a JSON object"}})
            return
        self.server.log_request_body(body)

        model = str(body.get("model") or DEFAULT_MODEL_ID)
        messages = body.get("messages")
        operator_text = extract_operator_text(messages)
        fault_text = extract_fault_text(messages)
        fault = fault_for(model, fault_text)
        self.server.count_request(model, fault, f"{operator_text}\n{fault_text}")
        if fault is not None and fault.kind == "error":
            error = {
                "message": "stub provider failure ([[error]])",
                "type": "server_error",
                "code": "stub_error",
            }
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": error})
            return
        if fault is not None and fault.kind == "ratelimit":
            header = fault.retry_after_header
            self._send_json(
                HTTPStatus.TOO_MANY_REQUESTS,
                {
                    "error": {
                        "message": f"Rate limit reached for requests on {model}. Please try again later.",
                        "type": "rate_limit_exceeded",
                        "code": "rate_limit_exceeded",
                    }
                },
                headers={"Retry-After": header} if header is not None else None,
            )
            return
        if fault is not None and fault.kind == "auth":
            self._send_json(
                HTTPStatus.UNAUTHORIZED,
                {
                    "error": {
                        "message": "Incorrect API key provided: stub-***.",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
            )
            return
        if fault is not None and fault.kind == "hang":
            # Never answer; hang up after the bound (or at once when the server stops).
            self.server.stopping.wait(fault.seconds or 0.0)
            self.close_connection = True
            return
        if fault is not None and fault.kind in ("slow", "stall") and not body.get("stream"):
            self.server.stopping.wait(fault.seconds or 0.0)
            if fault.kind == "stall":
                self.close_connection = True
                return
        reply = build_reply(model, operator_text)
        usage = {
            "prompt_tokens": _estimate_tokens(json.dumps(messages or [])),
            "completion_tokens": len(reply.split()),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        completion_id = f"chatcmpl-stub-{uuid.uuid4().hex[:24]}"

        if body.get("stream"):
            self._stream(completion_id, model, operator_text, reply, usage, fault)
        else:
            self._send_json(
                HTTPStatus.OK,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                },
            )

    def _stream(
        self,
        completion_id: str,
        model: str,
        operator_text: str,
        reply: str,
        usage: dict[str, int],
        fault: Fault | None = None,
    ) -> None:
        created = int(time.time())
        slow = SLOW_TRIGGER in operator_text
        big = _BIG_TRIGGER.search(operator_text) is not None
        low, high = (SLOW_WORD_DELAY, SLOW_WORD_DELAY) if slow else self.server.word_delay
        if big:
            low = high = 0.0
        pieces = list(_word_chunks(reply, big))
        if fault is not None and fault.kind == "slow":
            low = high = (fault.seconds or 0.0) / max(1, len(pieces) - 1)

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
                **extra,
            }
            return b"data: " + json.dumps(payload).encode("utf-8") + b"\n\n"

        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        # No Content-Length: the body ends when the connection closes, which every SSE client handles.
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for index, delta_text in enumerate(pieces):
                if index and high > 0:
                    time.sleep(random.uniform(low, high))
                delta: dict[str, Any] = {"content": delta_text}
                if index == 0:
                    delta["role"] = "assistant"
                self.wfile.write(chunk([{"index": 0, "delta": delta, "finish_reason": None}]))
                self.wfile.flush()
                if fault is not None and fault.kind == "stall":
                    # One chunk, then silence; hang up without finish_reason or [DONE].
                    self.server.stopping.wait(fault.seconds or 0.0)
                    return
            self.wfile.write(chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
            self.wfile.write(chunk([], usage=usage))
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            # The gateway aborted the run (e.g. chat.abort) and hung up: expected, not an error.
            pass


class _StubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Let a restarted stub rebind immediately even while old connections sit in TIME_WAIT.
    allow_reuse_address = True

    def __init__(
        self, port: int, log_path: Path | None, word_delay: tuple[float, float], verbose: bool = False
    ) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.log_path = log_path
        self.word_delay = word_delay
        self.verbose = verbose
        self._log_lock = threading.Lock()
        # Set when the server stops, so hanging and stalled requests end at once instead of at their bound.
        self.stopping = threading.Event()
        self.arrivals: list[Arrival] = []

    def count_request(self, model: str, fault: Fault | None, text: str) -> None:
        with self._log_lock:
            self.arrivals.append(Arrival(time.time(), model, fault.kind if fault is not None else None, text))

    def log_request_body(self, body: Any) -> None:
        if self.log_path is None:
            return
        line = json.dumps(body, ensure_ascii=False) + "\n"
        # One lock + one write per line so concurrent requests never interleave within a line; the file is
        # reopened each time so tests may truncate or delete it between turns.
        with self._log_lock:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a", encoding="utf-8") as handle:
                handle.write(line)


class StubModelServer:
    """The stub model, served from a background thread of the current process.

    ``port=0`` picks a free port (read it back from :attr:`port`). ``word_delay`` overrides
    ``STUB_MODEL_WORD_DELAY`` as a ``(min, max)`` range in seconds.
    """

    def __init__(
        self,
        port: int = 0,
        log_path: str | os.PathLike[str] | None = None,
        *,
        word_delay: tuple[float, float] | None = None,
        verbose: bool = False,
    ) -> None:
        self._requested_port = port
        self.log_path: Path | None = Path(log_path) if log_path is not None else None
        self.word_delay = (
            word_delay if word_delay is not None else parse_word_delay(os.environ.get(WORD_DELAY_ENV))
        )
        self.verbose = verbose
        self._server: _StubHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Server root, e.g. ``http://127.0.0.1:18939``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL (what a provider's ``baseUrl`` wants), e.g. ``http://127.0.0.1:18939/v1``."""
        return f"{self.url}/v1"

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._server = _StubHTTPServer(self._requested_port, self.log_path, self.word_delay, self.verbose)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="stub-model", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.stopping.set()
        if thread is not None:
            server.shutdown()
            thread.join(timeout=5)
        server.server_close()
        self._server = None
        self._thread = None

    def requests(self) -> list[dict[str, Any]]:
        """Request bodies logged so far."""
        return read_request_log(self.log_path) if self.log_path is not None else []

    def arrivals(self) -> list[Arrival]:
        """Every chat request since start, in order: the model-call counter (e.g. to count the gateway's
        retries of one run, filter on a nonce in ``text``)."""
        if self._server is None:
            return []
        with self._server._log_lock:
            return list(self._server.arrivals)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------------


def _watch_parent(parent_pid: int, on_orphaned: threading.Event) -> None:
    # When the harness that spawned us dies without cleaning up (SIGKILL, crash) we are re-parented: exit
    # then, instead of lingering on the port and breaking the next run.
    while not on_orphaned.is_set():
        if os.getppid() != parent_pid:
            on_orphaned.set()
            return
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.stub_model", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--log", default=None, help="append every request body as a JSON line to this file")
    parser.add_argument(
        "--parent-pid", type=int, default=None, help="exit when this process is no longer our parent"
    )
    parser.add_argument("--verbose", action="store_true", help="log each HTTP request to stderr")
    args = parser.parse_args(argv)

    server = StubModelServer(args.port, args.log, verbose=args.verbose).start()
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if args.parent_pid:
        threading.Thread(target=_watch_parent, args=(args.parent_pid, stop), daemon=True).start()
    print(f"stub model listening on {server.base_url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
