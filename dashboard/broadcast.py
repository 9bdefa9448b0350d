"""The one module that sends to the channel layer.

Channel events are small JSON: ``type`` as ``noun.verb`` (mapped to a consumer handler),
ids and a status; nothing secret goes out. Every group message carries a per-group sequence
number (a Redis counter), so consumers can tell when the channel layer dropped one and count
it in /metrics (``agentflow_ws_dropped_total``).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer

from .redis import get_redis, key

log = logging.getLogger("agentflow.broadcast")
ALERTS_GROUP = "alerts"


def gateway_group(gateway_id: int) -> str:
    return f"gateway-{gateway_id}"


def chat_group(gateway_id: int, session_key: str) -> str:
    # Group names allow only ASCII alphanumerics, hyphens, underscores and periods (< 100 chars).
    digest = hashlib.sha1(session_key.encode(), usedforsecurity=False).hexdigest()[:16]
    return f"chat-{gateway_id}-{digest}"


def _next_seq(group: str) -> int | None:
    try:
        return int(get_redis().incr(key("seq", group)))
    except Exception:
        return None


async def asend(group: str, kind: str, **data: Any) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        seq = await sync_to_async(_next_seq, thread_sensitive=False)(group)
        await layer.group_send(
            group, {"type": kind.replace(".", "_"), "kind": kind, "group": group, "seq": seq, **data}
        )
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


def alert_raised() -> None:
    send(ALERTS_GROUP, "alert.raised")
