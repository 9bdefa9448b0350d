"""Compatibility guard: decide at connect time whether the dashboard can fully use a gateway.

Better to mark a gateway degraded or read-only with the reason the moment we connect than
to fail later, in the middle of an operator's action.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .frames import HelloInfo

READ_METHODS = frozenset(
    {"health", "status", "agents.list", "sessions.list", "sessions.subscribe", "config.get", "chat.history"}
)
WRITE_METHODS = frozenset({"chat.send", "chat.abort"})
# config.patch is an admin method on the gateway; without operator.admin the dashboard still
# works fully, it just cannot edit config (can_edit_config is False).
ADMIN_METHODS = frozenset({"config.patch"})
# config.changed is broadcast but not listed in hello-ok.features.events (2026.9.6), so it
# cannot be required here.
EVENTS = frozenset({"tick", "chat", "agent", "sessions.changed"})

OK, DEGRADED, READ_ONLY = "ok", "degraded", "read_only"


@dataclass(frozen=True)
class Compatibility:
    mode: str  # ok | degraded | read_only
    reasons: tuple[str, ...] = field(default_factory=tuple)
    can_edit_config: bool = False

    @property
    def can_write(self) -> bool:
        return self.mode == OK

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons)


def assess(hello: HelloInfo) -> Compatibility:
    reasons: list[str] = []
    degraded = False
    read_only = False
    missing_read = sorted(READ_METHODS - hello.methods)
    if missing_read:
        degraded = True
        reasons.append("the gateway does not offer " + ", ".join(missing_read))
    missing_events = sorted(EVENTS - hello.events)
    if missing_events:
        degraded = True
        reasons.append("the gateway does not send the events " + ", ".join(missing_events))
    if not hello.has_scope("operator.write"):
        read_only = True
        reasons.append("the connection was not granted operator.write: sending and config edits are disabled")
    missing_write = sorted(WRITE_METHODS - hello.methods)
    if missing_write:
        read_only = True
        reasons.append("the gateway does not offer " + ", ".join(missing_write))
    can_edit_config = hello.has_scope("operator.admin") and hello.methods >= ADMIN_METHODS
    mode = DEGRADED if degraded else READ_ONLY if read_only else OK
    return Compatibility(mode, tuple(reasons), can_edit_config=can_edit_config)
