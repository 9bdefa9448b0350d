"""Chat history: open-panel registry (Redis) and storing ``chat.history`` messages (BATCH-003).

Open panels live in one Redis sorted set per gateway, scored by expiry time, so any number
of web instances can register panels and any worker can read them; a crashed browser's
panel simply expires.

Only sessions this gateway is known to have (a stored session or stored messages) get a panel:
a made-up key would cost BATCH-003 a gateway call every run. Without Redis a panel is simply not
registered (one warning): the page still renders, and the page's next renewal registers it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from django.conf import settings

from agentflow.lib.redis import get_redis, key, redacted_url
from openclaw import GatewayError, SyncGatewayClient

from .models import AgentSession, ChatHistory, Gateway, from_ms
from .payloads import as_dict, as_str
from .services import client_options

TRUNCATION_MARK = "\n…[truncated by AgentFlow]"

log = logging.getLogger(__name__)


def _panels_key(gateway_id: int) -> str:
    return key("chatpanels", gateway_id)


def is_known_session(gateway_id: int, session_key: str) -> bool:
    """True when the gateway has this session on record (a session row or stored messages), or its
    panel is registered already (e.g. by a message just sent to a brand-new session)."""
    if AgentSession.objects.filter(gateway_id=gateway_id, session_key=session_key).exists():
        return True
    if ChatHistory.objects.filter(gateway_id=gateway_id, session_key=session_key).exists():
        return True
    try:
        return get_redis().zscore(_panels_key(gateway_id), session_key) is not None
    except redis.RedisError:
        return False


def register_panel(gateway_id: int, session_key: str, ttl: int | None = None) -> bool:
    """Register (or refresh) a panel for ``ttl`` seconds; False (and one warning) without Redis."""
    ttl = ttl or settings.AGENTFLOW_CHAT_PANEL_TTL
    try:
        get_redis().zadd(_panels_key(gateway_id), {session_key: time.time() + ttl})
    except redis.RedisError as exc:
        log.warning("chat panel not registered: Redis at %s does not answer (%s)", redacted_url(), exc)
        return False
    return True


def open_panel(gateway_id: int, session_key: str, ttl: int | None = None) -> bool:
    """Register (or refresh) an open chat panel of a known session for ``ttl`` seconds.

    False when the session is unknown (nothing registered) or Redis does not answer."""
    if not is_known_session(gateway_id, session_key):
        return False
    return register_panel(gateway_id, session_key, ttl)


def close_panel(gateway_id: int, session_key: str) -> None:
    get_redis().zrem(_panels_key(gateway_id), session_key)


def open_panels(gateway_id: int) -> list[str]:
    """Session keys with a live panel; expired registrations are dropped on the way."""
    client = get_redis()
    pipe = client.pipeline()
    pipe.zremrangebyscore(_panels_key(gateway_id), "-inf", time.time())
    pipe.zrange(_panels_key(gateway_id), 0, -1)
    _, members = pipe.execute()
    return [m.decode() if isinstance(m, bytes) else m for m in members]


def message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return ""


@dataclass
class ParsedMessage:
    message_id: str
    role: str
    text: str
    timestamp: datetime
    run_id: str
    usage: dict[str, Any] | None


def parse_message(message: Any) -> ParsedMessage | None:
    """One ``chat.history`` message, or None when it lacks an id or timestamp."""
    if not isinstance(message, dict):
        return None
    meta = as_dict(message.get("__openclaw"))
    message_id = meta.get("id")
    timestamp = from_ms(message.get("timestamp")) or from_ms(meta.get("recordTimestampMs"))
    if not isinstance(message_id, str) or not message_id or len(message_id) > 200 or timestamp is None:
        return None
    text = message_text(message.get("content"))
    limit = settings.AGENTFLOW_CHAT_MAX_CHARS
    if len(text) > limit:
        text = text[:limit] + TRUNCATION_MARK
    run_id = as_str(meta.get("runId"), "")
    usage = message.get("usage") if isinstance(message.get("usage"), dict) else None
    role = as_str(message.get("role"), "unknown")
    return ParsedMessage(message_id, role[:32], text, timestamp, run_id[:200], usage)


@dataclass
class StoreResult:
    received: int = 0
    stored: list[ChatHistory] = field(default_factory=list)
    invalid: int = 0
    overlap: bool = False  # True when a fetched message was already stored (no gap)


def store_messages(gateway: Gateway, session_key: str, messages: Any) -> StoreResult:
    """Insert the messages not stored yet; re-polls never duplicate (unique message id)."""
    result = StoreResult()
    parsed: dict[str, ParsedMessage] = {}
    for message in messages if isinstance(messages, list) else []:
        result.received += 1
        item = parse_message(message)
        if item is None:
            result.invalid += 1
        else:
            parsed[item.message_id] = item
    if not parsed:
        return result
    existing = set(
        ChatHistory.objects.filter(
            gateway=gateway, session_key=session_key, message_id__in=list(parsed)
        ).values_list("message_id", flat=True)
    )
    result.overlap = bool(existing)
    new = [
        ChatHistory(
            gateway=gateway,
            session_key=session_key,
            message_id=m.message_id,
            role=m.role,
            text=m.text,
            timestamp=m.timestamp,
            run_id=m.run_id,
            usage=m.usage,
        )
        for m in parsed.values()
        if m.message_id not in existing
    ]
    if new:
        # ignore_conflicts: a concurrent poll (or the live listener) may have stored one meanwhile.
        ChatHistory.objects.bulk_create(new, ignore_conflicts=True)
        # With ignore_conflicts the database hands back no primary keys; the push needs them.
        pks = dict(
            ChatHistory.objects.filter(
                gateway=gateway, session_key=session_key, message_id__in=[m.message_id for m in new]
            ).values_list("message_id", "pk")
        )
        for message in new:
            message.pk = pks.get(message.message_id)
        result.stored = new
    return result


def has_history(gateway: Gateway, session_key: str) -> bool:
    return ChatHistory.objects.filter(gateway=gateway, session_key=session_key).exists()


OPEN_FETCH_LIMIT = 100  # the messages a chat panel shows before "older"


def fetch_on_open(gateway: Gateway, session_key: str, timeout: float = 3.0) -> str:
    """Store a session's history from ``chat.history`` when a panel opens on a session with none
    stored (BATCH-003 would bring it within seconds; the page should not say "no messages" meanwhile).

    One connection attempt and one call, each bounded by ``timeout``; the gateway's recorded
    status is left to the listener and the health batch. Returns "" or a notice for the page."""
    if has_history(gateway, session_key):
        return ""
    if not gateway.is_healthy:
        return f"The gateway is {gateway.get_status_display().lower()}: stored history only."
    client = SyncGatewayClient(
        gateway.url,
        gateway.token or None,
        **client_options(gateway, connect_timeout=timeout, request_timeout=timeout),
    )
    try:
        client.connect()
        history = client.chat_history(session_key, limit=OPEN_FETCH_LIMIT)
    except (GatewayError, TimeoutError, OSError) as exc:
        message = (
            exc.operator_message if isinstance(exc, GatewayError) else "the gateway did not answer in time"
        )
        return f"Could not fetch this session's history ({message}); it appears once polled."
    finally:
        client.close()
    store_messages(gateway, session_key, history.get("messages") if isinstance(history, dict) else None)
    return ""
