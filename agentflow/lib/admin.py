"""Admin helpers shared by the apps: read-only history and readable numbers."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest


class ReadOnlyAdmin:
    """History the system writes (runs, health checks): listed and viewed, never added, edited
    or deleted by hand (retention deletes old rows). Mix in before ``admin.ModelAdmin``."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def milliseconds(value: float | None) -> str:
    """A duration in ms as people read it: "—", "12 ms", "2.27 s"."""
    if value is None:
        return "—"
    if value < 1000:
        return f"{value:.0f} ms"
    return f"{value / 1000:.2f} s"
