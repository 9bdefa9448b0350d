"""bench/compare.py: the side-by-side table, and the runner's isolation of the two trees (run for real
in subprocesses, on two throwaway trees whose bench records what it saw)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench import compare


def pages(p95: float, queries: int, build: float = 20.0) -> dict:
    return {
        "pages": {"overview": {"p50_ms": p95 / 2, "p95_ms": p95, "queries": queries}},
        "overview_parts": {"build_ms_median": build},
    }


def row(rows: list[dict], metric: str) -> dict:
    return next(r for r in rows if r["metric"] == metric)


def test_it_quotes_medians_over_rounds_and_flags_latency_beyond_the_noise_band():
    baseline = [pages(40, 8), pages(44, 8), pages(90, 8)]  # one noisy round: the median ignores it
    current = [pages(52, 8), pages(60, 8), pages(58, 8)]
    rows = compare.compare_rows("pages", baseline, current)

    p95 = row(rows, "overview p95 ms")
    assert (p95["baseline_median"], p95["current_median"], p95["ratio"]) == (44, 58, 1.32)
    assert p95["flag"] == "WORSE"
    assert row(rows, "overview queries")["flag"] == ""
    assert row(rows, "overview build ms (median)")["flag"] == ""


def test_a_ratio_within_the_band_is_noise_and_any_extra_query_is_a_regression():
    rows = compare.compare_rows("pages", [pages(40, 7, build=20)], [pages(49, 8, build=12)])

    assert row(rows, "overview p95 ms")["ratio"] == 1.23
    assert row(rows, "overview p95 ms")["flag"] == ""
    assert row(rows, "overview queries")["flag"] == "WORSE"
    assert row(rows, "overview build ms (median)")["flag"] == "better"


def test_throughput_is_worse_when_it_drops_below_the_band():
    def batches(rate: int) -> dict:
        return {"cleanup": {"rows_per_s": rate}}

    rows = compare.compare_rows("batches", [batches(100_000)], [batches(79_000)])
    assert row(rows, "cleanup rows/s")["flag"] == "WORSE"
    rows = compare.compare_rows("batches", [batches(100_000)], [batches(85_000)])
    assert row(rows, "cleanup rows/s")["flag"] == ""


def test_a_metric_one_tree_does_not_report_is_flagged_missing():
    rows = compare.compare_rows("pages", [pages(40, 7)], [{"pages": {}}])
    assert row(rows, "overview p95 ms")["flag"] == "missing"
    assert row(rows, "overview p95 ms")["current_median"] is None


def test_an_uncurated_bench_compares_its_ms_and_per_s_figures():
    rows = compare.compare_rows(
        "other", [{"a": {"x_ms": 10, "rate_per_s": 100, "label": 3}}], [{"a": {"x_ms": 20, "rate_per_s": 90}}]
    )
    assert {(r["metric"], r["flag"]) for r in rows} == {("a.x_ms", "WORSE"), ("a.rate_per_s", "")}


def fake_tree(root: Path, version: str) -> Path:
    """A tree whose bench writes what the runner gave it: prefix, database dir, its own version."""
    (root / "bench").mkdir(parents=True)
    (root / "bench" / "__init__.py").write_text("")
    (root / "bench" / "bench_pages.py").write_text("SAMPLES = 30\n")
    (root / "bench" / "_common.py").write_text(
        "import os\ndef setup(name):\n    os.environ['AGENTFLOW_REDIS_PREFIX'] = f'agentflow-bench-{name}'\n"
    )
    (root / "bench" / "__main__.py").write_text(
        "import json, os, sys\n"
        "from pathlib import Path\n"
        "from bench import _common as common, bench_pages\n"
        "def main(argv):\n"
        "    common.setup(argv[0])\n"
        "    out = Path(__file__).parent / 'results'\n"
        "    out.mkdir(exist_ok=True)\n"
        "    figures = {'prefix': os.environ['AGENTFLOW_REDIS_PREFIX'],\n"
        "               'bench_dir': os.environ['AGENTFLOW_BENCH_DIR'],\n"
        f"               'version': {version!r}, 'cwd': os.getcwd(), 'samples': bench_pages.SAMPLES,\n"
        "               'targets': [{'name': 'fake', 'ok': False}]}\n"
        "    (out / f'{argv[0]}.json').write_text(json.dumps(figures))\n"
        "    return 1\n"
    )
    return root


def test_each_tree_runs_its_own_bench_with_its_own_prefix_database_and_results(tmp_path, monkeypatch):
    monkeypatch.delenv("AGENTFLOW_BENCH_DIR", raising=False)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(compare, "ROOT", tmp_path)  # run results are recorded relative to it
    trees = [
        compare.Tree("baseline", fake_tree(tmp_path / "old", "old"), "a" * 40, tag="baseline-1"),
        compare.Tree("current", fake_tree(tmp_path / "new", "new"), "b" * 40, tag="current-1"),
    ]
    runs = [compare.run_one(tree, "pages", 1, out, ["bench_pages.SAMPLES=5"]) for tree in trees]

    old, new = (r.figures for r in runs)
    assert (old["version"], new["version"]) == ("old", "new")
    assert os.path.realpath(old["cwd"]) == os.path.realpath(tmp_path / "old")
    assert (old["prefix"], new["prefix"]) == (
        "agentflow-bench-baseline-1-pages",
        "agentflow-bench-current-1-pages",
    )
    assert old["bench_dir"] != new["bench_dir"]
    assert (old["samples"], new["samples"]) == (5, 5)  # --set reaches both trees' own modules
    assert [r.rc for r in runs] == [1, 1]  # a missed target is a result, not a failed run
    assert runs[0].targets_missed == ["fake"]
    assert json.loads((out / "baseline-pages-r1.json").read_text())["version"] == "old"
    assert json.loads((out / "current-pages-r1.json").read_text())["version"] == "new"


def test_a_run_that_crashes_before_writing_results_has_none(tmp_path, monkeypatch):
    root = fake_tree(tmp_path / "broken", "x")
    (root / "bench" / "__main__.py").write_text("import dashboard.broadcast\n")  # the old path, gone
    (root / "bench" / "results").mkdir()
    (root / "bench" / "results" / "pages.json").write_text("{}")  # a previous run's: not this one's
    run = compare.run_one(compare.Tree("baseline", root, "c" * 40, tag="t"), "pages", 1, tmp_path)
    assert run.rc != 0
    assert run.result_file is None and run.figures is None
    assert "ModuleNotFoundError" in (tmp_path / "baseline-pages-r1.log").read_text()


def test_figures_are_printed_as_measured_without_trailing_zeros():
    assert [compare._num(v) for v in (None, 2.0, 2.5, 69.15, 0.004, 12345.6)] == [
        "—",
        "2",
        "2.5",
        "69.15",
        "0.004",
        "12,346",
    ]


def test_an_override_of_a_constant_a_tree_lacks_stops_that_run(tmp_path):
    root = fake_tree(tmp_path / "old", "old")
    run = compare.run_one(
        compare.Tree("baseline", root, "d" * 40, tag="t"), "pages", 1, tmp_path, ["bench_pages.NOPE=1"]
    )
    assert run.rc != 0 and run.figures is None
    assert "bench.bench_pages has no NOPE" in (tmp_path / "baseline-pages-r1.log").read_text()


def test_an_override_applies_to_its_own_bench_and_shared_modules_only():
    overrides = ["bench_e2e.SENDS=25", "_common.LOGS='x'", "bench_pages.SAMPLES=5"]
    assert compare.applicable(overrides, "e2e") == ["bench_e2e.SENDS=25", "_common.LOGS='x'"]
    assert compare.applicable(overrides, "fanout") == ["_common.LOGS='x'"]


def test_a_saved_comparison_is_re_tabulated_from_its_per_run_results(tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "ROOT", tmp_path)
    (tmp_path / "b.json").write_text(json.dumps(pages(40, 7)))
    (tmp_path / "c.json").write_text(json.dumps(pages(80, 7)))
    run = {"name": "pages", "round": 1, "rc": 1, "elapsed_s": 1.0, "targets_missed": []}
    report = {
        "command": "python -m bench --baseline X pages",
        "started": "now",
        "baseline": {"ref": "X", "sha": "a" * 40},
        "current": {"sha": "b" * 40, "dirty": False},
        "rounds": 1,
        "overrides": [],
        "loadavg_start": 1.0,
        "loadavg_end": 1.0,
        "runs": [
            {**run, "tree": "baseline", "result_file": "b.json"},
            {**run, "tree": "current", "result_file": "c.json"},
        ],
        "rows": [],
    }
    (tmp_path / "compare-now.json").write_text(json.dumps(report))

    text = compare.retable(tmp_path / "compare-now.json")

    assert "| pages | overview p95 ms | 40 | 80 | 2.00 | WORSE |" in text
    assert (tmp_path / "compare-now.md").read_text() == text
    assert (
        row(json.loads((tmp_path / "compare-now.json").read_text())["rows"], "overview p95 ms")["ratio"]
        == 2.0
    )
