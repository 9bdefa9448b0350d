"""The one module that sends to the channel layer.

Channel events are small JSON: ``type`` as ``noun.verb`` (mapped to a consumer handler),
ids and a status. Consumers render or re-fetch what they need; nothing secret goes out.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger("agentflow.broadcast")


def gateway_group(gateway_id: int) -> str:
    return f"gateway-{gateway_id}"


def chat_group(gateway_id: int, session_key: str) -> str:
    # Group names allow only ASCII alphanumerics, hyphens, underscores and periods.
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in session_key)[:80]
    return f"chat-{gateway_id}-{safe}"


async def asend(group: str, kind: str, **data: Any) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(group, {"type": kind.replace(".", "_"), "kind": kind, **data})
    except Exception:  # a push is best effort: the polling batches reconcile
        log.exception("broadcast %s to %s failed", kind, group)


def send(group: str, kind: str, **data: Any) -> None:
    async_to_sync(asend)(group, kind, **data)


def gateway_status(gateway_id: int, status: str) -> None:
    send(gateway_group(gateway_id), "gateway.status", gateway_id=gateway_id, status=status)


def sessions_changed(gateway_id: int, changes: list[dict[str, Any]]) -> None:
    """One message for a whole poll's changes (not one per session)."""
    send(gateway_group(gateway_id), "sessions.changed", gateway_id=gateway_id, changes=changes)


def config_changed(gateway_id: int, history_id: int | None) -> None:
    send(gateway_group(gateway_id), "config.changed", gateway_id=gateway_id, history_id=history_id)


def chat_messages(gateway_id: int, session_key: str, message_ids: list[int]) -> None:
    send(
        chat_group(gateway_id, session_key),
        "chat.messages",
        gateway_id=gateway_id,
        session_key=session_key,
        message_ids=message_ids,
    )


ALERTS_GROUP = "alerts"


def alert_raised() -> None:
    send(ALERTS_GROUP, "alert.raised")
