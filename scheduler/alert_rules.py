"""Alert rules: conditions evaluated every few seconds, one open alert per rule and subject.

Parts:

- a **registry of conditions** (``register_condition``): a key, the defaults of its rule and an
  ``evaluate(rule, ctx)`` that returns what holds now as :class:`Finding` s (one per subject: a
  job, a gateway, a provider key; "" for the whole install), or None when it cannot tell
  (Redis down: its open alerts stay as they are). The engine's conditions are in
  :mod:`scheduler.alert_conditions`; apps above the engine register theirs in
  ``AppConfig.ready()`` (fleet: gateway latency and gateways down; dashboard: process memory),
  ARCHITECTURE.md rule 6;
- an **AlertRule row** per condition (threshold, window, level, cooldown, enabled; edited in the
  admin), created with the condition's defaults after migrate and by the evaluator when missing;
- the **evaluator** (:func:`evaluate`, beat's ``scheduler-alerts`` entry every
  AGENTFLOW_ALERT_INTERVAL_SECONDS) and, for conditions known the moment they happen (a job's
  third failure in a row, a provider blocked), :func:`fire` and :func:`clear`.

The life of an alert (``Alert`` with ``rule`` and ``subject``):

1. the condition holds and no alert of the rule and subject is open: one is **raised**
   (first seen = ``created_at``), ``alert.raised`` goes to the notification channels and to
   open pages; if the same rule and subject was resolved less than ``cooldown_seconds`` ago,
   that alert is **re-opened** instead (``reopened`` + 1), quietly: no notification (a flapping
   condition tells people once);
2. each later evaluation that still sees it **touches** it (``last_seen``, ``count``, the
   figure and the message): one UPDATE for all of them;
3. the condition no longer holds: it is **resolved** (``alert.resolved``, unless it was
   re-opened: its receivers were told it resolved the first time).

At most one open alert per rule and subject is a database constraint, so two evaluations at
once (a duplicate beat message) cannot raise it twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import F
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from . import live, notify
from .models import Alert, AlertRule

log = logging.getLogger("agentflow.alerts")


@dataclass(frozen=True)
class Finding:
    """The condition holds for ``subject``: its figure and the message operators read."""

    subject: str
    message: str
    value: float | None = None


@dataclass
class Context:
    """What one evaluation shares: its time and the open alerts of each rule (subject → alert)."""

    now: datetime
    open: dict[str, dict[str, Alert]] = field(default_factory=dict)

    def open_subjects(self, rule: str) -> list[str]:
        return sorted(self.open.get(rule, {}))


Evaluate = Callable[[AlertRule, Context], Iterable[Finding] | None]


@dataclass(frozen=True)
class Condition:
    key: str
    label: str  # what holds, in words ("Error rate over the window")
    unit: str  # the threshold's unit: "%", "s", "runs", "" (at once: no threshold)
    evaluate: Evaluate
    level: str = AlertRule.Level.WARNING
    threshold: float | None = None
    window_seconds: int = 0
    min_samples: int = 0
    cooldown_seconds: int = 300
    doc: str = ""
    holds_at: str = ">"  # how the figure compares with the threshold, in words (">", "≥")

    def defaults(self) -> dict:
        return {
            "level": self.level,
            "threshold": self.threshold,
            "window_seconds": self.window_seconds,
            "min_samples": self.min_samples,
            "cooldown_seconds": self.cooldown_seconds,
        }


_conditions: dict[str, Condition] = {}


def register_condition(condition: Condition) -> Condition:
    """Add (or replace) a condition; its AlertRule row is created with its defaults when missing."""
    _conditions[condition.key] = condition
    return condition


def conditions() -> list[Condition]:
    return [_conditions[k] for k in sorted(_conditions)]


def find_condition(key: str) -> Condition | None:
    return _conditions.get(key)


def ensure_rules(model: type[AlertRule] = AlertRule) -> list[str]:
    """Create the missing rule rows with their condition's defaults; returns the keys created.
    Existing rows are left as operators edited them."""
    have = set(model.objects.values_list("key", flat=True))
    missing = [c for c in conditions() if c.key not in have]
    if missing:
        model.objects.bulk_create([model(key=c.key, **c.defaults()) for c in missing], ignore_conflicts=True)
    return [c.key for c in missing]


def create_after_migrate(sender: object, apps: object = None, **kwargs: object) -> None:
    """post_migrate: the rules exist as soon as the database does (not before migration 0012)."""
    if apps is None:
        return
    try:
        historical = apps.get_model("scheduler", "AlertRule")  # type: ignore[attr-defined]
    except LookupError:
        return
    ensure_rules(historical)


# --- raising, touching, resolving ------------------------------------------------------------------


def _link(alert: Alert) -> str:
    try:
        return reverse("dashboard:alerts") + f"#alert-{alert.pk}"
    except NoReverseMatch:  # the engine runs without the pages (a worker's URLconf has them too)
        return ""


def _event(kind: str, alert: Alert, text: str) -> notify.Event:
    return notify.Event(
        kind=kind,
        subject=f"{alert.get_level_display()}: {alert.message[:200]}",
        text=text,
        level=alert.level,
        thread=f"alert:{alert.pk}",
        link=_link(alert),
        data={"id": alert.pk, "rule": alert.rule, "subject": alert.subject, "value": alert.value},
    )


def _source(rule: str, subject: str) -> str:
    return (f"{rule}:{subject}" if subject else rule)[:50]


def _raise(rule: AlertRule, finding: Finding, now: datetime, source: str = "") -> Alert | None:
    """Open the alert of ``rule`` and ``finding.subject`` (none open): a new one, or the one
    resolved within the cooldown re-opened quietly. None when another evaluation opened it."""
    recent = None
    if rule.cooldown_seconds:
        recent = (
            Alert.objects.filter(
                rule=rule.key,
                subject=finding.subject,
                resolved_at__gte=now - timedelta(seconds=rule.cooldown_seconds),
            )
            .order_by("-resolved_at")
            .first()
        )
    try:
        with transaction.atomic():  # a savepoint: the constraint may refuse (opened meanwhile)
            if recent is not None:
                changed = Alert.objects.filter(pk=recent.pk, resolved_at__isnull=False).update(
                    resolved_at=None,
                    last_seen=now,
                    count=F("count") + 1,
                    reopened=F("reopened") + 1,
                    message=finding.message,
                    value=finding.value,
                )
                if not changed:
                    return None
                recent.refresh_from_db()
                live.ALERT_RAISED.send_on_commit()
                log.info("alert re-opened within its cooldown: %s", recent)
                return recent
            alert = Alert.objects.create(
                rule=rule.key,
                subject=finding.subject[:200],
                level=rule.level,
                source=source or _source(rule.key, finding.subject),
                message=finding.message,
                value=finding.value,
                created_at=now,
                last_seen=now,
            )
    except IntegrityError:
        return None
    notify.send(_event("alert.raised", alert, finding.message))
    live.ALERT_RAISED.send_on_commit()
    log.warning("alert raised: %s", alert)
    return alert


def _resolve(alert: Alert, now: datetime) -> bool:
    if not Alert.objects.filter(pk=alert.pk, resolved_at__isnull=True).update(resolved_at=now):
        return False
    alert.resolved_at = now
    if not alert.reopened:  # a re-opened alert's receivers were told it resolved the first time
        notify.send(_event("alert.resolved", alert, f"resolved: {alert.message}"))
    live.ALERT_RESOLVED.send_on_commit()
    log.info("alert resolved: %s", alert)
    return True


def _rule(key: str) -> AlertRule | None:
    rule = AlertRule.objects.filter(key=key).first()
    if rule is None and find_condition(key) is not None:
        ensure_rules()
        rule = AlertRule.objects.filter(key=key).first()
    return rule


def fire(
    key: str, subject: str, message: str, *, value: float | None = None, source: str = ""
) -> Alert | None:
    """The condition ``key`` holds for ``subject`` now (called where it happens, e.g. inside the
    transaction that ended a job's third failed run): raise its alert, or touch the open one.
    Returns the alert raised (None: already open, re-opened, or the rule disabled)."""
    rule = _rule(key)
    if rule is None or not rule.enabled:
        return None
    now = timezone.now()
    finding = Finding(subject, message, value)
    if (
        Alert.objects.open()
        .filter(rule=key, subject=subject)
        .update(last_seen=now, count=F("count") + 1, message=message, value=value)
    ):
        return None
    alert = _raise(rule, finding, now, source)
    return alert if alert is not None and not alert.reopened else None


def clear(key: str, subject: str) -> int:
    """The condition ``key`` no longer holds for ``subject``: resolve its open alert (0 or 1)."""
    now = timezone.now()
    return sum(_resolve(a, now) for a in Alert.objects.open().filter(rule=key, subject=subject))


# --- the evaluator ---------------------------------------------------------------------------------


@dataclass
class Report:
    raised: int = 0
    reopened: int = 0
    touched: int = 0
    resolved: int = 0
    skipped: list[str] = field(default_factory=list)  # rules whose condition could not tell
    seconds: dict[str, float] = field(default_factory=dict)  # per condition (wall time)


def evaluate(now: datetime | None = None) -> Report:
    """One pass over every registered condition (see the module's docstring)."""
    now = now or timezone.now()
    report = Report()
    rules = {r.key: r for r in AlertRule.objects.all()}
    if any(c.key not in rules for c in conditions()):
        ensure_rules()
        rules = {r.key: r for r in AlertRule.objects.all()}
    ctx = Context(now)
    for alert in Alert.objects.open().exclude(rule=""):
        ctx.open.setdefault(alert.rule, {})[alert.subject] = alert
    touched: list[int] = []
    changed: list[tuple[Alert, Finding]] = []
    for condition in conditions():
        rule = rules.get(condition.key)
        if rule is None:
            continue
        opened = ctx.open.get(rule.key, {})
        if not rule.enabled:
            found: dict[str, Finding] = {}  # a disabled rule watches nothing: its alerts resolve
        else:
            started = time.perf_counter()
            try:
                result = condition.evaluate(rule, ctx)
                found = {f.subject: f for f in result} if result is not None else {}
            except Exception:
                log.warning("alert rule %s could not be evaluated", rule.key, exc_info=True)
                result = None
            report.seconds[rule.key] = round(time.perf_counter() - started, 6)
            if result is None:
                report.skipped.append(rule.key)
                continue
        for subject, finding in found.items():
            current = opened.get(subject)
            if current is None:
                raised = _raise(rule, finding, now)
                if raised is not None:
                    if raised.reopened:
                        report.reopened += 1
                    else:
                        report.raised += 1
                continue
            touched.append(current.pk)
            if finding.message != current.message or finding.value != current.value:
                changed.append((current, finding))
        for subject, alert in opened.items():
            if subject not in found and _resolve(alert, now):
                report.resolved += 1
    if touched:
        report.touched = Alert.objects.filter(pk__in=touched, resolved_at__isnull=True).update(
            last_seen=now, count=F("count") + 1
        )
    for alert, finding in changed:  # a changed figure: a write per alert (few; most repeat unchanged)
        Alert.objects.filter(pk=alert.pk).update(message=finding.message, value=finding.value)
    return report


def describe(rule: AlertRule) -> str:
    """The rule in words, for the admin and the page: "error rate > 1 % over 5 min (≥ 20 runs)"."""
    condition = find_condition(rule.key)
    if condition is None:
        return f"{rule.key} (no such condition registered)"
    text = condition.label
    if rule.threshold is not None:
        text += f" {condition.holds_at} {rule.threshold:,g}{' ' + condition.unit if condition.unit else ''}"
    if rule.window_seconds:
        minutes, seconds = divmod(rule.window_seconds, 60)
        text += f" over {minutes} min" if not seconds else f" over {rule.window_seconds} s"
    elif condition.unit == "" and rule.threshold is None:
        text += ", at once"
    if rule.min_samples:
        text += f" (at least {rule.min_samples} observations)"
    return text
