"""Run the benchmarks.

    python -m bench [name ...]                      here; results in bench/results/<name>.json
    python -m bench --baseline REF [--rounds N] ...  REF's bench and this tree's, side by side (compare.py)
    python -m bench tree                            the app packages' module tree with line counts

Names: gateway, batches, fanout, pages, memory, e2e, supervisor, queue, queue_drain, agent_rate, api_runs,
alerts, stop, watch, schedules, webhooks, executor, tracers, flow (all of them when none is given).
``--runs N``: agent_rate's number of runs; ``--minutes N``: schedules' length (default 10); ``--seconds N``:
webhooks' sustained run (default 60)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

BENCHES = [
    "gateway",
    "batches",
    "fanout",
    "pages",
    "queue_page",
    "memory",
    "e2e",
    "supervisor",
    "queue",
    "queue_drain",
    "agent_rate",
    "api_runs",
    "alerts",
    "stop",
    "watch",
    "schedules",
    "webhooks",
    "executor",
    "tracers",
    "flow",
]


def run_here(names: list[str]) -> int:
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    failed = []
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        results = module.run()
        results["elapsed_s"] = round(time.perf_counter() - started, 1)
        (out / f"{name}.json").write_text(json.dumps(results, indent=2))
        for target in results.get("targets", []):
            mark = "PASS" if target["ok"] else "FAIL"
            print(f"  [{mark}] {target['name']}: {target['value']} (target {target['target']})")
            if not target["ok"]:
                failed.append(f"{name}: {target['name']}")
    if failed:
        print("targets missed:\n  " + "\n  ".join(failed))
        return 1
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["tree"]:
        from bench import tree

        return tree.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="name", help=", ".join(BENCHES))
    parser.add_argument("--baseline", metavar="REF", help="also run REF's own bench code, alternating")
    parser.add_argument("--rounds", type=int, default=1, help="with --baseline: baseline/current pairs")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="MODULE.CONSTANT=VALUE",
        help="with --baseline: override a bench constant in both trees, e.g. bench_e2e.SENDS=25",
    )
    parser.add_argument("--runs", type=int, help="agent_rate: how many agent runs (default 100)")
    parser.add_argument("--minutes", type=int, help="schedules: how many minutes of fires (default 10)")
    parser.add_argument("--seconds", type=float, help="webhooks: the sustained run's length (default 60)")
    args = parser.parse_args(argv)
    if args.minutes is not None:
        if args.minutes < 1:
            parser.error("--minutes must be at least 1")
        import os

        os.environ["BENCH_SCHEDULES_MINUTES"] = str(args.minutes)
    if args.seconds is not None:
        if args.seconds <= 0:
            parser.error("--seconds must be positive")
        import os

        os.environ["BENCH_WEBHOOKS_SECONDS"] = str(args.seconds)
    if args.runs is not None:
        if args.runs < 2:
            parser.error("--runs must be at least 2")
        import os

        os.environ["BENCH_AGENT_RATE_RUNS"] = str(args.runs)
    unknown = [n for n in args.names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    names = args.names or BENCHES
    if args.baseline is None:
        if args.rounds != 1 or args.set:
            parser.error("--rounds and --set need --baseline")
        return run_here(names)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    from bench import compare

    bad = [s for s in args.set if "=" not in s or "." not in s.split("=", 1)[0]]
    if bad:
        parser.error(f"--set takes MODULE.CONSTANT=VALUE: {', '.join(bad)}")
    return compare.main(
        args.baseline, names, args.rounds, args.set, command="python -m bench " + " ".join(argv)
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
