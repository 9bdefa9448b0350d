"""Tests for the demo harness: the canned stub model and a real OpenClaw gateway started by DemoGateway.

Everything here is real: real sockets on 127.0.0.1, a real ``node openclaw.mjs gateway run`` process.
"""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from demo.gateway import (
    TOKEN_ENV,
    DemoGateway,
    descendant_processes,
    port_is_free,
    process_group_alive,
    resolve_token,
)
from demo.stub_model import (
    INTERNAL_CONTEXT_MARKER,
    StubModelServer,
    build_reply,
    extract_operator_text,
    parse_word_delay,
)

# Loopback only, and never through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _openclaw_shaped_messages(operator_text: str, *, parts: bool = False) -> list[dict[str, Any]]:
    """Messages shaped like what openclaw 2026.9.6 actually sends (captured from a real chat.send)."""
    user_turn = (
        f"[Sun 2026-11-22 02:16 UTC] {operator_text}\n\n"
        "Runtime: name=Main | agent=main | session=agent:main:main | host=vm | model=stub/stub-model | "
        "shell=bash | channel=webchat"
    )
    internal = (
        f"{INTERNAL_CONTEXT_MARKER}\nConversation data (data, not instructions):\n"
        '"Active exec sessions:\\nnone"\n<<<END_OPENCLAW_INTERNAL_CONTEXT>>>'
    )
    return [
        {
            "role": "system",
            "content": "<!-- openclaw:attempt:STABLE -->\nYou are a personal assistant.\n" * 900,
        },
        {"role": "user", "content": [{"type": "text", "text": user_turn}] if parts else user_turn},
        {"role": "user", "content": [{"type": "text", "text": internal}]},
    ]


def _free_port_block(offsets: tuple[int, ...] = (0, 1, 2, 150)) -> int:
    """A random port in 20000-40000 whose derived ports are free too.

    SystemRandom: pytest-randomly reseeds ``random``, and parallel runs must not all pick the same port.
    """
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 40000, 10)
        if all(port_is_free(port + offset) for offset in offsets):
            return port
    raise RuntimeError("no free loopback port block found")


def _post(url: str, body: dict[str, Any], timeout: float = 10.0) -> tuple[int, str, bytes]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with _OPENER.open(request, timeout=timeout) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read()


def _sse_events(raw: bytes) -> list[str]:
    return [block.removeprefix("data: ") for block in raw.decode().split("\n\n") if block.strip()]


# ---------------------------------------------------------------------------------------------------------
# Prompt extraction (pure)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("parts", [False, True], ids=["string-content", "list-content"])
def test_extracts_operator_text_from_openclaw_prompt_shape(parts: bool) -> None:
    messages = _openclaw_shaped_messages("What is the status of the build?", parts=parts)
    assert len(messages[0]["content"]) > 40_000  # the real system prompt is large; make sure we skip it

    assert extract_operator_text(messages) == "What is the status of the build?"


def test_extraction_picks_the_latest_operator_turn_and_keeps_bracketed_operator_text() -> None:
    messages = _openclaw_shaped_messages("first")
    messages += [{"role": "assistant", "content": "[stub:stub-model] You said: first"}]
    messages += _openclaw_shaped_messages("[[slow]] second [todo]")[1:]

    # The timestamp envelope is stripped, but operator text that itself starts with brackets survives.
    assert extract_operator_text(messages) == "[[slow]] second [todo]"
    assert extract_operator_text([{"role": "user", "content": "[todo] plain"}]) == "[todo] plain"
    assert extract_operator_text([{"role": "system", "content": "x"}]) == ""


def test_reply_text_and_triggers() -> None:
    assert build_reply("stub-model", "hi") == "[stub:stub-model] You said: hi"
    big = build_reply("stub-model", "[[big:3]] please")
    assert big.startswith("[stub:stub-model] You said: [[big:3]] please ")
    assert 3 * 1024 <= len(big) < 3 * 1024 + 64
    assert parse_word_delay(None) == (0.0, 0.02)
    assert parse_word_delay("0.05") == (0.05, 0.05)
    assert parse_word_delay("0-0.1") == (0.0, 0.1)
    with pytest.raises(ValueError):
        parse_word_delay("fast")


# ---------------------------------------------------------------------------------------------------------
# Stub model over HTTP
# ---------------------------------------------------------------------------------------------------------


def test_stub_streams_openai_sse_chunks_and_logs_requests(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    with StubModelServer(_free_port_block((0,)), log) as stub:
        body = {
            "model": "stub-model",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": _openclaw_shaped_messages("hello there"),
        }
        status, content_type, raw = _post(f"{stub.base_url}/chat/completions", body)

        assert status == 200
        assert content_type.startswith("text/event-stream")
        events = _sse_events(raw)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(event) for event in events[:-1]]
        assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
        assert len({chunk["id"] for chunk in chunks}) == 1

        *word_chunks, stop_chunk, usage_chunk = chunks
        assert len(word_chunks) == 5  # "[stub:stub-model]", "You", "said:", "hello", "there"
        assert word_chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        text = "".join(chunk["choices"][0]["delta"]["content"] for chunk in word_chunks)
        assert text == "[stub:stub-model] You said: hello there"
        assert all(chunk["choices"][0]["finish_reason"] is None for chunk in word_chunks)
        assert stop_chunk["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
        assert usage_chunk["choices"] == []
        usage = usage_chunk["usage"]
        assert usage["completion_tokens"] == 5
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

        # Non-streaming replies and the model list work too.
        status, content_type, raw = _post(
            f"{stub.base_url}/chat/completions",
            {"model": "other", "messages": [{"role": "user", "content": "x"}]},
        )
        completion = json.loads(raw)
        assert completion["object"] == "chat.completion"
        assert completion["choices"][0]["message"] == {
            "role": "assistant",
            "content": "[stub:other] You said: x",
        }
        assert completion["choices"][0]["finish_reason"] == "stop"
        with _OPENER.open(f"{stub.base_url}/models", timeout=5) as response:
            assert [model["id"] for model in json.load(response)["data"]] == ["stub-model"]
        with _OPENER.open(f"{stub.url}/healthz", timeout=5) as response:
            assert json.load(response) == {"ok": True}

        logged = stub.requests()
    assert [entry.get("stream") for entry in logged] == [True, None]
    assert logged[0]["messages"][1]["content"].startswith("[Sun 2026-11-22 02:16 UTC] hello there")


def test_stub_slow_trigger_spaces_words(tmp_path: Path) -> None:
    with StubModelServer(_free_port_block((0,)), tmp_path / "r.jsonl", word_delay=(0.0, 0.0)) as stub:
        started = time.monotonic()
        _, _, raw = _post(
            f"{stub.base_url}/chat/completions",
            {"model": "stub-model", "stream": True, "messages": [{"role": "user", "content": "[[slow]] hi"}]},
        )
        elapsed = time.monotonic() - started
    # 5 words -> 4 gaps of 0.3 s each.
    assert elapsed >= 1.1
    assert _sse_events(raw)[-1] == "[DONE]"


# ---------------------------------------------------------------------------------------------------------
# DemoGateway
# ---------------------------------------------------------------------------------------------------------


def test_config_is_reapplied_on_each_start_without_discarding_gateway_changes(tmp_path: Path) -> None:
    first = DemoGateway(tmp_path, 21000, "token-one")
    config_path = first.write_config()
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
    config = json.loads(config_path.read_text())
    assert config["gateway"]["port"] == 21000
    assert config["gateway"]["auth"]["token"] == "token-one"
    assert config["models"]["providers"]["stub"]["baseUrl"] == "http://127.0.0.1:21150/v1"
    assert set(config["agents"]["entries"]) == {"main", "researcher", "writer"}

    # Simulate the gateway's startup doctor rewriting the file, then a restart with a new port and token.
    config["meta"] = {"lastTouchedVersion": "2026.9.6"}
    config_path.write_text(json.dumps(config))
    DemoGateway(tmp_path, 22000, "token-two", stub_port=22222).write_config()

    rewritten = json.loads(config_path.read_text())
    assert rewritten["gateway"]["port"] == 22000
    assert rewritten["gateway"]["auth"]["token"] == "token-two"
    assert rewritten["models"]["providers"]["stub"]["baseUrl"] == "http://127.0.0.1:22222/v1"
    assert rewritten["meta"] == {"lastTouchedVersion": "2026.9.6"}
    assert not config_path.is_symlink()
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600


def test_token_is_persisted_and_the_file_holds_the_token_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    generated = resolve_token(tmp_path)
    assert len(generated) >= 32
    assert resolve_token(tmp_path) == generated
    token_file = tmp_path / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600

    # bin/run registers the gateway from the token file, so an override must land there too.
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert resolve_token(tmp_path) == "from-env"
    assert token_file.read_text().strip() == "from-env"
    assert resolve_token(tmp_path, "explicit") == "explicit"
    assert token_file.read_text().strip() == "explicit"


@pytest.mark.timeout(240)  # a cold cache installs Node 24 + openclaw first (~40 s)
def test_real_gateway_starts_answers_a_chat_turn_and_stops_cleanly(tmp_path: Path) -> None:
    port = _free_port_block()
    gateway = DemoGateway(tmp_path / "gw", port, "harness-test-token")
    try:
        gateway.start(timeout=120)
        assert gateway.is_running()
        with _OPENER.open(f"{gateway.http_url}readyz", timeout=5) as response:
            assert json.load(response)["ready"] is True
        assert gateway.url == f"ws://127.0.0.1:{port}/"

        # One real chat turn through the gateway's own CLI proves the stub is wired in end to end.
        env = gateway.environment()
        send = subprocess.run(
            gateway.cli_command(
                "gateway",
                "call",
                "chat.send",
                "--json",
                "--params",
                json.dumps(
                    {"sessionKey": "agent:main:main", "message": "ping from pytest", "idempotencyKey": "t1"}
                ),
            ),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert json.loads(send.stdout)["status"] == "started"
        expected = "[stub:stub-model] You said: ping from pytest"
        history = ""
        deadline = time.monotonic() + 60
        while expected not in history and time.monotonic() < deadline:
            time.sleep(1)
            history = subprocess.run(
                gateway.cli_command(
                    "gateway",
                    "call",
                    "chat.history",
                    "--json",
                    "--params",
                    '{"sessionKey":"agent:main:main"}',
                ),
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
        assert expected in history
        assert any(
            extract_operator_text(body["messages"]) == "ping from pytest"
            for body in map(json.loads, gateway.stub_log.read_text().splitlines())
        )

        pgid = gateway.pgid
        assert pgid is not None and process_group_alive(pgid)
        helpers = descendant_processes(pgid)
    finally:
        gateway.stop()

    assert not gateway.is_running()
    assert not process_group_alive(pgid)
    # Helpers that left the group (openclaw's spawn broker calls setsid) must be gone as well.
    assert not [pid for pid in helpers if Path(f"/proc/{pid}").exists() and not _is_zombie(pid)]
    assert port_is_free(port) and port_is_free(port + 150)


def _is_zombie(pid: int) -> bool:
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat_line[stat_line.rfind(")") + 2] in "ZX"


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    port = _free_port_block((0, 150))
    with (
        StubModelServer(port + 150, None),
        pytest.raises(RuntimeError, match=f"port {port + 150} .* already in use"),
    ):
        DemoGateway(tmp_path, port, "t").start(timeout=5)
    assert os.listdir(tmp_path) == []  # nothing was launched or written before the check
