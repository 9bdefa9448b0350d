"""Tags for the shared components in ``templates/components/`` (``{% load ui %}``).

Status is drawn one way everywhere: ``{% status obj %}`` for a model with a ``status`` field
(Gateway, AgentSession, BatchRun) or ``{% status value "session" %}`` for a bare value. The
label comes from the model's choices and the shape from :data:`SHAPES`, so a state always has
the same words and the same shape; the page gets the same table as JSON (``{% status_shapes %}``)
so a live change redraws the shape without JavaScript knowing any state.
"""

from __future__ import annotations

import functools
import re
import zlib
from datetime import datetime
from typing import Any

from django import template
from django.conf import settings
from django.db import models
from django.http import QueryDict
from django.template.loader import render_to_string
from django.urls import get_script_prefix
from django.utils import timezone
from django.utils.html import escape, format_html_join, json_script
from django.utils.safestring import SafeString, mark_safe

from dashboard.routing import WEBSOCKET_PATH
from dashboard.trace import TraceStatus
from fleet.models import AgentSession, Gateway
from flows.models import FlowRun
from scheduler.models import Alert, Attempt, BatchRun, Delivery, Run, Schedule, ScheduleFire, Watch
from webhooks.models import Delivery as WebhookDelivery

register = template.Library()

# Shapes, each with its own colour in app.css; the shape alone tells the states apart.
CIRCLE = "circle"  # fine
DIAMOND = "diamond"  # needs a look
SQUARE = "square"  # down or failed
RING = "ring"  # off, unknown, nothing to say


class BreakerStatus(models.TextChoices):
    """The circuit breakers' states (scheduler/breakers.py), as the queue page names them."""

    CLOSED = "closed", "Closed"
    HALF_OPEN = "half_open", "Probing"
    OPEN = "open", "Open"


class GatewayCronState(models.TextChoices):
    """A gateway's own scheduler (fleet/gateway_cron.py GatewayCron.state), on the Automation page."""

    RUNNING = "running", "Cron running"
    PAUSED = "paused", "Cron paused"
    UNREACHABLE = "unreachable", "Not reachable"
    UNKNOWN = "unknown", "Cron state unknown"


STATUS_CHOICES: dict[str, type[models.TextChoices]] = {
    "gateway": Gateway.Status,
    "session": AgentSession.Status,
    "run": BatchRun.Status,
    "job_run": Run.Status,
    "attempt": Attempt.Status,
    "breaker": BreakerStatus,
    "gateway_cron": GatewayCronState,
    "delivery": Delivery.Status,
    "alert": Alert.Level,
    "watch": Watch.State,
    "webhook": WebhookDelivery.Verdict,
    "schedule": Schedule.State,
    "schedule_fire": ScheduleFire.Outcome,
    "trace": TraceStatus,
    "flow_run": FlowRun.Status,
}
SHAPES: dict[str, dict[str, str]] = {
    "gateway": {
        Gateway.Status.CONNECTED: CIRCLE,
        Gateway.Status.DEGRADED: DIAMOND,
        Gateway.Status.READ_ONLY: DIAMOND,
        Gateway.Status.DISCONNECTED: SQUARE,
        Gateway.Status.AUTH_FAILED: SQUARE,
        Gateway.Status.INCOMPATIBLE: SQUARE,
        Gateway.Status.UNKNOWN: RING,
    },
    "session": {
        AgentSession.Status.ACTIVE: CIRCLE,
        AgentSession.Status.IDLE: DIAMOND,
        AgentSession.Status.OFFLINE: RING,
    },
    "run": {
        BatchRun.Status.RUNNING: CIRCLE,
        BatchRun.Status.OK: CIRCLE,
        BatchRun.Status.ERROR: SQUARE,
        BatchRun.Status.SKIPPED: RING,
        BatchRun.Status.LOST: SQUARE,  # its worker died mid-run
    },
    "job_run": {
        Run.Status.QUEUED: RING,
        Run.Status.SCHEDULED: RING,
        Run.Status.PARKED: DIAMOND,  # held by a pause
        Run.Status.BLOCKED: DIAMOND,  # its provider is blocked
        Run.Status.RUNNING: CIRCLE,
        Run.Status.SUCCEEDED: CIRCLE,
        Run.Status.FAILED: SQUARE,
        Run.Status.ABORTED: SQUARE,
        Run.Status.LOST: SQUARE,
        Run.Status.CANCELLED: RING,
    },
    "attempt": {
        Attempt.Status.RUNNING: CIRCLE,
        Attempt.Status.SUCCEEDED: CIRCLE,
        Attempt.Status.FAILED: SQUARE,
        Attempt.Status.ABORTED: SQUARE,
        Attempt.Status.LOST: SQUARE,
    },
    "breaker": {BreakerStatus.CLOSED: CIRCLE, BreakerStatus.HALF_OPEN: DIAMOND, BreakerStatus.OPEN: SQUARE},
    "gateway_cron": {
        GatewayCronState.RUNNING: CIRCLE,
        GatewayCronState.PAUSED: DIAMOND,  # switched off here or by an emergency stop
        GatewayCronState.UNREACHABLE: SQUARE,
        GatewayCronState.UNKNOWN: RING,
    },
    "delivery": {
        Delivery.Status.PENDING: DIAMOND,  # retrying
        Delivery.Status.SENT: CIRCLE,
        Delivery.Status.FAILED: SQUARE,
        Delivery.Status.SKIPPED: RING,
    },
    # A webhook delivery's verdict: ran (circle), acknowledged without a run (ring), refused (square).
    "webhook": {
        WebhookDelivery.Verdict.ACCEPTED: CIRCLE,
        WebhookDelivery.Verdict.DUPLICATE: RING,
        WebhookDelivery.Verdict.IGNORED: RING,
        WebhookDelivery.Verdict.ANSWERED: RING,
        WebhookDelivery.Verdict.RATE_LIMITED: DIAMOND,
        WebhookDelivery.Verdict.NOT_RUN: DIAMOND,
        WebhookDelivery.Verdict.DISABLED: DIAMOND,
        WebhookDelivery.Verdict.BAD_SIGNATURE: SQUARE,
        WebhookDelivery.Verdict.MALFORMED: SQUARE,
        WebhookDelivery.Verdict.TOO_LARGE: SQUARE,
    },
    # An alert's level (not a state): info is a ring, warning a diamond, error and critical squares.
    "alert": {
        Alert.Level.INFO: RING,
        Alert.Level.WARNING: DIAMOND,
        Alert.Level.ERROR: SQUARE,
        Alert.Level.CRITICAL: SQUARE,
    },
    # A file watch's directory (scheduler/triggers/watch.py): watching, or why not.
    "watch": {
        Watch.State.WATCHING: CIRCLE,
        Watch.State.PENDING: RING,
        Watch.State.DISABLED: RING,
        Watch.State.MISSING: SQUARE,
        Watch.State.UNREADABLE: SQUARE,
        Watch.State.OUTSIDE_ROOTS: SQUARE,
    },
    "schedule": {
        Schedule.State.ACTIVE: CIRCLE,
        Schedule.State.PAUSED: SQUARE,  # paused after failures, or by hand
        Schedule.State.DISABLED: RING,
        Schedule.State.DONE: RING,  # a one-off that fired
    },
    # A row of a trace waterfall (dashboard/trace.py): a span's ok / error, or a run's state.
    "trace": {
        TraceStatus.OK: CIRCLE,
        TraceStatus.RUNNING: CIRCLE,
        TraceStatus.WAITING: RING,
        TraceStatus.ERROR: SQUARE,
        TraceStatus.CANCELLED: RING,
        TraceStatus.UNSET: RING,
    },
    "flow_run": {
        FlowRun.Status.RUNNING: CIRCLE,
        FlowRun.Status.WAITING: CIRCLE,  # its step's agent or command run is under way
        FlowRun.Status.SUCCEEDED: CIRCLE,
        FlowRun.Status.FAILED: SQUARE,
        FlowRun.Status.ABORTED: SQUARE,
        FlowRun.Status.CANCELLED: RING,
    },
    "schedule_fire": {
        ScheduleFire.Outcome.FIRED: CIRCLE,
        ScheduleFire.Outcome.CAUGHT_UP: CIRCLE,
        ScheduleFire.Outcome.MANUAL: CIRCLE,
        ScheduleFire.Outcome.BUFFERED: DIAMOND,
        ScheduleFire.Outcome.SKIPPED: RING,
        ScheduleFire.Outcome.MISSED: DIAMOND,
        ScheduleFire.Outcome.FAILED: SQUARE,
    },
}
MODEL_KINDS: dict[type[models.Model], str] = {
    Gateway: "gateway",
    AgentSession: "session",
    BatchRun: "run",
    Run: "job_run",
    Attempt: "attempt",
    FlowRun: "flow_run",
}
LABELS = {kind: dict(choices.choices) for kind, choices in STATUS_CHOICES.items()}


def _kind_and_value(value: Any, kind: str) -> tuple[str, str]:
    if isinstance(value, models.Model):
        kind = kind or MODEL_KINDS[type(value)]
        value = value.status  # type: ignore[attr-defined]
    if kind not in LABELS:
        raise template.TemplateSyntaxError(f"status: unknown kind {kind!r} (one of {', '.join(LABELS)})")
    return kind, str(value)


def status_context(value: Any, kind: str = "") -> dict[str, str]:
    """What the status component shows for ``value``: kind, value, label and shape."""
    kind, value = _kind_and_value(value, kind)
    # A value the choices do not know (an old row, a newer writer) is shown as it is, as a ring.
    return {
        "kind": kind,
        "value": value,
        "label": LABELS[kind].get(value, value),
        "shape": SHAPES[kind].get(value, RING),
    }


@register.simple_tag
def status(value: Any, kind: str = "") -> str:
    return _render_status(*_kind_and_value(value, kind))


@functools.lru_cache(maxsize=512)
def _render_status(kind: str, value: str) -> str:
    # The markup depends on (kind, value) only, and an overview draws a status per agent and per
    # session row (hundreds): rendering each pair once keeps the component off the page's cost
    # (an inclusion tag per row added ~15 us, +5 ms on a 300-row overview). Restart to see an
    # edited status.html.
    return render_to_string("components/status.html", status_context(value, kind))


@register.simple_tag
def status_shapes() -> str:
    """The shape table as JSON for live.js (``AgentFlow.setStatus``)."""
    return json_script(
        {kind: {str(k): v for k, v in shapes.items()} for kind, shapes in SHAPES.items()}, "status-shapes"
    )


@register.simple_tag
def live_socket_url() -> str:
    """The dashboard websocket's path, as {% url %} would write it."""
    return get_script_prefix() + WEBSOCKET_PATH


@register.simple_tag(takes_context=True)
def query_with(context: template.Context, **changes: Any) -> str:
    """The current query string with ``changes`` applied (a None value drops the key)."""
    request = context.get("request")
    params = request.GET.copy() if request is not None else QueryDict(mutable=True)
    for name, value in changes.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = str(value)
    return params.urlencode()


# --- icons, avatars, numbers, navigation ----------------------------------------------------------

ICON_DIR = settings.BASE_DIR / "static" / "vendor" / "lucide"
ICON_NAME = re.compile(r"^[a-z0-9-]+$")


@register.simple_tag
def icon(name: str, label: str = "") -> SafeString:
    """A vendored Lucide icon inlined as SVG (static/vendor/lucide/, ISC): it takes the text colour
    (currentColor) and is hidden from assistive technology unless it is given a ``label``."""
    return _icon(name, label)


@functools.lru_cache(maxsize=128)
def _icon(name: str, label: str) -> SafeString:
    path = ICON_DIR / f"{name}.svg"
    if not ICON_NAME.match(name) or not path.is_file():
        raise template.TemplateSyntaxError(f"icon: no vendored icon {name!r} in static/vendor/lucide/")
    svg = path.read_text()
    svg = svg[svg.index("<svg") :]  # drop the licence comment (the LICENSE file is beside the icons)
    head, body = svg.split(">", 1)  # the size and class of the <svg> tag are the stylesheet's
    head = re.sub(r'\s(class|width|height)="[^"]*"', "", head)
    a11y = f'role="img" aria-label="{escape(label)}"' if label else 'aria-hidden="true"'
    svg = head.replace("<svg", f'<svg class="icon icon-{name}" {a11y} focusable="false"', 1) + ">" + body
    return mark_safe(" ".join(svg.split()))  # noqa: S308 -- our own vendored files; the label is escaped


AVATAR_HUES = 12  # .hue-0 … .hue-11 in components.css


@register.inclusion_tag("components/avatar.html")
def avatar(agent: Any, size: str = "") -> dict[str, Any]:
    """An agent's identity that needs no emoji font: initials on a colour derived from its id,
    with the emoji (when it has one) as a small badge over the corner."""
    name, agent_id = getattr(agent, "name", "") or "", getattr(agent, "agent_id", "") or ""
    return {
        "initials": initials(name) or initials(agent_id) or "?",
        "hue": zlib.crc32(agent_id.encode()) % AVATAR_HUES,
        "emoji": getattr(agent, "emoji", ""),
        "size": size,
    }


def initials(name: str) -> str:
    """ "Research Bot" → "RB", "writer" → "WR", "agent-07" → "A0"; "" when the name has no letter or digit."""
    words = [w for w in re.split(r"[\W_]+|(?<=[a-z])(?=[A-Z])", name) if w]
    if not words:
        return ""
    return (words[0][0] + words[1][0] if len(words) > 1 else words[0][:2]).upper()


@register.filter
def compact(value: Any) -> str:
    """12300 → "12.3k", 200000 → "200k", 1500000 → "1.5M" (token counts)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= size:
            text = f"{number / size:.1f}".removesuffix(".0")
            return f"{text}{suffix}"
    return f"{number:.0f}"


# The section each page belongs to, for the navigation's aria-current.
SECTIONS = {
    "overview": "fleet",
    "session-detail": "fleet",
    "message-detail": "fleet",
    "batch-runs": "batches",
    "config-history": "config",
    "queue": "queue",
    "runs": "runs",
    "run-detail": "runs",
    "run-trace": "runs",
    "flows": "flows",
    "flow-detail": "flows",
    "jobs": "jobs",
    "job-detail": "jobs",
    "stops": "stops",
    "stop-detail": "stops",
    "notifications": "notifications",
    "alerts": "alerts",
    "watches": "triggers",
    "watch-detail": "triggers",
    "automation": "automation",
    "webhooks": "triggers",
    "webhook-new": "triggers",
    "webhook-detail": "triggers",
    "webhook-edit": "triggers",
    "webhook-deliveries": "triggers",
    "webhook-delivery": "triggers",
    "triggers": "triggers",
    "schedule-detail": "triggers",
}


@register.simple_tag(takes_context=True)
def nav_section(context: template.Context) -> str:
    request = context.get("request")
    match = getattr(request, "resolver_match", None)
    return SECTIONS.get(getattr(match, "url_name", "") or "", "")


@register.simple_tag
def nav_gateways() -> list[Gateway]:
    """The gateways the navigation links to (their config history)."""
    return list(Gateway.objects.enabled().only("pk", "name").order_by("name")[:12])


@register.filter(name="as_id")
def as_id_filter(value: Any) -> int | None:
    """A run's gateway (a string from its params) as a gateway id for a link, or None."""
    from dashboard.params import as_id

    return as_id(str(value or ""))


@register.filter
def took(obj: Any) -> float | None:
    """Seconds from ``started_at`` to ``finished_at`` of a run or attempt (None while running)."""
    started, finished = getattr(obj, "started_at", None), getattr(obj, "finished_at", None)
    return (finished - started).total_seconds() if started and finished else None


@register.filter
def flow_run_seconds(flow_run: FlowRun) -> float:
    """A flow run's duration in seconds: to its end, or to now while it goes on."""
    end = flow_run.finished_at or timezone.now()
    return max((end - flow_run.started_at).total_seconds(), 0.0)


@register.filter
def breakable(value: Any) -> SafeString:
    """A path or URL that may wrap after each "/" (and nowhere else unless it must): escaped, with
    a <wbr> after every slash, so "/srv/inbox/a-long-name" wraps as a path, not mid-word."""
    parts = str(value or "").split("/")
    return format_html_join(SafeString("/<wbr>"), "{}", ((part,) for part in parts))


@register.filter
def json_text(value: Any) -> str:
    """JSON parameters as an operator reads them (true, null; not Python's True, None)."""
    import json

    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


@register.filter
def duration(seconds: float | None) -> str:
    """Seconds as a short duration: 0.25 → "250 ms", 42 → "42 s", 150 → "2 min 30 s", 7300 → "2 h 1 min"."""
    if seconds is None:
        return "—"
    if hasattr(seconds, "total_seconds"):
        seconds = seconds.total_seconds()
    value = float(seconds)
    if value < 0:
        return "—"  # clocks of two hosts disagree: no negative duration is shown
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s".replace(".0 s", " s")
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} d {hours % 24} h"


@register.filter
def alert_seen(alert: Alert) -> str:
    """When an alert was seen, in words: "first seen 5 min ago · last seen just now · 12 times"."""
    text = f"first seen {ago(alert.created_at)}"
    if alert.last_seen and alert.count > 1:
        text += f" · last seen {ago(alert.last_seen)} · {alert.count:,} times"
    if alert.resolved_at:
        text += f" · resolved {ago(alert.resolved_at)}"
    return text


@register.filter
def ago(value: datetime | None) -> str:
    """A short age for lists: "just now", "3 min ago", "5 h ago", "2 d ago" ("" for no time)."""
    if not isinstance(value, datetime):
        return ""
    seconds = max(0, int((timezone.now() - value).total_seconds()))
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        return f"{max(1, round(seconds / 60))} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


@register.filter
def from_now(value: datetime | None) -> str:
    """A time ahead in words: "in 4 min", "in 3 h", "in 2 d" ("due" once it passed)."""
    if not isinstance(value, datetime):
        return ""
    seconds = int((value - timezone.now()).total_seconds())
    if seconds < 30:
        return "due"
    if seconds < 3600:
        return f"in {max(1, round(seconds / 60))} min"
    if seconds < 86400:
        return f"in {seconds // 3600} h {seconds % 3600 // 60} min"
    return f"in {seconds // 86400} d {seconds % 86400 // 3600} h"


# The control plane's pages still to come (issue by issue), shown disabled so the navigation has room.
NAV_SOON = (
    ("Audit", "scroll-text"),
)  # fmt: skip


@register.simple_tag
def engaged_stops() -> list[dict[str, Any]]:
    """The engaged emergency stops for every page's banner (from the Redis mirror: no query)."""
    from scheduler import stops

    return stops.banner()


@register.simple_tag(takes_context=True)
def can_stop(context: template.Context) -> bool:
    """Whether the page's user may engage and release emergency stops (the admin role)."""
    from dashboard import access

    request = context.get("request")
    return bool(
        request is not None and getattr(request, "user", None) and access.actor(request).can("administer")
    )


@register.simple_tag
def nav_soon() -> tuple[tuple[str, str], ...]:
    return NAV_SOON
