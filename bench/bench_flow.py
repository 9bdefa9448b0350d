"""The coding-assistant flow end to end on the demo gateway (issue 12): wall time and the share
spent in AgentFlow versus the gateway, median of BENCH_FLOW_ROUNDS (3) runs.

Set-up as under ``make run``, minus the pages: the real demo gateway (OpenClaw + the stub model
with its skills, demo/skills.py), ``manage.py run_gateway_listener`` in its own process
completing the agent runs, the executor on (bubblewrap) for the pytest step, and the flow
driven here by ``flows.api.run`` (what ``manage.py run_flow`` does). Each round runs
examples/multi_agent/coding_assistant/flow.yaml once (inspect → draft → patch → tests → review
→ route → summary; the draft fixes the sample's bug, so one draft and one review).

The split comes from the flow's own spans (flows.Span rows):

* gateway: the agent runs' child spans (claimed → finished: the chat.send, OpenClaw's turn with
  the canned model, the listener's terminal event; AgentFlow's own send and settle are inside);
  ``to model`` is the part from the claim until the model's HTTP request arrived (the stub's
  arrival time), i.e. AgentFlow's send plus OpenClaw's preparation of the turn;
* sandbox: the command run's child span (bubblewrap + pytest on the sample's tests);
* AgentFlow: the rest of the flow's root span (the engine, the local steps, the waits between
  a child's end and the engine noticing it, the span and state writes); ``agent_end_to_step_end``
  is the part from an agent run's end to its step's end (the engine polls the run every
  ``flows.engine.POLL_SECONDS``, 0.2 s, in ``run_flow``)."""

from __future__ import annotations

import os
import secrets
import statistics
import tempfile
import time

from bench import _common as common
from bench.bench_e2e import listener

ROUNDS = int(os.environ.get("BENCH_FLOW_ROUNDS", 3))
FLOW = "examples/multi_agent/coding_assistant/flow.yaml"
REQUEST = "median() is wrong for an even number of values: median([1, 2]) raises IndexError"


def _seconds(span) -> float:
    return (span.end_ns - span.start_ns) / 1e9


def _round(i: int, gw, api, span_model) -> dict:
    """One run of the flow; its timings from its spans."""
    mark = f"bench-{i}-{secrets.token_hex(3)}"
    started = time.perf_counter()
    result = api.run(FLOW, {"request": f"{REQUEST} ({mark})"}, triggered_by="bench flow")
    wall = time.perf_counter() - started
    if result.status != "succeeded" or result.context.get("review", {}).get("verdict") != "OK":
        raise RuntimeError(f"round {i}: {result.status} {result.error} {result.context.get('errors')}")
    spans = list(span_model.objects.filter(run_id=result.run_id))
    root = next(s for s in spans if not s.parent_span_id)
    agents = sorted((s for s in spans if s.kind == "agent"), key=lambda s: s.start_ns)
    commands = [s for s in spans if s.kind == "command"]
    arrivals = [a.at for a in gw.stub_server.arrivals() if mark in a.text]
    to_model = [at - s.start_ns / 1e9 for s, at in zip(agents, arrivals, strict=False)]
    by_id = {s.span_id: s for s in spans}
    # An agent run's end → its step's end: the engine noticing (it polls) and the step's finish.
    noticed = [(by_id[s.parent_span_id].end_ns - s.end_ns) / 1e9 for s in agents if s.parent_span_id in by_id]
    flow_s = _seconds(root)
    gateway_s = sum(map(_seconds, agents))
    sandbox_s = sum(map(_seconds, commands))
    return {
        "wall_s": wall,
        "flow_span_s": flow_s,
        "gateway_s": gateway_s,
        "to_model_s": sum(to_model),
        "sandbox_s": sandbox_s,
        "agentflow_s": flow_s - gateway_s - sandbox_s,
        "agent_end_to_step_end_s": sum(noticed),
        "agent_runs": len(agents),
    }


def run() -> dict:
    common.setup("flow")
    from django.conf import settings

    from demo.gateway import DemoGateway, ensure_installed
    from executor import runner as executor_runner
    from fleet import batches
    from fleet.models import Gateway
    from flows import api
    from flows.models import Span
    from scheduler import runner
    from scheduler.models import Run
    from tests.support.ports import free_port_block

    settings.AGENTFLOW_EXECUTOR_ENABLED = True
    settings.AGENTFLOW_EXECUTOR_SANDBOX = "bwrap"
    problem = executor_runner.sandbox_problem()
    if problem:
        raise RuntimeError(f"the executor's sandbox does not work here ({problem}): run bin/ensure-bwrap")
    ensure_installed()
    Gateway.objects.all().delete()
    Run.objects.all().delete()
    rounds: list[dict] = []
    with (
        tempfile.TemporaryDirectory() as state,
        DemoGateway(state, free_port_block(), secrets.token_hex(16)) as gw,
    ):
        gateway = Gateway.objects.create(name="flow-bench", url=gw.url, token=gw.token)
        runner.run(batches.CONFIG_POLLING, gateway, batches.poll_config)  # its agents
        with listener(common.server_env(), gateway.pk):
            for i in range(ROUNDS + 1):  # round 0 warms the gateway's agent (not counted)
                row = _round(i, gw, api, Span)
                print(
                    f"  round {i}{' (warm-up)' if i == 0 else ''}: wall {row['wall_s']:.2f}s, flow span "
                    f"{row['flow_span_s']:.2f}s = gateway {row['gateway_s']:.2f}s ({row['agent_runs']} agent "
                    f"runs; {row['to_model_s']:.2f}s of it before the model's request) + sandbox "
                    f"{row['sandbox_s']:.2f}s + AgentFlow {row['agentflow_s']:.2f}s (of it "
                    f"{row['agent_end_to_step_end_s']:.2f}s from the agent runs' ends to their steps' ends)",
                    flush=True,
                )
                if i:
                    rounds.append(row)
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    share = {k: med[k] / med["flow_span_s"] for k in ("gateway_s", "sandbox_s", "agentflow_s")}
    print(
        f"  median of {ROUNDS}: wall {med['wall_s']:.2f}s; gateway {med['gateway_s']:.2f}s "
        f"({share['gateway_s']:.0%}), sandbox {med['sandbox_s']:.2f}s ({share['sandbox_s']:.0%}), "
        f"AgentFlow {med['agentflow_s']:.2f}s ({share['agentflow_s']:.0%})"
    )
    common.clear_redis()
    return {
        "rounds": ROUNDS,
        "median": {k: round(v, 3) for k, v in med.items()},
        "share_of_flow": {k: round(v, 3) for k, v in share.items()},
        "per_round": [{k: round(v, 3) for k, v in r.items()} for r in rounds],
    }
