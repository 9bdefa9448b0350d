"""Demo traffic against the real gateway: a short run makes sessions and runs; the stub model's
fault modes answer as a failing or rate-limited provider would; AGENTFLOW_DEMO_TRAFFIC=off stops it."""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from demo import traffic
from demo.stub_model import StubModelServer
from openclaw import GatewayClient, SyncGatewayClient
from tests.support.ports import free_port

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _post(url: str, text: str) -> tuple[int, dict[str, str], dict]:
    body = json.dumps({"model": "stub-model", "messages": [{"role": "user", "content": text}]}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with _OPENER.open(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


@pytest.mark.parametrize(
    ("prompt", "status", "kind"),
    [("[[error]] boom", 500, "server_error"), ("[[ratelimit]] again", 429, "rate_limit_exceeded")],
)
def test_the_stub_model_fails_like_a_provider_on_request(tmp_path: Path, prompt, status, kind) -> None:
    with StubModelServer(free_port(), tmp_path / "r.jsonl") as stub:
        code, headers, body = _post(f"{stub.base_url}/chat/completions", prompt)
        assert code == status and body["error"]["type"] == kind
        if status == 429:
            assert headers["Retry-After"] == "1"
        ok, _, reply = _post(f"{stub.base_url}/chat/completions", "plain hello")
        assert ok == 200 and "You said: plain hello" in reply["choices"][0]["message"]["content"]


def test_the_switch_turns_it_off() -> None:
    assert traffic.enabled({})
    assert not traffic.enabled({"AGENTFLOW_DEMO_TRAFFIC": "off"})
    assert not traffic.enabled({"AGENTFLOW_DEMO_TRAFFIC": " OFF "})
    assert traffic.main(["--token-file", "/nonexistent"]) == 0 if not traffic.enabled() else True


def test_prompts_are_mostly_plain_with_some_faults() -> None:
    rng = random.Random(7)
    prompts = [traffic.pick_prompt(rng) for _ in range(2000)]
    plain = sum(1 for p in prompts if not p.startswith("[["))
    assert 0.6 < plain / len(prompts) < 0.8
    for trigger in ("[[slow]]", "[[error]]", "[[ratelimit]]"):
        assert any(p.startswith(trigger) for p in prompts), trigger


@pytest.mark.gateway
def test_a_short_run_makes_sessions_and_runs_on_the_real_gateway(live_openclaw) -> None:
    rng = random.Random()
    run_tag = f"{rng.randrange(10**6)}"

    async def go() -> traffic.Traffic:
        client = GatewayClient(live_openclaw.url, live_openclaw.token, name="demo-traffic-test")
        # Plain prompts here: the fault modes are tested on the stub itself, and a rate-limited
        # run keeps the shared gateway busy retrying.
        t = traffic.Traffic(client, interval=0.4, rng=rng, prompt=lambda r: r.choice(traffic.PLAIN))
        await t.run(asyncio.Event(), duration=3.0)
        return t

    before = time.time() * 1000
    t = asyncio.run(go())
    assert t.sent >= 3 and t.failed == 0, (t.sent, t.failed, run_tag)
    client = SyncGatewayClient(
        live_openclaw.url, live_openclaw.token, name="demo-traffic-check", request_timeout=30
    )
    client.connect()
    try:
        deadline = time.monotonic() + 30
        while True:
            rows = [
                r
                for r in client.sessions_list()
                if ":demo-" in r.get("key", "") and (r.get("updatedAt") or 0) >= before
            ]
            ran = [r for r in rows if r.get("lastRunId") or r.get("hasActiveRun") or r.get("totalTokens")]
            if rows and ran:
                break
            assert time.monotonic() < deadline, f"no demo session with a run: {rows}"
            time.sleep(0.5)
    finally:
        client.close()
    assert all(r["key"].split(":")[1] in ("main", "researcher", "writer") for r in rows)
