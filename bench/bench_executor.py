"""The executor's start-up overhead (issue 12): ``true`` through ``executor.runner.run`` sandboxed
(bubblewrap + prlimit) against unsandboxed (prlimit only, AGENTFLOW_EXECUTOR_SANDBOX=none), median
of BENCH_EXECUTOR_ROUNDS (100) each, interleaved; a bare ``subprocess.run(["true"])`` for
reference. Both executor paths write the same Execution row and audit row, so the difference is
the sandbox's own cost."""

from __future__ import annotations

import logging
import os
import statistics
import subprocess
import time

from bench import _common as common

ROUNDS = int(os.environ.get("BENCH_EXECUTOR_ROUNDS", 100))


def run() -> dict:
    common.setup("executor")
    from django.conf import settings

    from executor import runner
    from executor.models import Execution

    logging.getLogger("executor").setLevel(logging.ERROR)  # the unsandboxed runs' warning, 100 times
    settings.AGENTFLOW_EXECUTOR_ENABLED = True
    settings.AGENTFLOW_EXECUTOR_ALLOWLIST = "executor.allowlist"
    problem = runner.sandbox_problem()
    timings: dict[str, list[float]] = {"bwrap": [], "none": [], "bare": []}
    for _ in range(ROUNDS):
        for mode in ("bwrap", "none") if not problem else ("none",):
            settings.AGENTFLOW_EXECUTOR_SANDBOX = mode
            started = time.perf_counter()
            result = runner.run("true", asked_by="bench")
            timings[mode].append((time.perf_counter() - started) * 1000)
            assert result.exit_code == 0, result.stderr
        started = time.perf_counter()
        subprocess.run(["true"], check=True)
        timings["bare"].append((time.perf_counter() - started) * 1000)
    Execution.objects.filter(asked_by="bench").delete()
    med = {mode: round(statistics.median(values), 2) if values else None for mode, values in timings.items()}
    overhead = round(med["bwrap"] - med["none"], 2) if med["bwrap"] is not None else None
    print(
        f"  true: sandboxed {med['bwrap']} ms, unsandboxed {med['none']} ms, "
        f"bare {med['bare']} ms (median of {ROUNDS})"
    )
    return {
        "rounds": ROUNDS,
        "sandbox_problem": problem,
        "sandboxed_median_ms": med["bwrap"],
        "unsandboxed_median_ms": med["none"],
        "bare_true_median_ms": med["bare"],
        "sandbox_overhead_ms": overhead,
        "sandboxed_p99_ms": round(common.percentile(timings["bwrap"], 99), 2) if timings["bwrap"] else None,
    }
