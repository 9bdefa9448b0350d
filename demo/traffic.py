"""Demo traffic: the demo gateway's agents chat on a jittered schedule, so a newcomer's
dashboard moves within seconds (pulses, runs in flight, an occasional error).

It connects to the gateway as an ordinary client (the ``openclaw`` package) and sends a message
to one of a few sessions of a random agent every few seconds. Most prompts are plain; some ask
the stub model (demo/stub_model.py) for a slow reply (``[[slow]]``), a provider error
(``[[error]]``) or a rate limit (``[[ratelimit]]``).

    python -m demo.traffic --url ws://127.0.0.1:18789/ --token-file var/demo-gateway/token

``make run`` starts it beside the demo gateway unless ``AGENTFLOW_DEMO_TRAFFIC=off``; with
that setting this command exits at once, too. Tests keep it off.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from openclaw import GatewayClient, GatewayError
from openclaw.errors import InvalidRequestError

log = logging.getLogger("demo.traffic")

SWITCH_ENV = "AGENTFLOW_DEMO_TRAFFIC"
SESSIONS_PER_AGENT = 3
PLAIN = (
    "summarise the overnight alerts",
    "draft a status update for the team",
    "what changed in the config today?",
    "check the deploy checklist",
    "list three risks for the launch",
)
# (weight, prompt prefix): most messages are plain; a few exercise the stub's fault modes.
KINDS = ((70, ""), (18, "[[slow]] "), (7, "[[error]] "), (5, "[[ratelimit]] "))


def enabled(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    return environ.get(SWITCH_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


def pick_prompt(rng: random.Random) -> str:
    prefix = rng.choices([k for _, k in KINDS], weights=[w for w, _ in KINDS])[0]
    return prefix + rng.choice(PLAIN)


@dataclass
class Traffic:
    client: GatewayClient
    interval: float = 6.0  # mean seconds between messages (jittered ±50 %)
    rng: random.Random = field(default_factory=random.Random)
    prompt: Callable[[random.Random], str] = pick_prompt
    sent: int = 0
    failed: int = 0

    async def agents(self) -> list[str]:
        roster = await self.client.agents_list()
        ids = [a.get("id") for a in roster.get("agents") or [] if isinstance(a, dict)]
        return [i for i in ids if isinstance(i, str) and i] or ["main"]

    async def send_one(self, agent_ids: list[str]) -> str:
        agent = self.rng.choice(agent_ids)
        key = f"agent:{agent}:demo-{self.rng.randrange(SESSIONS_PER_AGENT) + 1}"
        prompt = self.prompt(self.rng)
        idempotency_key = str(uuid.uuid4())
        try:
            try:
                await self.client.chat_send(key, prompt, idempotency_key=idempotency_key)
            except GatewayError as exc:
                if not (isinstance(exc, InvalidRequestError) and exc.asks_for_retry):
                    raise
                # "session changed before chat.send; retry the request": two sends raced on one
                # demo session; the gateway ran neither, so once more (the same key) is safe
                await asyncio.sleep(0.2)
                await self.client.chat_send(key, prompt, idempotency_key=idempotency_key)
            self.sent += 1
            log.info("sent to %s: %s", key, prompt)
        except GatewayError as exc:
            self.failed += 1
            log.warning("send to %s failed: %s", key, exc)
            if self.client.state != "connected":
                with contextlib.suppress(GatewayError):
                    await self.client.connect()  # the gateway restarted: try again next time
        return key

    async def connect(self, stop: asyncio.Event) -> bool:
        """Connect, retrying every 2 s while the gateway starts (``make run`` starts both at once)."""
        while not stop.is_set():
            try:
                await self.client.connect()
                return True
            except GatewayError as exc:
                log.info("waiting for the gateway: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)
        return False

    async def run(self, stop: asyncio.Event, duration: float | None = None) -> None:
        if not await self.connect(stop):
            return
        agent_ids = await self.agents()
        log.info("demo traffic for agents %s, a message every ~%.0f s", ", ".join(agent_ids), self.interval)
        deadline = time.monotonic() + duration if duration else None
        first = True
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            # The first message goes out at once: the dashboard has something to show within seconds.
            wait = 0.0 if first else self.interval * self.rng.uniform(0.5, 1.5)
            first = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
                break
            await self.send_one(agent_ids)
        await self.client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.traffic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("AGENTFLOW_GATEWAY_URL", "ws://127.0.0.1:18789/"))
    parser.add_argument("--token-file", default="var/demo-gateway/token")
    parser.add_argument("--interval", type=float, default=6.0, help="mean seconds between messages")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not enabled():
        log.info("%s=off: no demo traffic", SWITCH_ENV)
        return 0
    token = Path(args.token_file).read_text().strip()
    client = GatewayClient(args.url, token, name="demo-traffic", display_name="AgentFlow demo traffic")
    traffic = Traffic(client, interval=args.interval, rng=random.Random(args.seed))

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await traffic.run(stop, args.duration)

    asyncio.run(go())
    log.info("demo traffic: %d sent, %d failed", traffic.sent, traffic.failed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
