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
    (),
    doc="An emergency stop was engaged or released, or what it holds changed: pages refresh the stop banner.",
)
