from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from scheduler import audit

from .entries import entries
from .models import DisabledEntry, Execution


class DisabledEntryForm(forms.ModelForm):
    """Only an entry of the deployed allowlist can be disabled (none can be added here)."""

    name = forms.ChoiceField(choices=())

    class Meta:
        model = DisabledEntry
        fields = ["name", "reason"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = sorted(entries())
        self.fields["name"].choices = [(n, n) for n in names]  # type: ignore[attr-defined]


def _actor(request: HttpRequest) -> audit.Actor:
    return audit.Actor.of_user(request.user, source="admin", ip_address=request.META.get("REMOTE_ADDR"))


@admin.register(DisabledEntry)
class DisabledEntryAdmin(admin.ModelAdmin):
    form = DisabledEntryForm
    list_display = ("name", "disabled_at", "reason")

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        target = audit.Target("command", obj.name, obj.name)
        audit.record("executor.disable", _actor(request), target, reason=obj.reason)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        name = obj.name
        super().delete_model(request, obj)
        audit.record("executor.enable", _actor(request), audit.Target("command", name, name))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        names = list(queryset.values_list("name", flat=True))
        super().delete_queryset(request, queryset)
        for name in names:
            audit.record("executor.enable", _actor(request), audit.Target("command", name, name))


@admin.register(Execution)
class ExecutionAdmin(admin.ModelAdmin):
    list_display = ("command", "asked_by", "exit_code", "duration_ms", "killed", "timed_out", "started_at")
    readonly_fields = [f.name for f in Execution._meta.fields]

    def has_add_permission(self, request: object) -> bool:
        return False
