"""Alerts: the open ones (severest first), then the history, filtered by level and rule; the
rules below, as configured in the admin (scheduler.alert_rules)."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from scheduler import alert_rules
from scheduler.models import Alert, AlertRule

OPEN_SHOWN = 200  # open alerts are few; past this the page says how many more
HISTORY_PER_PAGE = 50


@require_GET
def alerts(request: HttpRequest) -> HttpResponse:
    level = request.GET.get("level", "")
    rule = request.GET.get("rule", "")
    level = level if level in Alert.Level.values else ""
    qs = Alert.objects.all()
    if level:
        qs = qs.filter(level=level)
    if rule:
        qs = qs.filter(rule="" if rule == "-" else rule)
    open_alerts = list(qs.open().by_severity()[: OPEN_SHOWN + 1])
    history = Paginator(
        qs.filter(resolved_at__isnull=False).order_by("-resolved_at", "-id"), HISTORY_PER_PAGE
    ).get_page(request.GET.get("page"))
    rules = [(r, alert_rules.describe(r)) for r in AlertRule.objects.order_by("key")]
    return render(
        request,
        "dashboard/alerts.html",
        {
            "current": open_alerts[:OPEN_SHOWN],
            "current_more": len(open_alerts) > OPEN_SHOWN,
            "page": history,
            "rules": rules,
            "levels": Alert.Level.choices,
            "rule_keys": [r.key for r, _ in rules],
            "filters": {"level": level, "rule": rule},
            "active": bool(level or rule),
        },
    )
