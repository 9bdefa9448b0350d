"""A local stand-in for GitHub's REST API (issues only): a real HTTP server on loopback that
records every request (method, path, headers, JSON body) and keeps the issues' state."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGitHub:
    url: str = ""
    requests: list[Received] = field(default_factory=list)
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    fail_with: int | None = None  # answer every request with this HTTP status

    def of(self, method: str) -> list[Received]:
        return [r for r in self.requests if r.method == method]

    def close_issue(self, number: int) -> None:
        self.issues[number]["state"] = "closed"


@contextmanager
def fake_github() -> Iterator[FakeGitHub]:
    state = FakeGitHub()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _answer(self, status: int, payload: Any) -> None:
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            state.requests.append(Received(self.command, self.path, dict(self.headers.items()), body))
            if state.fail_with:
                self._answer(state.fail_with, {"message": "Server Error"})
                return
            parts = self.path.strip("/").split("/")  # repos/<owner>/<name>/issues[/<n>[/comments]]
            if len(parts) < 4 or parts[0] != "repos" or parts[3] != "issues":
                self._answer(404, {"message": "Not Found"})
                return
            base = f"{state.url}/{parts[1]}/{parts[2]}/issues"
            if len(parts) == 4 and self.command == "POST":
                number = len(state.issues) + 1
                state.issues[number] = {"number": number, "state": "open", "title": body["title"]}
                self._answer(201, {**state.issues[number], "html_url": f"{base}/{number}"})
                return
            number = int(parts[4]) if len(parts) > 4 and parts[4].isdigit() else 0
            if number not in state.issues:
                self._answer(404, {"message": "Not Found"})
            elif len(parts) == 6 and parts[5] == "comments" and self.command == "POST":
                self._answer(201, {"id": 1, "body": body["body"]})
            elif len(parts) == 5 and self.command == "PATCH":
                state.issues[number].update(body or {})
                self._answer(200, {**state.issues[number], "html_url": f"{base}/{number}"})
            elif len(parts) == 5 and self.command == "GET":
                self._answer(200, {**state.issues[number], "html_url": f"{base}/{number}"})
            else:
                self._answer(404, {"message": "Not Found"})

        do_GET = do_POST = do_PATCH = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-github", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
