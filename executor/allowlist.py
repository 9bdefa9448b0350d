"""The default allowlist, fixed at deploy time (``AGENTFLOW_EXECUTOR_ALLOWLIST`` names the module).

Each entry: a name, an argv template (``{arg}`` stands for the caller's arguments, each checked
against ``arg_pattern``), ``network``, limits and a timeout. The admin can disable an entry
(``executor.models.DisabledEntry``), never add one.
"""

from __future__ import annotations

import sys

from executor.entries import Entry

# The interpreter that runs AgentFlow (its virtualenv has pytest), bound read-only into the sandbox.
PYTHON_PREFIXES = tuple(dict.fromkeys((sys.prefix, sys.base_prefix)))

ENTRIES = [
    Entry("true", ["true"], max_args=0, description="Does nothing (benchmarks, health)."),
    Entry(
        "pytest",
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "{args}"],
        arg_pattern=r"[A-Za-z0-9_][A-Za-z0-9_./-]*(::[A-Za-z0-9_]+)?|-x|-q",
        max_args=8,
        timeout=120,
        ro_binds=PYTHON_PREFIXES,
        # Not the plugins of AgentFlow's own virtualenv (Django, Playwright, schemathesis…): a
        # sample's tests ran in 3.0 s with them, 0.3 s without.
        env=(("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1"),),
        description="pytest on relative test paths inside the work directory.",
    ),
]
