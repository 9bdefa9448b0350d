"""The engine's live events (see :mod:`agentflow.lib.broadcast`)."""

from __future__ import annotations

from agentflow.lib import broadcast

ALERTS_GROUP = "alerts"

ALERT_RAISED = broadcast.declare(
    "alert.raised", ALERTS_GROUP, (), doc="A new Alert: pages offer a reload rather than reloading."
)

STOP_CHANGED = broadcast.declare(
    "stop.changed",
    ALERTS_GROUP,  # every page's socket joins it
    ("stops",),
    doc="An emergency stop was engaged or released: ``stops`` are the engaged ones' banner rows "
    "(scheduler.stops.banner), drawn by every page at once without a request.",
)

ALERT_RESOLVED = broadcast.declare(
    "alert.resolved", ALERTS_GROUP, (), doc="An Alert resolved: pages showing it offer a reload."
)
