"""The import rules of ARCHITECTURE.md are executable: make lint fails the day one is broken.

These run the real tools (import-linter, ruff) on a copy of the tree with one rule broken, so a
contract that silently stopped matching anything would fail here, not pass forever.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APPS = ("openclaw", "agentflow", "scheduler", "fleet", "webhooks", "executor", "flows", "dashboard")
BIN = Path(sys.executable).parent


def python_files(*packages: str) -> list[Path]:
    return [p for package in packages for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts]


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of the app packages and the lint configuration, to break rules in."""
    for package in APPS:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def ruff(cwd: Path, *paths: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ruff"), "check", "--no-cache", *paths],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_contracts_hold_on_the_tree_as_it_is(tree):
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "fleet/sessions.py",
            "from dashboard import views",
            "Only agentflow.urls and agentflow.asgi import dashboard",
        ),
        ("scheduler/runner.py", "from fleet import models", "Layers"),
        ("webhooks/intake.py", "from fleet import models", "Layers"),  # siblings are independent
        ("fleet/services.py", "import webhooks", "Layers"),
        ("scheduler/queue.py", "from webhooks import models", "scheduler imports agentflow.lib only"),
        ("scheduler/tasks.py", "import openclaw", "scheduler imports agentflow.lib only"),
        ("agentflow/lib/locks.py", "import scheduler", "agentflow.lib imports no project app"),
        ("openclaw/frames.py", "import django", "openclaw imports no Django"),
        ("openclaw/errors.py", "from agentflow.lib import redis", "openclaw imports no Django"),
    ],
)
def test_an_import_against_the_rules_breaks_a_contract(tree, module, line, contract):
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    broken = [text for text in result.stdout.splitlines() if text.rstrip().endswith("BROKEN")]
    assert any(text.startswith(contract) for text in broken), result.stdout


@pytest.mark.parametrize(
    ("code", "rule"),
    [
        ("import subprocess\n", "TID251"),
        ("from subprocess import run\n", "TID251"),
        ("from celery import current_app\n\ncurrent_app.send_task('scheduler.tasks.run_batch')\n", "TID251"),
        ("import os\n\nos.system('true')\n", "TID251"),
    ],
)
def test_app_code_may_not_start_processes_or_send_tasks_by_name(tree, code, rule):
    (tree / "fleet" / "sneaky.py").write_text(
        '"""A module breaking a rule."""\n\nfrom __future__ import annotations\n\n' + code
    )
    result = ruff(tree, "fleet/sneaky.py")
    assert result.returncode != 0 and rule in result.stdout, result.stdout


def test_a_module_without_future_annotations_is_refused(tree):
    (tree / "fleet" / "old_style.py").write_text('"""No future import."""\n\nX = 1\n')
    result = ruff(tree, "fleet/old_style.py")
    assert result.returncode != 0 and "I002" in result.stdout, result.stdout


def test_only_the_two_entry_points_import_the_dashboard():
    pattern = re.compile(r"^\s*(from dashboard\b|import dashboard\b)", re.M)
    importers = {
        str(p.relative_to(ROOT))
        for p in python_files("openclaw", "agentflow", "scheduler", "fleet", "demo")
        if pattern.search(p.read_text())
    }
    assert importers == {"agentflow/urls.py", "agentflow/asgi.py"} - {
        "agentflow/urls.py"
    }  # urls uses include()


def test_openclaw_mentions_no_django_import():
    pattern = re.compile(
        r"^\s*(from|import)\s+(django|channels|celery|agentflow|fleet|scheduler|dashboard)\b", re.M
    )
    assert [str(p.relative_to(ROOT)) for p in python_files("openclaw") if pattern.search(p.read_text())] == []
