"""The automatic conditions of the emergency stop (issue 10 §2): the design's critical conditions,
each a ``StopCondition`` row an admin edits (pattern, threshold, window, action).

Where a condition happens, its hit is recorded (:func:`hit`, a database row: Redis failing is one
of them); when the hits within the window reach the threshold the condition fires once: an alert,
or an emergency stop of its scope whose reason names the condition and what it saw. An automatic
stop never flaps: it stays engaged until a person releases it, and only hits after that release
count towards firing again.

The defaults (created by migration, editable in the admin):

==================  ==================================  =========  =======  ====================
key                 what counts                         threshold  window   action
==================  ==================================  =========  =======  ====================
memory              a failure matching                  1          5 min    stop everything
                    ``out of memory|heap limit``
redis               Redis not answering                 3          1 min    alert
provider-auth       a provider refusing its credentials 5          10 min   stop that provider
                    (any agent)
rate-limit-wait     a rate-limit wait longer than       3600 s     -        alert
                    an hour
==================  ==================================  =========  =======  ====================
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

from django.db.models import Max
from django.utils import timezone

from . import audit, errors, live, notify, stops
from .actions import Finished
from .models import Alert, ConditionHit, EmergencyStop, Run, StopCondition

log = logging.getLogger("agentflow.stops")

MEMORY, REDIS, PROVIDER_AUTH, RATE_LIMIT_WAIT = "memory", "redis", "provider-auth", "rate-limit-wait"
DEBOUNCE_SECONDS = 1.0  # at most one hit per condition and subject per second (Redis down: every call fails)

DEFAULTS: list[dict[str, Any]] = [
    {
        "key": MEMORY,
        "label": "Memory exhaustion",
        "pattern": r"out of memory|heap limit",
        "threshold": 1,
        "window_seconds": 300,
        "action": StopCondition.Action.STOP,
        "scope": EmergencyStop.Scope.GLOBAL,
    },
    {
        "key": REDIS,
        "label": "Redis connection failure",
        "threshold": 3,
        "window_seconds": 60,
        "action": StopCondition.Action.ALERT,
        "scope": EmergencyStop.Scope.GLOBAL,
    },
    {
        "key": PROVIDER_AUTH,
        "label": "Provider authentication failure (across agents)",
        "threshold": 5,
        "window_seconds": 600,
        "action": StopCondition.Action.STOP,
        "scope": EmergencyStop.Scope.PROVIDER,
        "value": "*",
    },
    {
        "key": RATE_LIMIT_WAIT,
        "label": "Rate-limit wait longer than an hour",
        "threshold": 3600,
        "window_seconds": 3600,
        "action": StopCondition.Action.ALERT,
        "scope": EmergencyStop.Scope.PROVIDER,
        "value": "*",
    },
]


def ensure_defaults(model: Any = StopCondition) -> None:
    for row in DEFAULTS:
        model.objects.get_or_create(key=row["key"], defaults=row)


def _alert_source(condition: StopCondition, subject: str) -> str:
    return f"condition:{condition.key}:{subject}"[:50]


def hit(key: str, text: str = "", *, subject: str = "", measure: float | None = None) -> EmergencyStop | None:
    """Record that condition ``key`` happened (``text``: the failure's message; ``subject``: what it
    names, e.g. the provider; ``measure``: for a measured condition, the figure compared with the
    threshold). Returns the stop it engaged, if it did. Never raises into the caller."""
    try:
        return _hit(key, text, subject, measure)
    except Exception:
        log.exception("condition %s: could not record a hit", key)
        return None


def _hit(key: str, text: str, subject: str, measure: float | None) -> EmergencyStop | None:
    condition = StopCondition.objects.filter(key=key, enabled=True).first()
    if condition is None:
        return None
    if condition.pattern and not re.search(condition.pattern, text or "", re.IGNORECASE):
        return None
    if measure is not None and measure <= condition.threshold:
        return None
    now = timezone.now()
    recent = ConditionHit.objects.filter(condition=condition, subject=subject[:100])
    if recent.filter(at__gt=now - timedelta(seconds=DEBOUNCE_SECONDS)).exists():
        return None
    ConditionHit.objects.create(
        condition=condition, subject=subject[:100], detail=(text or "")[:2000], at=now
    )
    since = now - timedelta(seconds=condition.window_seconds)
    value = subject if condition.value == "*" else condition.value
    last_release = EmergencyStop.objects.filter(automatic=condition.key, value=value).aggregate(
        at=Max("released_at")
    )["at"]
    if last_release is not None and last_release > since:
        since = last_release  # only hits after a person released its last stop count again
    count = recent.filter(at__gte=since).count()
    needed = 1 if measure is not None else condition.threshold
    if count < needed:
        return None
    reason = (
        f"automatic: {condition.label} ("
        + (
            f"{measure:.0f} s, over {condition.threshold:.0f} s"
            if measure is not None
            else f"{count} within {condition.window_seconds} s"
        )
        + (f", {subject}" if subject else "")
        + f"): {(text or '')[:300]}"
    )
    if condition.action == StopCondition.Action.ALERT:
        source = _alert_source(condition, subject)
        if not Alert.objects.open().filter(source=source).exists():
            Alert.objects.create(source=source, level=Alert.Level.ERROR, message=reason)
            live.ALERT_RAISED.send_on_commit()
            notify.send(
                notify.Event(
                    kind="alert.raised", subject=f"Alert: {condition.label}", text=reason, level="error"
                )
            )
        return None
    scope = condition.scope
    if scope != EmergencyStop.Scope.GLOBAL and not value:
        log.warning("condition %s fired but names no %s to stop: alert only", condition.key, scope)
        return None
    engaged = (
        EmergencyStop.objects.engaged().filter(scope=scope, value="" if scope == "global" else value).first()
    )
    if engaged is not None:
        return engaged  # already stopped (by a person or by this condition): no flapping
    actor = audit.Actor.system(label=f"condition {condition.key}")
    return stops.engage(actor, scope, "" if scope == "global" else value, reason, automatic=condition.key)


def on_outcome(run: Run, outcome: Finished, error_class: str) -> None:
    """What a finished attempt tells the conditions (scheduler.queue, after its transaction)."""
    if outcome.status == "succeeded":
        return
    text = outcome.error or ""
    if error_class == errors.PROVIDER_AUTH:
        hit(PROVIDER_AUTH, text, subject=run.provider)
    elif text:
        hit(MEMORY, text)  # its pattern (out of memory|heap limit) decides


def on_rate_limit_wait(run: Run, wait_seconds: float, reason: str) -> None:
    """A run waits for the rate limiter (scheduler.queue): a wait past the threshold is a hit."""
    if wait_seconds > 60:  # the cheap filter; the condition's threshold decides
        hit(
            RATE_LIMIT_WAIT,
            f"run {run.pk} waits {wait_seconds:.0f} s ({reason})",
            subject=run.provider,
            measure=wait_seconds,
        )


def on_redis_failure(problem: str) -> None:
    """Redis did not answer (agentflow.lib.redis reports it to its failure hooks)."""
    hit(REDIS, problem)


def sweep() -> int:
    """Resolve the alert-only conditions' alerts whose window passed without a hit (the tick)."""
    resolved = 0
    now = timezone.now()
    for condition in StopCondition.objects.filter(action=StopCondition.Action.ALERT):
        prefix = f"condition:{condition.key}:"
        for alert in Alert.objects.open().filter(source__startswith=prefix):
            subject = alert.source[len(prefix) :]
            quiet_since = now - timedelta(seconds=condition.window_seconds)
            if not ConditionHit.objects.filter(
                condition=condition, subject=subject, at__gte=quiet_since
            ).exists():
                resolved += Alert.objects.filter(pk=alert.pk).update(resolved_at=now)
    return resolved
