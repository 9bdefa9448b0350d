"""Tags for the shared components in ``templates/components/`` (``{% load ui %}``).

Status is drawn one way everywhere: ``{% status obj %}`` for a model with a ``status`` field
(Gateway, AgentSession, BatchRun) or ``{% status value "session" %}`` for a bare value. The
label comes from the model's choices and the shape from :data:`SHAPES`, so a state always has
the same words and the same shape; the page gets the same table as JSON (``{% status_shapes %}``)
so a live change redraws the shape without JavaScript knowing any state.
"""

from __future__ import annotations

import functools
from typing import Any

from django import template
from django.db import models
from django.http import QueryDict
from django.template.loader import render_to_string
from django.urls import get_script_prefix
from django.utils.html import json_script

from dashboard.routing import WEBSOCKET_PATH
from fleet.models import AgentSession, Gateway
from scheduler.models import BatchRun

register = template.Library()

# Shapes, each with its own colour in app.css; the shape alone tells the states apart.
CIRCLE = "circle"  # fine
DIAMOND = "diamond"  # needs a look
SQUARE = "square"  # down or failed
RING = "ring"  # off, unknown, nothing to say

STATUS_CHOICES: dict[str, type[models.TextChoices]] = {
    "gateway": Gateway.Status,
    "session": AgentSession.Status,
    "run": BatchRun.Status,
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
}
MODEL_KINDS: dict[type[models.Model], str] = {Gateway: "gateway", AgentSession: "session", BatchRun: "run"}
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
