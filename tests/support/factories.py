"""Hand-rolled factories for the models the tests share (healthchecks' ``BaseTestCase`` style)."""

from __future__ import annotations

from typing import Any

from fleet.models import Agent, AgentSession, Gateway
from scheduler.models import BatchRun


def make_gateway(name: str = "alpha", **fields: Any) -> Gateway:
    fields.setdefault("url", f"ws://127.0.0.1:1/{name}")
    fields.setdefault("token", "t")
    return Gateway.objects.create(name=name, **fields)


def make_agent(gateway: Gateway, agent_id: str = "main", **fields: Any) -> Agent:
    return Agent.objects.create(gateway=gateway, agent_id=agent_id, **fields)


def make_session(gateway: Gateway, key: str, agent: Agent | None = None, **fields: Any) -> AgentSession:
    if agent is not None:
        fields.setdefault("agent_key", agent.agent_id)
    return AgentSession.objects.create(gateway=gateway, agent=agent, session_key=key, **fields)


def make_batch_run(batch: str, gateway: Gateway | None = None, **fields: Any) -> BatchRun:
    """A recorded run, for a gateway (as the per-gateway batches record them) or global."""
    if gateway is not None:
        fields.update(scope="gateway", target_id=gateway.pk, target_name=gateway.name)
    fields.setdefault("status", BatchRun.Status.OK)
    return BatchRun.objects.create(batch=batch, **fields)
