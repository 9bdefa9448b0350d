"""Run the benchmarks: ``python -m bench [name ...]`` (names: gateway, batches). Results are
printed and written to bench/results/<name>.json."""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

BENCHES = ["gateway", "batches", "fanout", "pages", "memory", "e2e"]


def main(argv: list[str]) -> int:
    names = argv or BENCHES
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
