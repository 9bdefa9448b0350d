"""Issue 4, fan-out: 100 authenticated dashboard websockets on a real Daphne, all in one gateway
group, fed through agentflow.lib.broadcast by a publisher process.

* sustained: 1,000 deliveries/s (10 messages/s x 100 clients) for 60 s: p50 <= 20 ms,
  p99 <= 100 ms, nothing lost, nothing reordered;
* the knee: 2k, 4k, 8k, 16k deliveries/s for 10 s each (the sustained run is the 1k point), until
  p99 > 250 ms or a loss;
* the same steps from 1k with RedisPubSubChannelLayer (AGENTFLOW_CHANNEL_LAYER=pubsub) and through
  a bare ``websockets`` broadcast server (the ceiling), with the same clients and publisher;

Three processes per run besides this one: the server, the clients (bench._fanout_clients) and the
publisher (bench._fanout_publisher); latency = client receive time - publisher send time."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time

from bench import _common as common

CLIENTS = 100
SUSTAINED = (1000, 60)  # deliveries/s, seconds
KNEE_RATES = (1000, 2000, 4000, 8000, 16000)
KNEE_STEP_S = 10
KNEE_P99_MS = 250
APP = "agentflow.asgi:application"


class LineProcess:
    """A helper subprocess spoken to in lines (stdin) and read in JSON lines (stdout), with timeouts."""

    def __init__(self, args: list[str], env: dict[str, str], name: str) -> None:
        self.log = common.log_path(name).open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=common.ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def read_json(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, min(1.0, deadline - time.monotonic())))
            except queue.Empty:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.proc.args} gave no answer (exit {self.proc.poll()})") from None
                continue
            if line.strip().startswith("{"):
                return json.loads(line)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("quit")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            common.stop(self.proc, grace=3)
        self.log.close()


@contextlib.contextmanager
def bare_server():
    port = common.free_port()
    log = common.log_path("fanout-bare").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._bare_ws", str(port)],
        cwd=common.ROOT,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    try:
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("the bare websocket server did not start")
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        common.stop(proc)
        log.close()


def run_steps(
    label: str,
    server: subprocess.Popen,
    base_url: str,
    ws_path: str,
    publisher_args: list[str],
    env: dict[str, str],
    plan: list[tuple[str, int, int]],
    cookie: str = "",
) -> dict:
    """Connect the clients, then run ``plan`` ([(kind, deliveries/s, seconds)]) in order, stopping
    after the first step over KNEE_P99_MS or with a loss (the knee)."""
    ws_url = base_url.replace("http://", "ws://") + ws_path
    clients = LineProcess(
        [
            "bench._fanout_clients",
            ws_url,
            "--clients",
            str(CLIENTS),
            "--cookie",
            cookie,
            "--origin",
            base_url,
        ],
        env,
        f"fanout-{label}-clients",
    )
    publisher = None
    result: dict = {"steps": []}
    try:
        result["connect"] = clients.read_json(90)
        if result["connect"]["connected"] != CLIENTS:
            raise RuntimeError(f"{label}: only {result['connect']} clients connected")
        publisher = LineProcess(
            ["bench._fanout_publisher", *publisher_args], env, f"fanout-{label}-publisher"
        )
        publisher.read_json(60)
        dropped_before = common.ws_dropped(base_url) if label != "bare" else None
        for step, (kind, rate, seconds) in enumerate(plan):
            msgs_per_s = rate / CLIENTS
            count = int(msgs_per_s * seconds)
            cpu = {
                n: common.cpu_seconds(p.pid)
                for n, p in (("server", server), ("clients", clients.proc), ("publisher", publisher.proc))
            }
            publisher.send(f"step {step} {msgs_per_s} {seconds}")
            sent = publisher.read_json(seconds + 60)
            clients.send(f"report {step} {count}")
            stats = clients.read_json(30)
            for name, proc in (("server", server), ("clients", clients.proc), ("publisher", publisher.proc)):
                cpu[name] = round(100 * (common.cpu_seconds(proc.pid) - cpu[name]) / sent["elapsed_s"], 1)
            row = {
                "kind": kind,
                "deliveries_per_s": rate,
                "seconds": seconds,
                **stats,
                "publisher": sent,
                "cpu_percent": cpu,
            }
            row["server_cpu_us_per_delivery"] = round(
                cpu["server"] / 100 * sent["elapsed_s"] / max(1, stats["deliveries"]) * 1e6, 1
            )
            if label != "bare":
                dropped = common.ws_dropped(base_url)
                row["ws_dropped_total"] = dropped
                row["ws_dropped_step"] = (
                    None if dropped is None or dropped_before is None else dropped - dropped_before
                )
                dropped_before = dropped
            result["steps"].append(row)
            print(
                f"    {label} {kind} {rate}/s: p50 {stats['p50_ms']} ms, p99 {stats['p99_ms']} ms, "
                f"lost {stats['lost']}, reordered {stats['reordered']}, server CPU {cpu['server']}%",
                flush=True,
            )
            if stats["p99_ms"] > KNEE_P99_MS or stats["lost"] or stats["deliveries"] == 0:
                break  # the knee (or a failed sustained run): higher rates only pile up
    finally:
        if publisher is not None:
            publisher.close()
        clients.close()
    knee_steps = result["steps"]  # the sustained run is the 1k point of the pubsub series
    failing = [s for s in knee_steps if s["p99_ms"] > KNEE_P99_MS or s["lost"] or s["deliveries"] == 0]
    result["knee_deliveries_per_s"] = failing[0]["deliveries_per_s"] if failing else None
    passing = [s["deliveries_per_s"] for s in knee_steps if s not in failing]
    result["max_ok_deliveries_per_s"] = max(passing) if passing else 0
    if failing:
        first = failing[0]
        reasons = []
        if first["p99_ms"] > KNEE_P99_MS:
            reasons.append(f"p99 {first['p99_ms']} ms > {KNEE_P99_MS}")
        if first["lost"]:
            # "lost" = not received by the report (the end marker, then <= 5 s): a backlog tail
            # unless the consumers counted sequence gaps (ws_dropped).
            reasons.append(
                f"{first['lost']} not delivered in time (ws_dropped +{first.get('ws_dropped_step')})"
            )
        result["knee_reason"] = "; ".join(reasons) or "nothing delivered"
    else:
        result["knee_reason"] = None
    return result


def step(result: dict, kind: str, rate: int) -> dict | None:
    return next((s for s in result["steps"] if s["kind"] == kind and s["deliveries_per_s"] == rate), None)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def run() -> dict:
    common.setup("fanout")
    from fleet.models import Gateway

    gateway = Gateway.objects.create(name="fanout", url="ws://127.0.0.1:1/", token="x")
    cookie = common.login_cookie()
    knee_plan = [("knee", rate, KNEE_STEP_S) for rate in KNEE_RATES]
    figures: dict = {"clients": CLIENTS}

    figures["loadavg_1m_start"] = round(os.getloadavg()[0], 2)
    runs = [
        # The sustained 60 s run uses the app's default layer (pubsub); core gets the same steps.
        ("core", "core", APP, knee_plan),
        ("pubsub", "pubsub", APP, [("sustained", *SUSTAINED), *knee_plan[1:]]),
    ]
    for label, layer, app, plan in runs:
        common.clear_redis()
        env = common.server_env(AGENTFLOW_CHANNEL_LAYER=layer)
        print(
            f"  AgentFlow, {layer} channel layer",
            flush=True,
        )
        with common.daphne(env, f"fanout-{label}-daphne", app=app) as (proc, url):
            figures[label] = run_steps(
                label, proc, url, "/ws/dashboard/", ["agentflow", str(gateway.pk)], env, plan, cookie
            )
            figures[label]["ws_dropped_total"] = common.ws_dropped(url)
        # Read after Daphne stopped: the clients' mass disconnect is part of the run.
        figures[label]["daphne_exceptions"] = common.app_exceptions(f"fanout-{label}-daphne")
    print("  bare websockets broadcast server", flush=True)
    with bare_server() as (proc, url):
        env = common.server_env()
        figures["bare"] = run_steps(
            "bare",
            proc,
            url,
            "/ws/dashboard/",
            ["bare", url.replace("http://", "ws://") + "/publish"],
            env,
            knee_plan,
        )
    common.clear_redis()
    figures["loadavg_1m_end"] = round(os.getloadavg()[0], 2)

    core, pubsub, bare = figures["core"], figures["pubsub"], figures["bare"]
    sustained = step(pubsub, "sustained", SUSTAINED[0])
    pubsub_1k = sustained
    core_1k, bare_1k = step(core, "knee", 1000), step(bare, "knee", 1000)
    figures["summary"] = {
        "sustained_1k_p50_ms": sustained["p50_ms"],
        "sustained_1k_p99_ms": sustained["p99_ms"],
        "sustained_1k_lost": sustained["lost"],
        "sustained_1k_reordered": sustained["reordered"],
        "sustained_ws_dropped": sustained.get("ws_dropped_step"),
        "knee_core": core["knee_deliveries_per_s"],
        "knee_pubsub": pubsub["knee_deliveries_per_s"],
        "knee_bare": bare["knee_deliveries_per_s"],
        "max_ok_core": core["max_ok_deliveries_per_s"],
        "max_ok_pubsub": pubsub["max_ok_deliveries_per_s"],
        "max_ok_bare": bare["max_ok_deliveries_per_s"],
        "step_1k_p50_ms": {
            "core": core_1k["p50_ms"],
            "pubsub": pubsub_1k["p50_ms"],
            "bare": bare_1k["p50_ms"],
        },
        "step_1k_p99_ms": {
            "core": core_1k["p99_ms"],
            "pubsub": pubsub_1k["p99_ms"],
            "bare": bare_1k["p99_ms"],
        },
        "step_1k_server_cpu_us_per_delivery": {
            "core": core_1k["server_cpu_us_per_delivery"],
            "pubsub": pubsub_1k["server_cpu_us_per_delivery"],
            "bare": bare_1k["server_cpu_us_per_delivery"],
        },
        # AgentFlow as shipped (the default pubsub layer) over the bare websockets server.
        "agentflow_over_bare_1k_p50": ratio(pubsub_1k["p50_ms"], bare_1k["p50_ms"]),
        "agentflow_over_bare_1k_p99": ratio(pubsub_1k["p99_ms"], bare_1k["p99_ms"]),
        "agentflow_over_bare_cpu_per_delivery": ratio(
            pubsub_1k["server_cpu_us_per_delivery"], bare_1k["server_cpu_us_per_delivery"]
        ),
        "agentflow_over_bare_max_ok_rate": ratio(
            pubsub["max_ok_deliveries_per_s"], bare["max_ok_deliveries_per_s"]
        ),
        "pubsub_over_core_1k_p99": ratio(pubsub_1k["p99_ms"], core_1k["p99_ms"]),
        "ws_dropped_total": {"core": core["ws_dropped_total"], "pubsub": pubsub["ws_dropped_total"]},
        "daphne_exceptions": {
            label: figures[label]["daphne_exceptions"]
            for label in ("core", "pubsub")
            if label in figures and figures[label]["daphne_exceptions"]
        },
    }
    s = figures["summary"]
    figures["targets"] = [
        {
            "name": "1k deliveries/s for 60 s: p50 (ms)",
            "value": s["sustained_1k_p50_ms"],
            "target": "<= 20",
            "ok": s["sustained_1k_p50_ms"] <= 20,
        },
        {
            "name": "1k deliveries/s for 60 s: p99 (ms)",
            "value": s["sustained_1k_p99_ms"],
            "target": "<= 100",
            "ok": s["sustained_1k_p99_ms"] <= 100,
        },
        {
            "name": "1k deliveries/s for 60 s: lost",
            "value": s["sustained_1k_lost"],
            "target": "0",
            "ok": s["sustained_1k_lost"] == 0,
        },
        {
            "name": "1k deliveries/s for 60 s: reordered",
            "value": s["sustained_1k_reordered"],
            "target": "0",
            "ok": s["sustained_1k_reordered"] == 0,
        },
        {
            "name": "knee, core layer (deliveries/s; first step with p99 > 250 ms or a loss)",
            "value": s["knee_core"] or f"> {KNEE_RATES[-1]}",
            "target": "> 1000 (reported)",
            "ok": s["max_ok_core"] >= 1000,
        },
    ]
    return figures
