"""Session state: classify gateway session rows and persist only what changed (BATCH-001).

The diff works on plain tuples: one query loads the stored state of a gateway's sessions,
each incoming row becomes the same tuple, and only rows whose tuple differs are written, in
one transaction. An unchanged poll writes nothing.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .models import Agent, AgentSession, Gateway, from_ms
from .payloads import as_str

log = logging.getLogger("agentflow.sessions")

ACTIVE, IDLE, OFFLINE = AgentSession.Status.ACTIVE, AgentSession.Status.IDLE, AgentSession.Status.OFFLINE

# The fields compared and written, in this order (the row tuple).
FIELDS = (
    "agent_id",
    "agent_key",
    "session_id",
    "kind",
    "title",
    "status",
    "has_active_run",
    "last_run_id",
    "model",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "gw_created_at",
    "gw_updated_at",
    "last_interaction_at",
    "run_started_at",
    "run_ended_at",
    "parent_session_key",
)
STATUS_LABELS = dict(AgentSession.Status.choices)
STATUS_INDEX = FIELDS.index("status")
RUN_INDEX = FIELDS.index("has_active_run")
AGENT_KEY_INDEX = FIELDS.index("agent_key")


def classify(has_active_run: bool, last_activity: datetime | None, now: datetime) -> str:
    """Active: a run in flight or activity within ACTIVE seconds; idle within IDLE; else offline."""
    if has_active_run:
        return ACTIVE
    if last_activity is None:
        return OFFLINE
    age = (now - last_activity).total_seconds()
    if age <= settings.AGENTFLOW_SESSION_ACTIVE_SECONDS:
        return ACTIVE
    if age <= settings.AGENTFLOW_SESSION_IDLE_SECONDS:
        return IDLE
    return OFFLINE


def _text(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


BIGINT_MAX = 2**63 - 1


def _count(value: Any) -> int:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
        return 0
    # Clamped: an absurd count must not overflow the BIGINT column and fail the whole poll.
    return int(min(value, BIGINT_MAX))


def row_state(row: dict[str, Any], agent_pk: int | None, now: datetime) -> tuple:
    """The stored-state tuple (FIELDS order) for one ``sessions.list`` row."""
    created = from_ms(row.get("createdAt"))
    updated = from_ms(row.get("updatedAt"))
    interaction = from_ms(row.get("lastInteractionAt"))
    started = from_ms(row.get("startedAt"))
    ended = from_ms(row.get("endedAt"))
    active_run = row.get("hasActiveRun") is True or bool(row.get("activeRunIds"))
    last_activity = max((t for t in (updated, interaction, started, ended) if t), default=None)
    title = row.get("title") or row.get("derivedTitle") or row.get("label") or row.get("displayName")
    parent = row.get("parentSessionKey") or row.get("spawnedBy")
    return (
        agent_pk,
        _text(row.get("agentId"), 200),
        _text(row.get("sessionId"), 200),
        _text(row.get("kind"), 50),
        _text(title, 500),
        classify(active_run, last_activity, now),
        active_run,
        _text(row.get("lastRunId"), 200),
        _text(row.get("model"), 200),
        _count(row.get("inputTokens")),
        _count(row.get("outputTokens")),
        _count(row.get("totalTokens")),
        created,
        updated,
        interaction,
        started,
        ended,
        _text(parent, 500),
    )


@dataclass
class SyncResult:
    seen: int = 0
    created: int = 0
    updated: int = 0
    invalid: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def writes(self) -> int:
        return self.created + self.updated


def sync_sessions(
    gateway: Gateway, rows: list[Any], now: datetime | None = None, *, partial: bool = False
) -> SyncResult:
    """Upsert the gateway's sessions from a full ``sessions.list``; return what changed.

    1. load the stored tuples of this gateway's sessions (one query) and its agents;
    2. build each incoming row's tuple; rows without a key are counted as invalid, not fatal;
    3. stored sessions missing from the list are gone from the gateway: mark them offline
       (not for a ``partial`` update, e.g. the one row of a ``sessions.changed`` event);
    4. write the changed and new rows in one transaction (bulk_update / bulk_create), then
       link subagent sessions to their parent.
    """
    if not isinstance(rows, list):
        raise ValueError(f"sessions.list gave no list of sessions (got {type(rows).__name__})")
    now = now or timezone.now()
    result = SyncResult()
    stored: dict[str, tuple[int, tuple]] = {}
    scope = AgentSession.objects.filter(gateway=gateway)
    if partial:
        scope = scope.filter(session_key__in=[r.get("key") for r in rows if isinstance(r, dict)])
    for values in scope.values_list("pk", "session_key", *FIELDS):
        stored[values[1]] = (values[0], tuple(values[2:]))
    agents = dict(Agent.objects.filter(gateway=gateway).values_list("agent_id", "pk"))

    incoming: dict[str, tuple] = {}
    for row in rows:
        key = row.get("key") if isinstance(row, dict) else None
        if not isinstance(key, str) or not key or len(key) > 500:
            result.invalid += 1
            continue
        agent_key = as_str(row.get("agentId"), "")
        if agent_key and agent_key not in agents:
            agents[agent_key] = Agent.objects.get_or_create(gateway=gateway, agent_id=agent_key[:200])[0].pk
        incoming[key] = row_state(row, agents.get(agent_key), now)
    result.seen = len(incoming)
    if rows and not incoming:
        # Every row malformed: a broken answer, not an empty fleet. Marking all stored sessions
        # offline would be wrong, so record an error and write nothing.
        raise ValueError(f"sessions.list returned {len(rows)} rows and none is a valid session")

    to_update: list[AgentSession] = []
    to_create: list[AgentSession] = []
    for key, state in incoming.items():
        previous = stored.get(key)
        if previous is None:
            to_create.append(
                AgentSession(gateway=gateway, session_key=key, **dict(zip(FIELDS, state, strict=True)))
            )
            result.changes.append(_change(key, state, None))
        elif previous[1] != state:
            to_update.append(
                AgentSession(pk=previous[0], synced_at=now, **dict(zip(FIELDS, state, strict=True)))
            )
            result.changes.append(_change(key, state, previous[1]))
    for key, (pk, state) in stored.items():
        if partial:
            break
        if key not in incoming and (state[STATUS_INDEX] != OFFLINE or state[RUN_INDEX]):
            gone = list(state)
            gone[STATUS_INDEX] = OFFLINE
            gone[RUN_INDEX] = False
            to_update.append(AgentSession(pk=pk, synced_at=now, **dict(zip(FIELDS, gone, strict=True))))
            result.changes.append(_change(key, tuple(gone), state))

    if to_update or to_create:
        with transaction.atomic():
            if to_update:
                AgentSession.objects.bulk_update(to_update, [*FIELDS, "synced_at"], batch_size=500)
            if to_create:
                AgentSession.objects.bulk_create(to_create, batch_size=500)
            _link_parents(
                gateway, [s.session_key for s in to_create] + [c["session_key"] for c in result.changes]
            )
    result.created, result.updated = len(to_create), len(to_update)
    return result


def _change(key: str, state: tuple, previous: tuple | None) -> dict[str, Any]:
    return {
        "session_key": key,
        "agent_id": state[AGENT_KEY_INDEX],
        "status": state[STATUS_INDEX],
        "status_label": STATUS_LABELS.get(state[STATUS_INDEX], state[STATUS_INDEX]),
        "previous_status": previous[STATUS_INDEX] if previous else None,
        "has_active_run": state[RUN_INDEX],
    }


def _link_parents(gateway: Gateway, keys: list[str]) -> None:
    children = AgentSession.objects.filter(gateway=gateway, session_key__in=set(keys)).exclude(
        parent_session_key=""
    )
    pending = list(children.values_list("pk", "parent_session_key", "parent_id"))
    if not pending:
        return
    parents = dict(
        AgentSession.objects.filter(gateway=gateway, session_key__in={p for _, p, _ in pending}).values_list(
            "session_key", "pk"
        )
    )
    for pk, parent_key, parent_id in pending:
        wanted = parents.get(parent_key)
        if wanted != parent_id:
            AgentSession.objects.filter(pk=pk).update(parent_id=wanted)


AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def new_session_key(agent_id: str, now: datetime | None = None) -> str:
    """A fresh session key in the gateway's format (``agent:<agentId>:<name>``); the gateway
    creates the session when the first message is sent to it."""
    if not AGENT_ID.match(agent_id):
        raise ValueError(f"not an agent id the gateway would accept: {agent_id!r}")
    now = now or timezone.now()
    return f"agent:{agent_id}:chat-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
