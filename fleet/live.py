"""The fleet's live events (see :mod:`agentflow.lib.broadcast`): declared once, here.

One group per gateway (everything a fleet page shows of it) and one per open chat panel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from agentflow.lib import broadcast


def gateway_group(gateway_id: int) -> str:
    return f"gateway-{gateway_id}"


def chat_group(gateway_id: int, session_key: str) -> str:
    # Group names allow only ASCII alphanumerics, hyphens, underscores and periods (< 100 chars).
    digest = hashlib.sha1(session_key.encode(), usedforsecurity=False).hexdigest()[:16]
    return f"chat-{gateway_id}-{digest}"


def status_of(gateway: Any) -> dict[str, Any]:
    """The ``gateway.status`` fields of a Gateway row (its label from the model's choices)."""
    return {"gateway_id": gateway.pk, "status": gateway.status, "label": gateway.get_status_display()}


def _gateway(data: Mapping[str, Any]) -> str:
    return gateway_group(data["gateway_id"])


def _chat(data: Mapping[str, Any]) -> str:
    return chat_group(data["gateway_id"], data["session_key"])


GATEWAY_STATUS = broadcast.declare(
    "gateway.status",
    _gateway,
    ("gateway_id", "status", "label"),
    doc="The gateway's status changed (or was confirmed); label is the text to show.",
)
SESSIONS_CHANGED = broadcast.declare(
    "sessions.changed",
    _gateway,
    ("gateway_id", "changes"),
    doc="One message per poll or event: [{session_key, agent_id, status, status_label, "
    "previous_status, has_active_run}].",
)
AGENT_RUN = broadcast.declare(
    "agent.run",
    _gateway,
    ("gateway_id", "agent_id", "session_key", "run_id", "phase"),
    doc="A run started (phase start) or ended (end, error).",
)
CONFIG_CHANGED = broadcast.declare(
    "config.changed",
    _gateway,
    ("gateway_id", "history_id"),
    doc="A new config version or org chart: the gateway's section is re-fetched.",
)
CHAT_STREAM = broadcast.declare(
    "chat.stream",
    _chat,
    ("gateway_id", "session_key", "run_id", "state", "delta", "error"),
    doc="Streamed assistant text for an open chat panel.",
)
CHAT_MESSAGES = broadcast.declare(
    "chat.messages",
    _chat,
    ("gateway_id", "session_key", "message_ids"),
    doc="New stored chat messages: the chat log is re-fetched.",
)
