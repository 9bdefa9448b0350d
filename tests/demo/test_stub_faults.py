"""The stub model's fault modes over loopback HTTP (through the gateway: tests/fleet/test_run_errors.py)."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

import pytest

from demo.stub_model import (
    FALLBACK_MODEL_ID,
    Fault,
    StubModelServer,
    extract_fault_text,
    fault_for,
)


@pytest.fixture
def stub(tmp_path):
    server = StubModelServer(0, tmp_path / "requests.jsonl", word_delay=(0.0, 0.0)).start()
    yield server
    server.stop()


def _turn(text: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "You are a personal assistant."},
        {"role": "user", "content": f"[Sun 2026-11-22 02:16 UTC] {text}\n\nRuntime: agent=main"},
    ]


def _post(stub: StubModelServer, body: dict[str, Any], timeout: float = 10.0):
    conn = http.client.HTTPConnection("127.0.0.1", stub.port, timeout=timeout)
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    return conn, conn.getresponse()


# ---------------------------------------------------------------------------------------------------------
# Which fault (pure)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "text", "expected"),
    [
        ("stub-model", "hello", None),
        ("stub-model", "[[ratelimit]] x", Fault("ratelimit", 1.0)),
        ("stub-model", "[[ratelimit:30]] x", Fault("ratelimit", 30.0)),
        ("stub-model", "[[ratelimit:none]] x", Fault("ratelimit", None)),
        ("stub-model", "[[auth]]", Fault("auth")),
        ("stub-model", "[[error]]", Fault("error")),
        ("stub-model", "[[hang:5]]", Fault("hang", 5.0)),
        ("stub-model", "[[hang]]", Fault("hang", 120.0)),
        ("stub-model", "[[hang:99999]]", Fault("hang", 600.0)),
        ("stub-model", "[[stall:2]]", Fault("stall", 2.0)),
        ("stub-model", "[[slow:5]]", Fault("slow", 5.0)),
        ("stub-model", "[[slow]] word by word", None),  # the historical per-word delay, not a fault
        ("stub-fail-auth", "hello", Fault("auth")),
        ("stub-fail-ratelimit-30", "hello", Fault("ratelimit", 30.0)),
        ("stub-fail-ratelimit-none", "hello", Fault("ratelimit", None)),
        ("stub-fail-error", "[[auth]]", Fault("error")),  # the model id wins over a marker
        (FALLBACK_MODEL_ID, "[[error]] [[auth]]", None),  # the fallback never fails
    ],
)
def test_it_picks_the_fault_from_the_model_id_or_the_marker(model, text, expected):
    assert fault_for(model, text) == expected


def test_a_marker_holds_on_the_gateways_continuation_retries():
    messages = _turn("[[error]] please")
    messages += [
        {
            "role": "user",
            "content": "Continue the current task from the existing transcript, preserving completed work.",
        }
    ]
    assert extract_fault_text(messages) == "[[error]] please"


# ---------------------------------------------------------------------------------------------------------
# Over HTTP
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "status", "retry_after"),
    [
        ("[[ratelimit]] x", 429, "1"),
        ("[[ratelimit:30]] x", 429, "30"),
        ("[[ratelimit:none]] x", 429, None),
        ("[[auth]] x", 401, None),
        ("[[error]] x", 500, None),
    ],
)
def test_http_faults_answer_with_the_status_and_headers(stub, text, status, retry_after):
    conn, response = _post(stub, {"model": "stub-model", "messages": _turn(text), "stream": True})
    body = json.loads(response.read())
    conn.close()
    assert response.status == status
    assert response.getheader("Retry-After") == retry_after
    assert body["error"]["message"]
    assert [a.fault for a in stub.arrivals()] == [{429: "ratelimit", 401: "auth", 500: "error"}[status]]


def test_a_fault_model_id_fails_every_request_and_the_fallback_answers(stub):
    conn, response = _post(stub, {"model": "stub-fail-auth", "messages": _turn("hello")})
    assert response.status == 401
    response.read()
    conn.close()
    conn, response = _post(stub, {"model": FALLBACK_MODEL_ID, "messages": _turn("[[error]] hello")})
    reply = json.loads(response.read())
    conn.close()
    assert response.status == 200
    assert reply["choices"][0]["message"]["content"] == "[stub:stub-fallback] You said: [[error]] hello"


def test_hang_never_answers_and_hangs_up_after_its_bound(stub):
    started = time.monotonic()
    conn, _ = None, None
    conn = http.client.HTTPConnection("127.0.0.1", stub.port, timeout=10)
    conn.request(
        "POST", "/v1/chat/completions", json.dumps({"model": "m", "messages": _turn("[[hang:1.5]]")})
    )
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        conn.getresponse()
    conn.close()
    assert 1.4 <= time.monotonic() - started < 5


def test_stall_sends_one_chunk_then_stops_unfinished(stub):
    started = time.monotonic()
    conn, response = _post(
        stub, {"model": "stub-model", "messages": _turn("[[stall:1]] a b c"), "stream": True}
    )
    raw = response.read()
    conn.close()
    events = [block for block in raw.decode().split("\n\n") if block.strip()]
    assert len(events) == 1 and '"finish_reason": null' in events[0]
    assert "[DONE]" not in raw.decode()
    assert time.monotonic() - started >= 0.9


def test_slow_spreads_the_reply_over_n_seconds(stub):
    started = time.monotonic()
    conn, response = _post(
        stub, {"model": "stub-model", "messages": _turn("[[slow:1.5]] a b c"), "stream": True}
    )
    raw = response.read().decode()
    conn.close()
    elapsed = time.monotonic() - started
    assert "data: [DONE]" in raw
    assert 1.3 <= elapsed < 5


def test_stopping_the_server_ends_a_hanging_request_at_once(tmp_path):
    server = StubModelServer(0).start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", "/v1/chat/completions", json.dumps({"model": "m", "messages": _turn("[[hang:60]]")}))
    time.sleep(0.3)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 3
    conn.close()
