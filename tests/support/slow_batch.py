"""A batch that only sleeps, for the tests that kill a worker mid-run: a worker started with
``-I tests.support.slow_batch`` registers it; ``AGENTFLOW_TEST_SLOW_SECONDS`` sets how long
each run sleeps (default 5 s), or ``@PATH`` a file holding that number, read at each run (so a
test can make the run after a kill short)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from scheduler.registry import BatchSpec, Outcome, register_batch

SLOW = "TEST-SLOW"


def sleep(_target: object) -> Outcome:
    value = os.environ.get("AGENTFLOW_TEST_SLOW_SECONDS", "5")
    seconds = float(Path(value[1:]).read_text() if value.startswith("@") else value)
    time.sleep(seconds)
    return Outcome(f"slept {seconds:g} s", {"slept": seconds})


register_batch(BatchSpec(id=SLOW, label="Slow test batch", fn=sleep, every_seconds=3600, lock_ttl=600))
