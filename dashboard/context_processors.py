"""What pages need: whether Redis answers (base.html's banner) and the open alerts (every page's
banners), each computed at most once per request, only if a template asks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from agentflow.lib.redis import redacted_url, redis_problem
from scheduler import alerts
from scheduler.models import Alert


def live_updates(request: HttpRequest) -> dict[str, Any]:
    """``live_unavailable``: the banner's text when Redis does not answer, else "". Checked at most
    once per request and only when a template asks (a callable: templates call it lazily)."""

    @cache
    def live_unavailable() -> str:
        if not getattr(request, "user", None) or not request.user.is_authenticated:
            return ""  # the login page does not tell strangers where Redis lives
        problem = redis_problem()
        if problem is None:
            return ""
        return f"Redis at {redacted_url()} does not answer ({problem})."

    checker: Callable[[], str] = live_unavailable
    return {"live_unavailable": checker, "live_heartbeat": settings.AGENTFLOW_WS_HEARTBEAT}


BANNERS_SHOWN = 3  # the severest open alerts get a banner each; the rest are counted on one
COUNT_CAP = 99  # "99+ more" past this (one bounded query, never a count(*))


@dataclass(frozen=True)
class OpenAlerts:
    shown: list[Alert]
    count: int  # up to COUNT_CAP + 1

    @property
    def more(self) -> int:
        return max(0, self.count - len(self.shown))

    @property
    def more_label(self) -> str:
        more = f"{COUNT_CAP - len(self.shown)}+" if self.count > COUNT_CAP else str(self.more)
        return f"{more} more open alert{'s' if self.more != 1 else ''}."


def open_alerts(request: HttpRequest) -> dict[str, Any]:
    """``open_alerts``: the severest open alerts for every page's banners (a Redis snapshot, else
    one query on the ``alert_open`` index: scheduler.alerts.open_snapshot), for a signed-in user only."""

    @cache
    def load() -> OpenAlerts:
        if not getattr(request, "user", None) or not request.user.is_authenticated:
            return OpenAlerts([], 0)
        shown, count = alerts.open_snapshot(BANNERS_SHOWN, COUNT_CAP)
        return OpenAlerts(shown, count)

    checker: Callable[[], OpenAlerts] = load
    return {"open_alerts": checker}
