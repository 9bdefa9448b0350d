"""What every page needs to know about live updates: whether Redis answers (base.html's banner)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from agentflow.lib.redis import redacted_url, redis_problem


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
