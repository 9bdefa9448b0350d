"""Agent runs under a rate budget: N agent.prompt runs (100 by default, ``--runs`` or
BENCH_AGENT_RATE_RUNS) enqueued at once against the real demo gateway (openclaw + the stub
model), with a budget of 60 requests/min on the gateway's key, 2 worker processes and the
gateway listener (``manage.py run_gateway_listener``) completing the runs from the gateway's
events. No beat: the pace comes from the engine's admission (holds + wake-ups), not the tick.

Targets: every run succeeds, none fails with a rate-limit error, and the achieved rate (the
attempts' start times: (N - 1) intervals over first → last start) is within 5 % of 60/min."""

from __future__ import annotations

import os
import secrets
import tempfile
import time

from bench import _common as common
from bench.bench_e2e import listener
from bench.bench_queue import drain_broker, start_workers, wait_ready

RUNS = int(os.environ.get("BENCH_AGENT_RATE_RUNS", 100))
BUDGET_RPM = 60.0


def run() -> dict:
    common.setup("agent_rate")
    from demo.gateway import DEFAULT_AGENTS, DemoGateway, ensure_installed
    from fleet import batches
    from fleet.models import Gateway
    from scheduler import limits, queue, runner
    from scheduler.models import Attempt, Run
    from tests.support.ports import free_port_block

    ensure_installed()
    Gateway.objects.all().delete()
    Run.objects.all().delete()
    drain_broker()
    agent = DEFAULT_AGENTS[0].id
    with (
        tempfile.TemporaryDirectory() as state,
        DemoGateway(state, free_port_block(), secrets.token_hex(16)) as gw,
    ):
        gateway = Gateway.objects.create(name="rate", url=gw.url, token=gw.token)
        runner.run(batches.CONFIG_POLLING, gateway, batches.poll_config)  # its agents
        limits.set_budget(limits.gateway_key(gateway.pk), f"{BUDGET_RPM:g}rpm")
        # the budget, not the concurrency limits, sets the pace (the workers read these)
        os.environ.update(AGENTFLOW_AGENT_CONCURRENCY="8", AGENTFLOW_GATEWAY_CONCURRENCY="8")
        env = common.server_env()
        procs = start_workers(2)
        try:
            wait_ready(procs)
            with listener(env, gateway.pk):
                enqueued = time.perf_counter()
                ids = [
                    queue.enqueue(
                        kind="agent.prompt",
                        params={"gateway": gateway.pk, "agent": agent},
                        prompt=f"rate bench {i}: say ok",
                        timeout_seconds=120,
                    ).pk
                    for i in range(RUNS)
                ]
                deadline = time.monotonic() + RUNS * 60 / BUDGET_RPM + 120
                while Run.objects.filter(pk__in=ids, status__in=Run.FINAL).count() < RUNS:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
                elapsed = time.perf_counter() - enqueued
        finally:
            for proc in procs:
                common.stop(proc)
            drain_broker()
    runs = Run.objects.filter(pk__in=ids)
    by_status: dict[str, int] = {}
    for status in runs.values_list("status", flat=True):
        by_status[status] = by_status.get(status, 0) + 1
    rate_limited = Attempt.objects.filter(run__in=runs, error_class="rate_limit").count()
    starts = sorted(Attempt.objects.filter(run__in=runs).values_list("started_at", flat=True))
    span = (starts[-1] - starts[0]).total_seconds() if len(starts) > 1 else 0.0
    achieved = (len(starts) - 1) / span * 60 if span else 0.0
    deviation = abs(achieved - BUDGET_RPM) / BUDGET_RPM
    succeeded = by_status.get("succeeded", 0)
    print(
        f"  {RUNS} runs: {by_status}; {len(starts)} attempts over {span:.1f}s, achieved "
        f"{achieved:.2f}/min against {BUDGET_RPM:g} ({deviation:.1%}); {rate_limited} rate-limit failures; "
        f"all done in {elapsed:.1f}s"
    )
    common.clear_redis()
    return {
        "runs": RUNS,
        "budget_rpm": BUDGET_RPM,
        "statuses": by_status,
        "attempts": len(starts),
        "span_s": round(span, 2),
        "achieved_rpm": round(achieved, 2),
        "deviation": round(deviation, 4),
        "rate_limit_failures": rate_limited,
        "targets": [
            {"name": "runs succeeded", "value": succeeded, "target": f"{RUNS}", "ok": succeeded == RUNS},
            {"name": "rate-limit failures", "value": rate_limited, "target": "0", "ok": rate_limited == 0},
            {
                "name": "achieved rate vs 60/min",
                "value": f"{achieved:.2f}/min ({deviation:.1%})",
                "target": "within 5 %",
                "ok": deviation <= 0.05,
            },
        ],
    }
