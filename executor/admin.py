from __future__ import annotations

from django.contrib import admin

from .models import DisabledEntry, Execution


@admin.register(DisabledEntry)
class DisabledEntryAdmin(admin.ModelAdmin):
    list_display = ("name", "disabled_at", "reason")


@admin.register(Execution)
class ExecutionAdmin(admin.ModelAdmin):
    list_display = ("command", "asked_by", "exit_code", "duration_ms", "killed", "timed_out", "started_at")
    readonly_fields = [f.name for f in Execution._meta.fields]

    def has_add_permission(self, request: object) -> bool:
        return False
