"""The fleet overview as plain data: gateways → org chart of agents → sessions → subagent
sessions, with filters. A fixed number of queries whatever the fleet size (the tree is put
together in Python), so the page stays fast at hundreds of agents and thousands of sessions."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import iri_to_uri

from dashboard.sparkline import Sparkline
from dashboard.sparkline import build as build_sparkline
from fleet.models import Agent, AgentSession, Gateway, HealthSample, context_percent

STATUS_ORDER: dict[str, int] = {
    AgentSession.Status.ACTIVE: 0,
    AgentSession.Status.IDLE: 1,
    AgentSession.Status.OFFLINE: 2,
}
# Rendering every session row of a large fleet is what makes an overview slow, and nobody
# reads 2,000 rows at once. The page renders at most ROW_BUDGET session rows, busiest agents
# first and at most SESSIONS_PER_AGENT each; an agent whose rows did not fit loads them when
# it is expanded (lazy), and filtering by one agent shows all of its sessions.
SESSIONS_PER_AGENT = 10
ROW_BUDGET = 200


@dataclass
class Filters:
    statuses: tuple[str, ...] = ()
    agent: str = ""
    q: str = ""

    @classmethod
    def from_query(cls, params: Any) -> Filters:
        statuses = tuple(s for s in params.getlist("status") if s in AgentSession.Status.values)
        return cls(
            statuses=statuses, agent=params.get("agent", "")[:200], q=params.get("q", "").strip()[:200]
        )

    @property
    def active(self) -> bool:
        return bool(self.statuses or self.agent or self.q)


ROW_FIELDS = (
    "id", "gateway_id", "agent_id", "session_key", "title", "status", "has_active_run", "gw_updated_at",
    "parent_id", "agent_key", "total_tokens", "context_tokens",
)  # fmt: skip


@dataclass(slots=True)
class SessionRow:
    """What the org chart shows of a session: a plain row, ~5x cheaper than a model instance
    (the overview loads every session of the fleet to count and sort them)."""

    pk: int
    gateway_id: int
    agent_id: int | None
    session_key: str
    title: str
    status: str
    has_active_run: bool
    gw_updated_at: datetime | None
    parent_id: int | None
    agent_key: str
    total_tokens: int
    context_tokens: int
    url: str = ""

    @property
    def context_percent(self) -> int:
        return context_percent(self.total_tokens, self.context_tokens)


def session_rows(qs: Any) -> list[SessionRow]:
    return [SessionRow(*values) for values in qs.values_list(*ROW_FIELDS)]


class SessionUrls:
    """Session page URLs without a reverse() per row: one per gateway, then string work."""

    MARK = "SESSION-KEY-MARK"

    def __init__(self) -> None:
        self._prefix: dict[int, tuple[str, str]] = {}

    def __call__(self, row: SessionRow) -> str:
        parts = self._prefix.get(row.gateway_id)
        if parts is None:
            url = reverse("dashboard:session-detail", args=[row.gateway_id, self.MARK])
            before, _, after = url.partition(self.MARK)
            parts = self._prefix[row.gateway_id] = (before, after)
        return parts[0] + iri_to_uri(row.session_key) + parts[1]


@dataclass
class SessionNode:
    session: SessionRow
    children: list[SessionNode] = field(default_factory=list)


@dataclass
class AgentNode:
    agent: Agent
    status: str  # the agent's status: its busiest session's
    running: bool
    sessions: list[SessionNode] = field(default_factory=list)
    hidden_sessions: int = 0
    session_count: int = 0
    lazy: bool = False  # has sessions, none rendered: the page fetches them on expand
    sessions_url: str = ""  # this agent's session-list fragment
    new_chat_url: str = ""  # POST: a fresh session of this agent
    children: list[AgentNode] = field(default_factory=list)
    matched: bool = True
    runs: int = 0  # sessions of this agent with a run in flight
    last_activity: datetime | None = None  # its most recently updated session's time


def _activity(own: list[SessionRow]) -> tuple[int, datetime | None]:
    runs = sum(1 for s in own if s.has_active_run)
    return runs, max((s.gw_updated_at for s in own if s.gw_updated_at), default=None)


@dataclass
class GatewayView:
    gateway: Gateway
    counts: dict[str, int]
    running: int
    agents: list[AgentNode]
    agent_choices: list[Agent]
    sparkline: Sparkline | None


def latency_history(gateway_ids: list[int]) -> dict[int, list[tuple[datetime, float | None]]]:
    """The last hour of health checks per gateway, oldest first (latency None where it was down)."""
    since = timezone.now() - timedelta(hours=1)
    samples: dict[int, list[tuple[datetime, float | None]]] = defaultdict(list)
    for gw_id, checked_at, connected, latency in (
        HealthSample.objects.filter(gateway_id__in=gateway_ids, checked_at__gte=since)
        .order_by("checked_at")
        .values_list("gateway_id", "checked_at", "connected", "latency_ms")
    ):
        samples[gw_id].append((checked_at, latency if connected else None))
    return samples


def session_counts(ids: list[int]) -> tuple[dict[int, dict[str, int]], dict[int, int]]:
    """Sessions per status and runs in flight, per gateway: one grouped query."""
    counts: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys(AgentSession.Status.values, 0))
    running: dict[int, int] = defaultdict(int)
    for row in (
        AgentSession.objects.filter(gateway_id__in=ids)
        .values("gateway_id", "status")
        .annotate(n=Count("id"), runs=Count("id", filter=Q(has_active_run=True)))
    ):
        counts[row["gateway_id"]][row["status"]] = row["n"]
        running[row["gateway_id"]] += row["runs"]
    return counts, running


@dataclass
class CountsView:
    """The counts line alone (re-fetched live on every session change or run)."""

    gateway: Gateway
    counts: dict[str, int]
    running: int
    agent_choices: list[Agent]


def counts_line(gateway: Gateway) -> CountsView:
    counts, running = session_counts([gateway.pk])
    agents = list(Agent.objects.filter(gateway=gateway).only("pk"))
    return CountsView(gateway, counts[gateway.pk], running[gateway.pk], agents)


def _sort_key(session: SessionRow) -> tuple:
    updated = session.gw_updated_at.timestamp() if session.gw_updated_at else 0
    return (STATUS_ORDER.get(session.status, 3), not session.has_active_run, -updated)


def build(filters: Filters | None = None, gateway_ids: list[int] | None = None) -> list[GatewayView]:
    filters = filters or Filters()
    gateways = list(
        Gateway.objects.enabled() if gateway_ids is None else Gateway.objects.filter(pk__in=gateway_ids)
    )
    ids = [g.pk for g in gateways]
    if not ids:
        return []

    counts, running = session_counts(ids)
    agents = list(
        Agent.objects.filter(gateway_id__in=ids)
        .with_last_message()
        .order_by("-is_default", "name", "agent_id")
    )
    sessions = AgentSession.objects.filter(gateway_id__in=ids)
    if filters.statuses:
        sessions = sessions.filter(status__in=filters.statuses)
    if filters.agent:
        sessions = sessions.filter(agent_key=filters.agent)
    if filters.q:
        sessions = sessions.filter(Q(session_key__icontains=filters.q) | Q(title__icontains=filters.q))
    session_list = session_rows(sessions)

    samples = latency_history(ids)

    by_agent: dict[int | None, list[SessionRow]] = defaultdict(list)
    by_parent: dict[int, list[SessionRow]] = defaultdict(list)
    session_ids = {s.pk for s in session_list}
    for s in session_list:
        if s.parent_id and s.parent_id in session_ids:
            by_parent[s.parent_id].append(s)
        else:
            by_agent[s.agent_id].append(s)

    urls = SessionUrls()

    def session_node(s: SessionRow) -> SessionNode:
        s.url = urls(s)
        return SessionNode(s, [session_node(c) for c in sorted(by_parent.get(s.pk, []), key=_sort_key)])

    q = filters.q.lower()
    views = []
    for gw in gateways:
        gw_agents = [a for a in agents if a.gateway_id == gw.pk]
        nodes: dict[int, AgentNode] = {}
        budget = _row_budget(gw_agents, by_agent, filters)
        # One reverse() per gateway, not one per agent (200 agents: ~10 ms of the page).
        list_url = reverse("dashboard:fragment-agent-sessions", args=[gw.pk, 0])
        chat_url = reverse("dashboard:new-chat", args=[gw.pk, 0])
        for agent in gw_agents:
            own = sorted(by_agent.get(agent.pk, []), key=_sort_key)
            status = own[0].status if own else AgentSession.Status.OFFLINE
            shown = own[: budget.get(agent.pk, 0)]
            matched = (not filters.agent or agent.agent_id == filters.agent) and (
                not q or bool(own) or q in agent.name.lower() or q in agent.agent_id.lower()
            )
            if filters.statuses and not own:
                matched = False
            nodes[agent.pk] = AgentNode(
                agent, status, any(s.has_active_run for s in own), [session_node(s) for s in shown],
                len(own) - len(shown), session_count=len(own), lazy=bool(own) and not shown, matched=matched,
                sessions_url=list_url.replace("/agents/0/", f"/agents/{agent.pk}/"),
                new_chat_url=chat_url.replace("/agents/0/", f"/agents/{agent.pk}/"),
            )  # fmt: skip
            nodes[agent.pk].runs, nodes[agent.pk].last_activity = _activity(own)
        roots: list[AgentNode] = []
        for agent in gw_agents:
            node = nodes[agent.pk]
            parent = nodes.get(agent.parent_id) if agent.parent_id else None
            (parent.children if parent else roots).append(node)
        views.append(
            GatewayView(
                gateway=gw,
                counts=counts[gw.pk],
                running=running[gw.pk],
                agents=_prune(roots),
                agent_choices=gw_agents,
                sparkline=build_sparkline(samples[gw.pk]),
            )  # fmt: skip
        )
    return views


def _row_budget(
    agents: list[Agent], by_agent: dict[int | None, list[SessionRow]], filters: Filters
) -> dict[int, int]:
    """How many session rows each agent renders: busiest agents first, within ROW_BUDGET."""
    if filters.agent:
        return {a.pk: len(by_agent.get(a.pk, [])) for a in agents}
    left = ROW_BUDGET
    budget: dict[int, int] = {}

    def busyness(agent: Agent) -> tuple:
        own = by_agent.get(agent.pk, [])
        active = sum(1 for s in own if s.status == AgentSession.Status.ACTIVE or s.has_active_run)
        return (-active, -len(own))

    for agent in sorted(agents, key=busyness):
        take = min(len(by_agent.get(agent.pk, [])), SESSIONS_PER_AGENT, left)
        budget[agent.pk] = take
        left -= take
    return budget


def agent_sessions(agent: Agent, filters: Filters, limit: int = 200) -> AgentNode:
    """One agent's sessions (the lazy list an expanded agent fetches)."""
    qs = AgentSession.objects.filter(agent=agent)
    if filters.statuses:
        qs = qs.filter(status__in=filters.statuses)
    if filters.q:
        qs = qs.filter(Q(session_key__icontains=filters.q) | Q(title__icontains=filters.q))
    own = sorted(session_rows(qs), key=_sort_key)
    by_parent: dict[int, list[SessionRow]] = defaultdict(list)
    ids = {s.pk for s in own}
    top: list[SessionRow] = []
    for s in own:
        (by_parent[s.parent_id] if s.parent_id in ids else top).append(s)

    urls = SessionUrls()

    def node(s: SessionRow) -> SessionNode:
        s.url = urls(s)
        return SessionNode(s, [node(c) for c in by_parent.get(s.pk, [])])

    shown = top[:limit]
    status = own[0].status if own else AgentSession.Status.OFFLINE
    runs, last_activity = _activity(own)
    return AgentNode(
        agent,
        status,
        any(s.has_active_run for s in own),
        [node(s) for s in shown],
        len(top) - len(shown),
        session_count=len(own),
        sessions_url=reverse("dashboard:fragment-agent-sessions", args=[agent.gateway_id, agent.pk]),
        new_chat_url=reverse("dashboard:new-chat", args=[agent.gateway_id, agent.pk]),
        runs=runs,
        last_activity=last_activity,
    )


def _prune(nodes: list[AgentNode]) -> list[AgentNode]:
    """Drop agents that match no filter unless a descendant does (the chart keeps its shape)."""
    kept = []
    for node in nodes:
        node.children = _prune(node.children)
        if node.matched or node.children:
            kept.append(node)
    return kept


@dataclass
class HealthView:
    gateway: Gateway
    sparkline: Sparkline | None


def health(gateway: Gateway) -> HealthView:
    """The health card alone (badge, latency, last hour's sparkline): two small queries."""
    return HealthView(gateway, build_sparkline(latency_history([gateway.pk])[gateway.pk]))
