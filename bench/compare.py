"""Side by side: ``python -m bench --baseline REF [--rounds N] name ...``.

1. Extract REF with ``git archive REF | tar -x`` into ``var/bench-baseline-<sha>/`` (no worktree,
   nothing checked out; reused while its marker names the same commit).
2. For each round, for each name: run the baseline tree's bench, then the current tree's, each in its
   own subprocess with the working directory (and PYTHONPATH) at that tree. Each tree runs its OWN
   bench code: a baseline from before a restructure imports the old module paths.
3. Collect the JSON each run writes to ``<tree>/bench/results/<name>.json`` (copied into
   ``bench/results/compare-<timestamp>/``), take the median over rounds of each metric in METRICS and
   write ``bench/results/compare-<timestamp>.json`` and ``.md``: baseline median, current median,
   current/baseline, flagged when worse than the noise band.

What keeps the two trees apart (they never run at the same time, but other benchmark runs may):

* database: ``AGENTFLOW_BENCH_DIR`` per tree (``<tree>/var/bench``, or ``$AGENTFLOW_BENCH_DIR/<tree>``);
* Redis: each bench's ``_common.setup(name)`` hard-codes the prefix ``agentflow-bench-<name>``, in the
  baseline too, so the runner wraps ``setup`` to tag the name with the tree and this process id
  (``agentflow-bench-baseline-<pid>-pages``); keys, the Celery queue and the channel layer's pubsub
  channels all derive from that prefix;
* ports: every bench asks the kernel for free loopback ports when it starts its servers, and the runs
  are sequential;
* logs: ``<tree>/var/bench-logs``; results: ``<tree>/bench/results``."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

# current/baseline beyond which a metric counts as a regression rather than machine noise (2 noisy
# cores: single figures move by 10-20 % between back-to-back runs).
LATENCY_BAND = 1.25
THROUGHPUT_BAND = 0.8

# kinds: "lower" (latency, CPU, memory: worse above LATENCY_BAND), "higher" (throughput: worse below
# THROUGHPUT_BAND), "count" (queries, losses: any increase is worse), "count_higher" (any decrease).
_PAGES = (
    "overview",
    "fragment_gateway",
    "fragment_fleet_active",
    "session_1000_messages",
    "overview_agent_main",
)
METRICS: dict[str, list[tuple[str, tuple[str, ...], str]]] = {
    "pages": [
        (f"{page} {stat}", ("pages", page, key), kind)
        for page in _PAGES
        for stat, key, kind in (
            ("p50 ms", "p50_ms", "lower"),
            ("p95 ms", "p95_ms", "lower"),
            ("queries", "queries", "count"),
        )
    ]
    + [
        ("overview build ms (median)", ("overview_parts", "build_ms_median"), "lower"),
        ("overview fleet render ms (median)", ("overview_parts", "fleet_render_ms_median"), "lower"),
    ],
    "fanout": [
        ("sustained 1k/s 60 s p50 ms", ("summary", "sustained_1k_p50_ms"), "lower"),
        ("sustained 1k/s 60 s p99 ms", ("summary", "sustained_1k_p99_ms"), "lower"),
        ("sustained 1k/s lost", ("summary", "sustained_1k_lost"), "count"),
        ("sustained 1k/s reordered", ("summary", "sustained_1k_reordered"), "count"),
        *(
            (f"{layer} 1k/s {label}", ("summary", group, layer), "lower")
            for layer in ("core", "pubsub", "bare")
            for label, group in (
                ("p50 ms", "step_1k_p50_ms"),
                ("p99 ms", "step_1k_p99_ms"),
                ("server CPU us/delivery", "step_1k_server_cpu_us_per_delivery"),
            )
        ),
        *(
            (f"{layer} highest passing rate /s", ("summary", f"max_ok_{layer}"), "higher")
            for layer in ("core", "pubsub", "bare")
        ),
        # Within one run, over the bare server on the same machine at the same moment: the load
        # other processes put on the machine largely cancels out.
        ("AgentFlow/bare 1k/s p50", ("summary", "agentflow_over_bare_1k_p50"), "lower"),
        ("AgentFlow/bare 1k/s p99", ("summary", "agentflow_over_bare_1k_p99"), "lower"),
        (
            "AgentFlow/bare server CPU per delivery",
            ("summary", "agentflow_over_bare_cpu_per_delivery"),
            "lower",
        ),
    ],
    "e2e": [
        ("send -> pulse p50 ms", ("send_to_pulse_ms", "p50"), "lower"),
        ("send -> pulse p99 ms", ("send_to_pulse_ms", "p99"), "lower"),
        ("gateway event -> pulse p50 ms (AgentFlow's share)", ("gateway_event_to_pulse_ms", "p50"), "lower"),
        ("gateway event -> pulse p99 ms (AgentFlow's share)", ("gateway_event_to_pulse_ms", "p99"), "lower"),
        ("send -> gateway event p50 ms (gateway)", ("send_to_gateway_event_ms", "p50"), "lower"),
        ("gateway event -> layer p50 ms (listener)", ("gateway_event_to_layer_ms", "p50"), "lower"),
        ("layer -> pulse p50 ms (Daphne + browser)", ("layer_to_pulse_ms", "p50"), "lower"),
        ("chat.send ack p50 ms (gateway)", ("chat_send_ack_ms", "p50"), "lower"),
        ("listener CPU s for the sends", ("cpu_s", "listener"), "lower"),
        ("Daphne CPU s for the sends", ("cpu_s", "daphne"), "lower"),
        ("misses", ("misses",), "count"),
    ],
    "batches": [
        ("10k sessions unchanged cycle CPU s", ("sessions", "unchanged_cycle_cpu_s_median"), "lower"),
        ("unchanged cycle writes", ("sessions", "unchanged_cycle_writes"), "count"),
        ("100 changed: rows written", ("sessions", "changed_100_rows_written"), "count"),
        ("idle chat tick median ms", ("idle_chat_tick", "idle_tick_ms_median"), "lower"),
        ("cleanup rows/s", ("cleanup", "rows_per_s"), "higher"),
        ("cleanup longest batch ms", ("cleanup", "max_batch_ms"), "lower"),
        ("cleanup locked reads", ("cleanup", "concurrent_reads_locked"), "count"),
        ("cleanup worst case rows/s", ("cleanup_worst_case", "rows_per_s"), "higher"),
        ("cleanup worst case longest batch ms", ("cleanup_worst_case", "max_batch_ms"), "lower"),
    ],
    "gateway": [
        ("health p50 ms", ("health_p50_ms",), "lower"),
        ("health p99 ms", ("health_p99_ms",), "lower"),
        ("200 concurrent requests ms", ("concurrent_200_ms",), "lower"),
        ("200 concurrent correlated", ("concurrent_200_correlated",), "count_higher"),
    ],
    "webhooks": [
        ("intake 200/s ack p50 ms", ("intake", "sustained", "p50_ms"), "lower"),
        ("intake 200/s ack p99 ms", ("intake", "sustained", "p99_ms"), "lower"),
        ("intake server CPU ms/request", ("intake", "sustained", "server_cpu_ms_per_request"), "lower"),
        ("intake lost", ("intake", "sustained", "lost"), "count"),
        ("intake duplicated", ("intake", "sustained", "duplicated"), "count"),
        ("intake errors", ("intake", "sustained", "errors"), "count"),
        ("intake highest verified rate /s", ("intake", "highest_verified_rate"), "higher"),
        ("bare 202 highest rate /s", ("bare", "highest_verified_rate"), "higher"),
        ("intake highest rate kept up /s", ("intake", "highest_rate_kept_up"), "higher"),
        ("bare 202 server CPU ms/request", ("bare", "sustained", "server_cpu_ms_per_request"), "lower"),
        # Within one run, over the bare view on the same machine at the same moment.
        ("intake/bare highest rate", ("ratios", "highest_rate_intake_over_bare"), "higher"),
        (
            "intake/bare server CPU per request",
            ("ratios", "server_cpu_per_request_intake_over_bare"),
            "lower",
        ),
    ],
    "memory": [
        ("RSS growth KB per idle websocket", ("growth_kb_per_connection",), "lower"),
        ("idle websockets closed by the server", ("closed_by_server_while_idle",), "count"),
        ("idle layer receives that raised", ("idle_layer_receive_errors",), "count"),
    ],
}

# Run inside each tree as ``python -c SHIM TAG NAME [MODULE.CONSTANT=VALUE ...]``: tags the Redis
# prefix, applies the --set overrides (the same in both trees, so a shortened run stays comparable; a
# constant the tree lacks is an error, not a silent difference), then runs that tree's own
# ``python -m bench NAME``. Only relies on ``_common.setup(name)`` and ``__main__.main(argv)``, which
# both trees have.
SHIM = """
import ast, importlib, sys
from bench import _common
_setup = _common.setup
_common.setup = lambda name: _setup(sys.argv[1] + "-" + name)
for assignment in sys.argv[3:]:
    target, value = assignment.split("=", 1)
    module, constant = target.rsplit(".", 1)
    module = importlib.import_module("bench." + module)
    if not hasattr(module, constant):
        sys.exit(f"--set {assignment}: {module.__name__} has no {constant}")
    setattr(module, constant, ast.literal_eval(value))
    print(f"  (--set {module.__name__}.{constant} = {getattr(module, constant)!r})", flush=True)
from bench.__main__ import main
sys.exit(main(sys.argv[2:3]))
"""


@dataclass
class Tree:
    label: str  # "baseline" or "current"
    root: Path
    sha: str
    tag: str = ""  # Redis prefix tag

    def bench_dir(self) -> Path:
        base = os.environ.get("AGENTFLOW_BENCH_DIR")
        return Path(base) / self.label if base else self.root / "var" / "bench"


@dataclass
class Run:
    tree: str
    name: str
    round: int
    rc: int
    elapsed_s: float
    result_file: str | None = None
    targets_missed: list[str] = field(default_factory=list)
    figures: dict | None = None


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def extract(ref: str) -> Tree:
    """The baseline's files at ``var/bench-baseline-<sha>`` via ``git archive | tar -x``."""
    sha = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    root = ROOT / "var" / f"bench-baseline-{sha[:12]}"
    marker = root / ".bench-baseline"
    if not (marker.is_file() and marker.read_text().strip() == sha):
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        archive = subprocess.Popen(["git", "archive", sha], cwd=ROOT, stdout=subprocess.PIPE)
        untar = subprocess.run(["tar", "-x", "-C", str(root)], stdin=archive.stdout, check=False)
        archive.stdout.close()
        if archive.wait() or untar.returncode:
            raise RuntimeError(f"git archive {sha} | tar -x -C {root} failed")
        marker.write_text(sha + "\n")
    return Tree("baseline", root, sha)


def tree_env(tree: Tree) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        # The bench picks its own database and data dir; a test run's markers must not leak in.
        if k not in ("PYTEST_VERSION", "DATABASE_URL", "AGENTFLOW_DATA_DIR", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        PYTHONPATH=str(tree.root),
        PYTHONUNBUFFERED="1",
        AGENTFLOW_BENCH_DIR=str(tree.bench_dir()),
        # For benches that call setup_django() without _common.setup (batches): its setdefault.
        AGENTFLOW_REDIS_PREFIX=f"agentflow-bench-{tree.tag}",
    )
    return env


def applicable(overrides: list[str], name: str) -> list[str]:
    """The overrides for this bench: its own module's (bench_<name>.X) and the shared ones (_common.X)."""
    return [o for o in overrides if not o.startswith("bench_") or o.startswith(f"bench_{name}.")]


def run_one(tree: Tree, name: str, round_no: int, out: Path, overrides: list[str] = ()) -> Run:
    result = tree.root / "bench" / "results" / f"{name}.json"
    result.unlink(missing_ok=True)  # what is there afterwards was written by this run
    log = out / f"{tree.label}-{name}-r{round_no}.log"
    print(f"== [{tree.label} {tree.sha[:9]}] {name}, round {round_no}", flush=True)
    started = time.perf_counter()
    with log.open("w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-c", SHIM, tree.tag, name, *applicable(overrides, name)],
            cwd=tree.root,
            env=tree_env(tree),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for line in proc.stdout:
            handle.write(line)
            print(f"  {tree.label[0]}| {line}", end="", flush=True)
        rc = proc.wait()
    run = Run(tree.label, name, round_no, rc, round(time.perf_counter() - started, 1))
    if result.is_file():
        copy = out / f"{tree.label}-{name}-r{round_no}.json"
        shutil.copyfile(result, copy)
        run.result_file = str(copy.relative_to(ROOT))
        run.figures = json.loads(result.read_text())
        run.targets_missed = [t["name"] for t in run.figures.get("targets", []) if not t.get("ok")]
    return run


def lookup(figures: dict | None, path: tuple[str, ...]) -> float | None:
    value: object = figures
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def metrics_for(name: str, figures: list[dict]) -> list[tuple[str, tuple[str, ...], str]]:
    """The curated metrics, or for a bench without any every numeric *_ms / *per_s leaf."""
    if name in METRICS:
        return METRICS[name]
    found: dict[tuple[str, ...], str] = {}

    def walk(value: object, path: tuple[str, ...]) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(sub, (*path, str(key)))
        elif path and isinstance(value, int | float) and not isinstance(value, bool):
            if path[-1].endswith("_ms"):
                found[path] = "lower"
            elif path[-1].endswith("per_s"):
                found[path] = "higher"

    for item in figures:
        walk(item, ())
    return [(".".join(path), path, kind) for path, kind in found.items()]


def flag(kind: str, baseline: float | None, current: float | None) -> str:
    if baseline is None or current is None:
        return "missing"
    if kind == "count":
        return "WORSE" if current > baseline else ("better" if current < baseline else "")
    if kind == "count_higher":
        return "WORSE" if current < baseline else ("better" if current > baseline else "")
    if baseline == 0:
        return "" if current == 0 else ("WORSE" if kind == "lower" else "better")
    ratio = current / baseline
    if kind == "lower":
        return "WORSE" if ratio > LATENCY_BAND else ("better" if ratio < 1 / LATENCY_BAND else "")
    return "WORSE" if ratio < THROUGHPUT_BAND else ("better" if ratio > 1 / THROUGHPUT_BAND else "")


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def compare_rows(name: str, baseline: list[dict], current: list[dict]) -> list[dict]:
    """One row per metric: every round's value per tree, the medians, current/baseline and the flag."""
    rows = []
    for label, path, kind in metrics_for(name, baseline + current):
        b = [lookup(f, path) for f in baseline]
        c = [lookup(f, path) for f in current]
        bm, cm = median(b), median(c)
        rows.append(
            {
                "bench": name,
                "metric": label,
                "kind": kind,
                "baseline": b,
                "current": c,
                "baseline_median": bm,
                "current_median": cm,
                "ratio": round(cm / bm, 2) if bm and cm is not None else None,
                "flag": flag(kind, bm, cm),
            }
        )
    return rows


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000 or value == int(value):
        return f"{value:,.0f}"
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text if text not in ("0", "-0") else f"{value:.2g}"  # a CPU share of 0.004 s is not 0


def markdown(report: dict) -> str:
    b, c = report["baseline"], report["current"]
    lines = [
        f"# Benchmarks side by side ({report['started']})",
        "",
        f"`{report['command']}`: baseline `{b['ref']}` = {b['sha'][:9]}, current {c['sha'][:9]}"
        + (" + uncommitted changes" if c["dirty"] else "")
        + f"; {report['rounds']} round(s), alternating baseline/current; medians over rounds."
        + "".join(f" Both trees ran with `{o}`." for o in report["overrides"]),
        f"Flagged WORSE: latency-like ratio > {LATENCY_BAND}, throughput ratio < {THROUGHPUT_BAND}, any count"
        " (queries, losses) higher.",
        f"Load average at start {report['loadavg_start']}, at end {report['loadavg_end']}.",
        "",
        "| bench | metric | baseline median | current median | current/baseline | flag |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for row in report["rows"]:
        ratio = "—" if row["ratio"] is None else f"{row['ratio']:.2f}"
        lines.append(
            f"| {row['bench']} | {row['metric']} | {_num(row['baseline_median'])}"
            f" | {_num(row['current_median'])} | {ratio} | {row['flag']} |"
        )
    lines += ["", "| run | exit | elapsed s | targets missed |", "| --- | ---: | ---: | --- |"]
    for run in report["runs"]:
        missed = "; ".join(run["targets_missed"]) if run["result_file"] else "**no results written**"
        lines.append(
            f"| {run['tree']} {run['name']} r{run['round']} | {run['rc']} | {run['elapsed_s']} | {missed} |"
        )
    return "\n".join(lines) + "\n"


def retable(path: Path) -> str:
    """Recompute a saved comparison's table from its per-run JSON (after METRICS changed)."""
    report = json.loads(path.read_text())
    runs = report["runs"]
    for run in runs:
        run["figures"] = json.loads((ROOT / run["result_file"]).read_text()) if run["result_file"] else None
    names = list(dict.fromkeys(run["name"] for run in runs))
    report["rows"] = [
        row
        for name in names
        for row in compare_rows(
            name,
            [r["figures"] for r in runs if r["name"] == name and r["tree"] == "baseline" and r["figures"]],
            [r["figures"] for r in runs if r["name"] == name and r["tree"] == "current" and r["figures"]],
        )
    ]
    for run in runs:
        del run["figures"]
    path.write_text(json.dumps(report, indent=2))
    text = markdown(report)
    path.with_suffix(".md").write_text(text)
    return text


def main(ref: str, names: list[str], rounds: int, overrides: list[str] = (), command: str = "") -> int:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"compare-{stamp}"
    out.mkdir()
    baseline = extract(ref)
    status = git("status", "--porcelain", "--untracked-files=no")
    current = Tree("current", ROOT, git("rev-parse", "HEAD"))
    for tree in (baseline, current):
        tree.tag = f"{tree.label}-{os.getpid()}"
    report: dict = {
        "command": command,
        "started": stamp,
        "baseline": {"ref": ref, "sha": baseline.sha, "root": str(baseline.root.relative_to(ROOT))},
        "current": {"sha": current.sha, "dirty": bool(status)},
        "rounds": rounds,
        "overrides": list(overrides),
        "bands": {"latency": LATENCY_BAND, "throughput": THROUGHPUT_BAND},
        "loadavg_start": round(os.getloadavg()[0], 2),
    }
    runs: list[Run] = []
    for round_no in range(1, rounds + 1):
        for name in names:
            for tree in (baseline, current):
                runs.append(run_one(tree, name, round_no, out, overrides))
    report["loadavg_end"] = round(os.getloadavg()[0], 2)
    report["rows"] = [
        row
        for name in names
        for row in compare_rows(
            name,
            [r.figures for r in runs if r.name == name and r.tree == "baseline" and r.figures],
            [r.figures for r in runs if r.name == name and r.tree == "current" and r.figures],
        )
    ]
    report["runs"] = [{k: v for k, v in vars(r).items() if k != "figures"} for r in runs]
    (RESULTS / f"compare-{stamp}.json").write_text(json.dumps(report, indent=2))
    text = markdown(report)
    (RESULTS / f"compare-{stamp}.md").write_text(text)
    print("\n" + text)
    print(
        f"saved bench/results/compare-{stamp}.json and .md"
        f" (per-run JSON and logs in {out.relative_to(ROOT)}/)"
    )
    failed = [r for r in runs if r.result_file is None]
    worse = [row for row in report["rows"] if row["flag"] in ("WORSE", "missing")]
    return 1 if failed or worse else 0


if __name__ == "__main__":
    # python -m bench.compare bench/results/compare-<timestamp>.json: re-tabulate a saved comparison.
    print(retable(Path(sys.argv[1]).resolve()))
