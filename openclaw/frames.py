"""Frame parsing and the ``hello-ok`` summary. Pure functions: no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .errors import MalformedFrameError

PROTOCOL_VERSION = 4


@dataclass(frozen=True, slots=True)
class Response:
    id: str
    ok: bool
    payload: Any = None
    error: Any = None


@dataclass(frozen=True, slots=True)
class Event:
    event: str
    payload: Any = None
    seq: int | None = None


def parse_frame(text: str | bytes) -> Response | Event:
    """Parse one text frame; raise :class:`MalformedFrameError` for anything unusable."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: absurd nesting
        raise MalformedFrameError(f"frame is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedFrameError("frame is not a JSON object")
    kind = data.get("type")
    if kind == "res":
        frame_id = data.get("id")
        if not isinstance(frame_id, str) or not isinstance(data.get("ok"), bool):
            raise MalformedFrameError("response frame without a string id and boolean ok")
        return Response(id=frame_id, ok=data["ok"], payload=data.get("payload"), error=data.get("error"))
    if kind == "event":
        name = data.get("event")
        if not isinstance(name, str) or not name:
            raise MalformedFrameError("event frame without an event name")
        seq = data.get("seq")
        return Event(event=name, payload=data.get("payload"), seq=seq if isinstance(seq, int) else None)
    raise MalformedFrameError(f"unknown frame type {str(kind)[:40]!r}")


def request_frame(frame_id: str, method: str, params: Any = None, traceparent: str | None = None) -> str:
    """A request frame; ``traceparent`` (W3C, at most 128 characters) rides on the frame itself."""
    frame: dict[str, Any] = {"type": "req", "id": frame_id, "method": method}
    if params is not None:
        frame["params"] = params
    if traceparent:
        frame["traceparent"] = traceparent[:128]
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Policy:
    tick_interval_ms: int = 30_000
    max_payload: int = 25 * 1024 * 1024
    max_buffered_bytes: int = 50 * 1024 * 1024


@dataclass(frozen=True)
class HelloInfo:
    """What the gateway told us about itself at connect time."""

    protocol: int
    server_version: str
    build_id: str = ""
    conn_id: str = ""
    methods: frozenset[str] = frozenset()
    events: frozenset[str] = frozenset()
    scopes: tuple[str, ...] = ()
    role: str = ""
    auth_method: str = ""
    device_token: str | None = None
    policy: Policy = field(default_factory=Policy)
    default_agent_id: str | None = None
    snapshot: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_payload(cls, payload: Any) -> HelloInfo:
        if not isinstance(payload, dict) or payload.get("type") != "hello-ok":
            raise MalformedFrameError("connect response is not hello-ok")
        server = _dict(payload.get("server"))
        features = _dict(payload.get("features"))
        auth = _dict(payload.get("auth"))
        policy = _dict(payload.get("policy"))
        snapshot = _dict(payload.get("snapshot"))
        defaults = Policy()
        return cls(
            protocol=_int(payload.get("protocol"), 0),
            server_version=str(server.get("version") or "unknown"),
            build_id=str(server.get("buildId") or ""),
            conn_id=str(server.get("connId") or ""),
            methods=frozenset(m for m in features.get("methods") or () if isinstance(m, str)),
            events=frozenset(e for e in features.get("events") or () if isinstance(e, str)),
            scopes=tuple(s for s in auth.get("scopes") or () if isinstance(s, str)),
            role=str(auth.get("role") or ""),
            auth_method=str(auth.get("method") or ""),
            device_token=auth.get("deviceToken") if isinstance(auth.get("deviceToken"), str) else None,
            policy=Policy(
                tick_interval_ms=_int(policy.get("tickIntervalMs"), defaults.tick_interval_ms),
                max_payload=_int(policy.get("maxPayload"), defaults.max_payload),
                max_buffered_bytes=_int(policy.get("maxBufferedBytes"), defaults.max_buffered_bytes),
            ),
            default_agent_id=_dict(snapshot.get("sessionDefaults")).get("defaultAgentId"),
            snapshot=snapshot,
        )

    def has_scope(self, scope: str) -> bool:
        """Scopes imply each other: admin implies every operator scope, write implies read."""
        granted = set(self.scopes)
        if scope in granted or "operator.admin" in granted:
            return True
        return scope == "operator.read" and "operator.write" in granted


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default
