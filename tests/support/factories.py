"""Hand-rolled factories for the models the tests share (healthchecks' ``BaseTestCase`` style).

Every factory takes the model's fields as keyword overrides; the defaults are only what a row
needs to exist, so a test spells out exactly the fields its assertions depend on.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from dashboard.models import ApiToken
from fleet.models import Agent, AgentSession, ChatHistory, ConfigHistory, Gateway, HealthSample
from flows.models import FlowRun, Span
from scheduler.models import Alert, Attempt, BatchRun, Run
from scheduler.roles import Role

# Unique values for fields a test rarely cares about but the database wants distinct.
_sequence = itertools.count(1)


def make_gateway(name: str = "alpha", **fields: Any) -> Gateway:
    """A gateway row on a loopback URL nothing listens on (pass ``url`` for a real one)."""
    fields.setdefault("url", f"ws://127.0.0.1:1/{name}")
    fields.setdefault("token", "t")
    # A gateway with a known status has been checked: keep the row as the health batch leaves it.
    if fields.get("status", Gateway.Status.UNKNOWN) != Gateway.Status.UNKNOWN:
        fields.setdefault("last_checked_at", timezone.now())
    return Gateway.objects.create(name=name, **fields)


def make_agent(gateway: Gateway, agent_id: str = "main", **fields: Any) -> Agent:
    return Agent.objects.create(gateway=gateway, agent_id=agent_id, **fields)


def make_session(
    gateway: Gateway,
    key: str = "agent:main:main",
    agent: Agent | None = None,
    *,
    minutes_ago: float | None = None,
    **fields: Any,
) -> AgentSession:
    """A stored session; ``minutes_ago`` sets when the gateway last updated it."""
    if agent is not None:
        fields.setdefault("agent_key", agent.agent_id)
    if minutes_ago is not None:
        fields.setdefault("gw_updated_at", timezone.now() - timedelta(minutes=minutes_ago))
    return AgentSession.objects.create(gateway=gateway, agent=agent, session_key=key, **fields)


def make_chat(
    gateway: Gateway,
    key: str = "agent:main:main",
    text: str = "hi",
    *,
    created_at: datetime | None = None,
    **fields: Any,
) -> ChatHistory:
    """A stored chat message (user, now, a unique message id unless given)."""
    fields.setdefault("message_id", f"m-{next(_sequence)}")
    fields.setdefault("role", "user")
    fields.setdefault("timestamp", timezone.now())
    row = ChatHistory.objects.create(gateway=gateway, session_key=key, text=text, **fields)
    if created_at is not None:  # created_at is auto_now_add: only an update can set it
        ChatHistory.objects.filter(pk=row.pk).update(created_at=created_at)
        row.created_at = created_at
    return row


def make_config(gateway: Gateway, hash: str | None = None, **fields: Any) -> ConfigHistory:
    """A stored config version (an empty config and a unique hash unless given)."""
    fields.setdefault("config", {})
    return ConfigHistory.objects.create(gateway=gateway, hash=hash or f"h-{next(_sequence)}", **fields)


def make_health_sample(gateway: Gateway, connected: bool = True, **fields: Any) -> HealthSample:
    return HealthSample.objects.create(gateway=gateway, connected=connected, **fields)


def make_batch_run(batch: str, gateway: Gateway | None = None, **fields: Any) -> BatchRun:
    """A recorded run, for a gateway (as the per-gateway batches record them) or global."""
    if gateway is not None:
        fields.update(scope="gateway", target_id=gateway.pk, target_name=gateway.name)
    fields.setdefault("status", BatchRun.Status.OK)
    return BatchRun.objects.create(batch=batch, **fields)


def make_alert(message: str = "something failed", source: str = "BATCH-004", **fields: Any) -> Alert:
    return Alert.objects.create(message=message, source=source, **fields)


def make_api_token(user: Any, name: str = "test token", role: str = "viewer") -> tuple[ApiToken, str]:
    """An issued API token and its raw value (only ever returned once, as in the app)."""
    return ApiToken.issue(user, name, Role.parse(role))


def bearer(user: Any, role: str) -> dict[str, str]:
    """The test client's headers for a new API token of ``role`` (named "<role> token")."""
    _, raw = make_api_token(user, f"{role} token", role=role)
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def make_run(kind: str = "agent.prompt", **fields: Any) -> Run:
    """A run row as the queue leaves it (no dispatch: tests set the states they need)."""
    return Run.objects.create(kind=kind, **fields)


def make_attempt(run: Run, number: int = 1, **fields: Any) -> Attempt:
    fields.setdefault("in_worker", False)
    return Attempt.objects.create(run=run, number=number, **fields)


def make_flow_run(run: Run, flow_name: str = "demo", **fields: Any) -> FlowRun:
    """A flow run's state row (its spans are made with ``make_span``)."""
    n = next(_sequence)
    fields.setdefault("trace_id", f"{n:032x}")
    fields.setdefault("root_span_id", f"{n:016x}")
    fields.setdefault("source", f"name: {flow_name}\nsteps:\n  - id: only\n    type: set\n")
    return FlowRun.objects.create(run=run, flow_name=flow_name, **fields)


def make_span(flow_run: FlowRun, name: str, start_ms: float, end_ms: float, **fields: Any) -> Span:
    """A span of ``flow_run``'s trace, ``start_ms`` / ``end_ms`` after the flow run's start
    (``started_ns``); a child of the root span unless ``parent_span_id`` is given."""
    base = flow_run.started_ns
    fields.setdefault("span_id", f"{next(_sequence):016x}")
    fields.setdefault("parent_span_id", flow_run.root_span_id)
    return Span.objects.create(
        run_id=flow_run.run_id,
        trace_id=flow_run.trace_id,
        name=name,
        start_ns=base + int(start_ms * 1_000_000),
        end_ns=base + int(end_ms * 1_000_000),
        **fields,
    )


def make_retried_agent_run(
    *, gateway: str, t0, first: tuple[int, int], second: tuple[int, int], error: str, usage: dict, **fields
):
    """A finished agent run whose first attempt timed out and whose second succeeded; ``first`` and
    ``second`` are (start, end) seconds after ``t0``, when it was queued (the trace pages' plain run)."""
    from datetime import timedelta

    run = make_run(
        "agent.prompt", status="succeeded", gateway=gateway, agent="main", queued_at=t0,
        started_at=t0 + timedelta(seconds=first[0]), finished_at=t0 + timedelta(seconds=second[1]),
        attempts=2, usage=usage, **fields,
    )  # fmt: skip
    for number, (start, end), extra in (
        (1, first, {"status": "failed", "error_class": "timeout", "error": error}),
        (2, second, {"status": "succeeded"}),
    ):
        make_attempt(
            run, number, session_key=f"agent:main:run-{number}", started_at=t0 + timedelta(seconds=start),
            finished_at=t0 + timedelta(seconds=end), **extra,
        )  # fmt: skip
    return run
