from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from .models import Alert, BatchRun


@admin.register(BatchRun)
class BatchRunAdmin(admin.ModelAdmin):
    list_display = ["started_at", "batch", "target_name", "status", "duration_ms", "counts", "short_error"]
    list_filter = ["batch", "status", "scope", "target_name"]
    search_fields = ["error", "target_name"]
    date_hierarchy = "started_at"
    show_full_result_count = False

    @admin.display(description="Error")
    def short_error(self, obj: BatchRun) -> str:
        return obj.error[:120]


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["created_at", "level", "source", "message", "resolved_at"]
    list_filter = ["level", "source", "resolved_at"]
    actions = ["resolve"]

    @admin.action(description="Mark selected alerts resolved")
    def resolve(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        queryset.filter(resolved_at__isnull=True).update(resolved_at=timezone.now())
