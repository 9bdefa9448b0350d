"""Who is asking: the audit actor of a request, and the 403 a refused control answers.

Every control view runs its domain call inside ``scheduler.audit.control(...)`` with
``access.actor(request)``; a refusal (the role is too low) is recorded there and raised as
``audit.Refused``, a ``PermissionDenied``: the page answers templates/403.html, the API 403 JSON.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from scheduler import roles
from scheduler.audit import Actor


def client_ip(request: HttpRequest) -> str | None:
    # REMOTE_ADDR only: a forwarded header is whatever the client wants it to be.
    return request.META.get("REMOTE_ADDR") or None


def actor(request: HttpRequest, source: str = "web") -> Actor:
    """The request's actor: its user, or the API token it authenticated with (``request.api_token``,
    set by ``dashboard.api``), whose role is at most its user's."""
    token: Any = getattr(request, "api_token", None)
    if token is not None:
        return Actor.of_user(
            token.user,
            source="api",
            ip_address=client_ip(request),
            label=f"api token {token.name!r} ({token.user.get_username()})",
            role=roles.Role.parse(token.role),
        )
    return Actor.of_user(request.user, source=source, ip_address=client_ip(request))


def can_operate(request: HttpRequest) -> bool:
    return actor(request).can("operate")
