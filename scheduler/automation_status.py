"""What ``manage.py automation status`` prints and the Automation page shows: AgentFlow's processes
(their heartbeats, agentflow/lib/heartbeat.py) and every registered status section
(scheduler/automation.py: schedules, webhook endpoints, file watches…), as plain tables."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from agentflow.lib import heartbeat

from .automation import status_sections

log = logging.getLogger("agentflow.automation")

ROLE_ORDER = ("web", "worker", "beat", "listener", "watcher")


@dataclass
class Table:
    key: str
    title: str
    columns: Sequence[tuple[str, str]]
    rows: list[dict[str, str]] = field(default_factory=list)
    empty: str = "None."
    error: str = ""

    @property
    def cells(self) -> list[list[tuple[str, str]]]:
        """Each row as (heading, value) pairs in column order (the page's table)."""
        return [[(heading, str(row.get(k, ""))) for k, heading in self.columns] for row in self.rows]

    def render_text(self) -> str:
        if self.error:
            return f"  ({self.error})"
        if not self.rows:
            return f"  {self.empty}"
        headings = [h for _, h in self.columns]
        cells = [[str(row.get(k, "")) for k, _ in self.columns] for row in self.rows]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headings)]
        lines = ["  " + "  ".join(h.ljust(w) for h, w in zip(headings, widths, strict=True)).rstrip()]
        for row in cells:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        return "\n".join(lines)


def duration(seconds: float) -> str:
    """``3 d 4 h``, ``2 h 5 min``, ``4 min 10 s``, ``12 s``."""
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def processes() -> Table:
    table = Table(
        "processes",
        "Processes",
        [("role", "Process"), ("pid", "PID"), ("host", "Host"), ("uptime", "Uptime"), ("seen", "Last beat")],
        empty="No AgentFlow process has a heartbeat (is `make run` running? each process beats every "
        "AGENTFLOW_HEARTBEAT_SECONDS).",
    )
    try:
        beats = heartbeat.alive()
    except Exception as exc:  # Redis down: say so, the other tables still print
        table.error = f"Redis did not answer: {type(exc).__name__}"
        return table
    import time

    now = time.time()
    order = {role: i for i, role in enumerate(ROLE_ORDER)}
    for beat in sorted(beats, key=lambda b: (order.get(b.role, 99), b.role, b.host, b.pid)):
        table.rows.append(
            {
                "role": beat.role,
                "pid": str(beat.pid),
                "host": beat.host,
                "uptime": duration(beat.uptime_seconds),
                "seen": f"{duration(now - beat.seen_at)} ago",
            }
        )
    return table


def tables() -> list[Table]:
    out = [processes()]
    for section in status_sections():
        table = Table(section.key, section.title, section.columns, empty=section.empty)
        try:
            table.rows = section.rows()
        except Exception as exc:  # one section's failure leaves the others
            log.exception("automation status: the %s section failed", section.key)
            table.error = f"could not be read: {type(exc).__name__}"
        out.append(table)
    return out
