"""The batch runs page's list: recent runs with identical outcomes folded into one row.

BATCH-003 runs every 5 s and mostly finds nothing to do; listed one by one, its runs bury
everything else. A row stands for every run on the page with the same batch, target, status,
counts and error, shown where its newest run is, with how many runs and since when."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from scheduler.models import BatchRun


@dataclass
class RunGroup:
    latest: BatchRun
    runs: list[BatchRun] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.runs)

    @property
    def first_started_at(self) -> datetime:
        return self.runs[-1].started_at


def group_identical(runs: list[BatchRun]) -> list[RunGroup]:
    """Runs newest first → one group per outcome, ordered by each group's newest run."""
    groups: dict[tuple, RunGroup] = {}
    for run in runs:
        group = groups.get(run.outcome_key)
        if group is None:
            group = groups[run.outcome_key] = RunGroup(latest=run)
        group.runs.append(run)
    return list(groups.values())
