"""Capture what the real, pinned OpenClaw gateway reports for each fault of the stub model.

Starts its own :class:`~demo.gateway.DemoGateway` (agents with the gateway's default retries and agents with
``provider_max_retries=0``), sends one ``chat.send`` per scenario with a fault marker, records every non-delta
``chat`` / ``agent`` event of that run, the time to the first terminal ``chat`` event and the number of model
calls the stub saw, and writes one JSON file per scenario into ``tests/fixtures/frames/automation/``.

    python -m demo.capture_faults                 # every scenario (the default-retry ones take ~3 min)
    python -m demo.capture_faults --only fast     # only the scenarios on agents with retries off
    python -m demo.capture_faults --only e500-default,e401
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from demo.gateway import DEFAULT_AGENTS, DemoAgent, DemoGateway, ensure_installed
from openclaw import GatewayClient, GatewayError

OUT_DIR = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "frames" / "automation"
TERMINAL_STATES = ("final", "error", "aborted")

# Agents with the gateway's own retries switched off: every provider failure is reported at once.
FAULT_AGENTS: tuple[DemoAgent, ...] = (
    *DEFAULT_AGENTS,
    DemoAgent("faults", "Faults", "Faults", "💥", provider_max_retries=0),
    DemoAgent("authfail", "Auth Fail", "Auth Fail", "🔒", provider_max_retries=0),
    DemoAgent("authslow", "Auth Default", "Auth Default", "🔐"),
    DemoAgent("stalls", "Stalls", "Stalls", "🧊"),
    DemoAgent("hangs", "Hangs", "Hangs", "⏳"),
    DemoAgent(
        "fb",
        "Failover",
        "Failover",
        "🔀",
        model="stub/stub-fail-error",
        fallbacks=("stub/stub-fallback",),
        provider_max_retries=0,
    ),
    DemoAgent("fbdefault", "Failover Default", "Failover Default", "🔁", fallbacks=("stub/stub-fallback",)),
)


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    agent: str
    message: str
    fast: bool  # on an agent with the gateway's retries off
    send_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    abort_after: float | None = None  # chat.abort this many seconds after the ack
    after: str | None = None  # run only once this scenario has finished (auth cooldown)
    wait_extra: float = 1.5  # keep listening after the first terminal event (the second terminal event)
    busy_with: str | None = None  # first send this to the same session and wait until its model call started


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("ok", "a normal turn", "main", "hello", fast=True),
    Scenario(
        "e429-noRA-fast", "429 without Retry-After, retries off", "faults", "[[ratelimit:none]] x", True
    ),
    Scenario("e429-RA30-fast", "429 with Retry-After: 30, retries off", "faults", "[[ratelimit:30]] x", True),
    Scenario("e500-fast", "HTTP 500, retries off", "faults", "[[error]] x", True),
    Scenario("e401-fast", "HTTP 401, retries off", "authfail", "[[auth]] x", True),
    Scenario(
        "e401-after-fast",
        "the next run on that agent after a 401 (no fault marker)",
        "authfail",
        "hello again",
        True,
        after="e401-fast",
    ),
    Scenario(
        "hang-timeoutMs-fast",
        "no response, chat.send timeoutMs=4000",
        "faults",
        "[[hang:60]] x",
        True,
        send_params={"timeoutMs": 4000},
    ),
    Scenario(
        "stall-timeoutMs-fast",
        "stream stalls after the first chunk, chat.send timeoutMs=4000",
        "faults",
        "[[stall:60]] x",
        True,
        send_params={"timeoutMs": 4000},
    ),
    Scenario("slow-fast", "slow reply ([[slow:3]])", "faults", "[[slow:3]] x", True),
    Scenario(
        "slow-timeoutMs-fast",
        "slow reply ([[slow:8]]), chat.send timeoutMs=3000",
        "faults",
        "[[slow:8]] x",
        True,
        send_params={"timeoutMs": 3000},
    ),
    Scenario(
        "aborted-fast",
        "chat.abort 1.5 s into a [[slow]] reply",
        "faults",
        "[[slow]] " + "w " * 40,
        True,
        abort_after=1.5,
    ),
    Scenario(
        "fallback-e500-fast",
        "agent whose primary always answers 500, fallback stub/stub-fallback, retries off",
        "fb",
        "hello fallback",
        True,
    ),
    Scenario(
        "absorbed-busy-session-fast",
        "a second chat.send to a session whose [[slow]] run is still streaming (default steer mode)",
        "faults",
        "second message",
        True,
        busy_with="[[slow]] " + "w " * 30,
    ),
    # The gateway's default retry policy, as production sees it.
    Scenario(
        "e429-noRA-default", "429 without Retry-After, default retries", "main", "[[ratelimit:none]] x", False
    ),
    Scenario("e500-default", "HTTP 500, default retries", "researcher", "[[error]] x", False),
    Scenario("e401-default", "HTTP 401, default retries", "authslow", "[[auth]] x", False),
    Scenario(
        "stall-default",
        "stream stalls after the first chunk, default retries",
        "stalls",
        "[[stall:300]] x",
        False,
    ),
    Scenario(
        "hang-default",
        "no response (stub hangs up after 20 s), default retries",
        "hangs",
        "[[hang:20]] x",
        False,
    ),
    Scenario(
        "fallback-e429-RA120-default",
        "429 Retry-After 120 on an agent with a fallback, default retries",
        "fbdefault",
        "[[ratelimit:120]] x",
        False,
    ),
)


def _strip(event: str, payload: Any) -> dict[str, Any] | None:
    """Keep every event except streaming deltas (which only repeat the reply)."""
    if not isinstance(payload, dict):
        return None
    if event == "chat" and payload.get("state") == "delta":
        return None
    if event == "agent" and payload.get("stream") in ("assistant", "thinking"):
        return None
    return {"event": event, "payload": payload}


async def run_scenario(gateway: DemoGateway, scenario: Scenario) -> dict[str, Any]:
    client = GatewayClient(gateway.url, gateway.token, request_timeout=30.0)
    await client.connect()
    run_id = str(uuid.uuid4())
    nonce = f"cap-{uuid.uuid4().hex[:8]}"
    session_key = f"agent:{scenario.agent}:{scenario.name}-{nonce}"
    events: list[dict[str, Any]] = []
    terminal = asyncio.Event()
    terminal_at: list[float] = []

    def on_event(event: Any) -> None:
        payload = event.payload
        if not isinstance(payload, dict) or payload.get("runId") != run_id:
            return
        kept = _strip(event.event, payload)
        if kept is None:
            return
        kept["t"] = round(time.monotonic() - started, 3)
        events.append(kept)
        if event.event == "chat" and payload.get("state") in TERMINAL_STATES and not terminal.is_set():
            terminal_at.append(time.monotonic())
            terminal.set()

    client.on("chat", on_event)
    client.on("agent", on_event)
    started = time.monotonic()
    wall_start = time.time()
    request = {
        "sessionKey": session_key,
        "message": f"{scenario.message} {nonce}",
        "idempotencyKey": run_id,
        **scenario.send_params,
    }
    result: dict[str, Any] = {"name": scenario.name, "description": scenario.description, "request": request}
    try:
        if scenario.busy_with is not None:
            first = {
                "sessionKey": session_key,
                "message": f"{scenario.busy_with} {nonce}-first",
                "idempotencyKey": str(uuid.uuid4()),
            }
            result["busy_run"] = {"request": first, "ack": await client.call("chat.send", first)}
            stub = gateway.stub_server
            deadline = time.monotonic() + 120
            while stub and not any(f"{nonce}-first" in a.text for a in stub.arrivals()):
                if time.monotonic() > deadline:
                    raise TimeoutError("the busy run never reached the model")
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            started = time.monotonic()
            wall_start = time.time()
        result["ack"] = await client.call("chat.send", request)
        if scenario.abort_after is not None:
            await asyncio.sleep(scenario.abort_after)
            result["abort_response"] = await client.chat_abort(session_key, run_id=run_id)
        await asyncio.wait_for(terminal.wait(), timeout=900)
        await asyncio.sleep(scenario.wait_extra)
    except GatewayError as exc:
        result["error_response"] = {"type": type(exc).__name__, "code": exc.code, "message": exc.message}
    finally:
        await client.close()
    stub = gateway.stub_server
    calls = [
        a
        for a in (stub.arrivals() if stub else [])
        if nonce in a.text and a.at >= wall_start and f"{nonce}-first" not in a.text
    ]
    result["seconds_to_terminal"] = round(terminal_at[0] - started, 2) if terminal_at else None
    result["model_calls"] = len(calls)
    result["model_call_offsets_s"] = [round(a.at - wall_start, 2) for a in calls]
    result["models_called"] = sorted({a.model for a in calls})
    result["events"] = events
    result["terminal_events"] = [
        e["payload"] for e in events if e["event"] == "chat" and e["payload"].get("state") in TERMINAL_STATES
    ]
    return result


async def capture(gateway: DemoGateway, scenarios: list[Scenario]) -> list[dict[str, Any]]:
    done: dict[str, asyncio.Event] = {s.name: asyncio.Event() for s in scenarios}
    results: list[dict[str, Any]] = []

    async def one(scenario: Scenario) -> None:
        if scenario.after and scenario.after in done:
            await done[scenario.after].wait()
        try:
            result = await run_scenario(gateway, scenario)
        finally:
            done[scenario.name].set()
        results.append(result)
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        (OUT_DIR / f"{scenario.name}.json").write_text(
            json.dumps(result, indent=1, ensure_ascii=False) + "\n"
        )
        print(
            f"{scenario.name}: {result['seconds_to_terminal']} s, {result['model_calls']} model calls, "
            f"terminal={[e.get('state') for e in result['terminal_events']]}",
            flush=True,
        )

    # The gateway's global lane is 8: more than that would measure queueing, not retries.
    limit = asyncio.Semaphore(7)

    async def limited(scenario: Scenario) -> None:
        if scenario.after:
            await one(scenario)
            return
        async with limit:
            await one(scenario)

    await asyncio.gather(*(limited(s) for s in scenarios))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo.capture_faults", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--only", default="", help="'fast', or comma-separated scenario names")
    parser.add_argument("--port", type=int, default=19400)
    args = parser.parse_args(argv)
    if args.only == "fast":
        chosen = [s for s in SCENARIOS if s.fast]
    elif args.only:
        names = set(args.only.split(","))
        chosen = [s for s in SCENARIOS if s.name in names]
    else:
        chosen = list(SCENARIOS)
    ensure_installed()
    with tempfile.TemporaryDirectory(prefix="capture-faults-") as state:
        gateway = DemoGateway(Path(state), args.port, secrets.token_hex(16), agents=FAULT_AGENTS)
        gateway.start(timeout=120)
        try:
            asyncio.run(capture(gateway, chosen))
        finally:
            gateway.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
