"""Admin for schedule triggers: their own list (enable, disable, fire now: the audited controls
of :mod:`scheduler.triggers.schedule`) and an inline on the Job admin. The definition is checked by
``Schedule.clean`` (the validation the API and the config import share), so a bad cron or an
unknown zone is a form error naming the field."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from scheduler import audit

from . import schedule
from .models import Schedule, ScheduleFire

DEFINITION_FIELDS = ("name", "kind", "cron", "every_seconds", "at_time", "at_datetime", "timezone", "enabled")
POLICY_FIELDS = (
    "overlap",
    "catch_up",
    "catch_up_window_seconds",
    "jitter_seconds",
    "pause_after_failures",
    "anchor_at",
)


def _actor(request: HttpRequest) -> audit.Actor:
    return audit.Actor.of_user(request.user, source="admin", ip_address=request.META.get("REMOTE_ADDR"))


class ScheduleInline(admin.StackedInline):
    model = Schedule
    extra = 0
    fields = (*DEFINITION_FIELDS, "overlap", "catch_up", "pause_after_failures", "sentence", "next_due_at")
    readonly_fields = ("sentence", "next_due_at")
    show_change_link = True

    @admin.display(description="In words")
    def sentence(self, obj: Schedule) -> str:
        return schedule.describe(obj) if obj.pk else ""


class ScheduleFireInline(admin.TabularInline):
    model = ScheduleFire
    extra = 0
    can_delete = False
    fields = readonly_fields = ("due_at", "fired_at", "outcome", "run", "detail")
    ordering = ("-due_at",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[ScheduleFire]:
        return super().get_queryset(request).select_related("run")


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "kind",
        "expression",
        "timezone",
        "enabled",
        "state",
        "next_due_at",
        "last_fire_at",
    ]
    list_filter = ["kind", "enabled", "overlap", "timezone"]
    search_fields = ["name", "job__name", "cron"]
    list_select_related = ["job"]
    autocomplete_fields: list[str] = []  # type: ignore[misc]
    readonly_fields = [
        "sentence",
        "next_due_at",
        "fire_at",
        "last_fire_at",
        "last_run",
        "consecutive_failures",
        "paused_at",
        "paused_reason",
    ]
    fieldsets = [
        (None, {"fields": ("job", *DEFINITION_FIELDS, "sentence")}),
        ("Policies", {"fields": POLICY_FIELDS}),
        (
            "State",
            {
                "fields": (
                    "next_due_at",
                    "fire_at",
                    "last_fire_at",
                    "last_run",
                    "consecutive_failures",
                    "paused_at",
                    "paused_reason",
                )
            },
        ),
    ]
    inlines = [ScheduleFireInline]
    actions = ["enable", "disable", "fire_now"]

    @admin.display(description="Schedule")
    def expression(self, obj: Schedule) -> str:
        return schedule.expression(obj)

    @admin.display(description="In words")
    def sentence(self, obj: Schedule) -> str:
        return schedule.describe(obj) if obj.pk else ""

    def _each(self, request: HttpRequest, queryset: QuerySet[Schedule], fn: Any, verb: str) -> None:
        done = []
        for s in queryset.select_related("job"):
            try:
                fn(_actor(request), s)
            except (ValidationError, audit.Refused) as exc:
                text = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
                self.message_user(request, f"{s.label}: {text}", messages.ERROR)
                continue
            done.append(s.label)
        if done:
            self.message_user(request, f"{verb}: {', '.join(done)}", messages.SUCCESS)

    @admin.action(description="Enable (lifts a pause after failures)")
    def enable(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        self._each(request, queryset, lambda a, s: schedule.set_enabled(a, s, True), "enabled")

    @admin.action(description="Disable")
    def disable(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        self._each(request, queryset, lambda a, s: schedule.set_enabled(a, s, False), "disabled")

    @admin.action(description="Fire now")
    def fire_now(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        self._each(request, queryset, schedule.fire_now, "fired")


def register_inline(job_admin: type[admin.ModelAdmin]) -> None:
    """The schedules of a job, inline on the Job admin."""
    if ScheduleInline not in job_admin.inlines:
        job_admin.inlines = [*job_admin.inlines, ScheduleInline]
