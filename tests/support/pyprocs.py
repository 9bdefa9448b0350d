"""Short Python programs run in processes of their own on the test's Redis prefix (for tests of
state that every worker process shares, such as the rate limiter and the breakers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from django.conf import settings

PRELUDE = "import json, sys, time\nimport django\ndjango.setup()\n"


def start_python(code: str, redis_prefix: str, *args: object, **env: str) -> subprocess.Popen:
    """``code`` (after ``django.setup()``) in a new interpreter; its stdout is its answer."""
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTEST_VERSION", "PYTEST_CURRENT_TEST")}
    environ.update(
        DJANGO_SETTINGS_MODULE="agentflow.settings",
        AGENTFLOW_ENV="test",
        REDIS_URL=settings.REDIS_URL,
        AGENTFLOW_REDIS_PREFIX=redis_prefix,
        **env,
    )
    return subprocess.Popen(
        [sys.executable, "-c", PRELUDE + code, *map(str, args)],
        cwd=settings.BASE_DIR,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def answer(process: subprocess.Popen, timeout: float = 60) -> object:
    """The JSON the program printed last (its stderr in the failure message)."""
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])
