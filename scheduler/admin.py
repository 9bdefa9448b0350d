from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from . import audit
from .models import Alert, AuditEntry, BatchRun


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
        ids = sorted(queryset.filter(resolved_at__isnull=True).values_list("pk", flat=True))
        actor = audit.Actor.of_user(request.user, source="admin", ip_address=request.META.get("REMOTE_ADDR"))
        target = audit.Target("alert", ",".join(map(str, ids))[:255], f"{len(ids)} open alert(s)")
        try:
            with audit.control("alert.resolve", actor, target) as ctl:
                count = Alert.objects.filter(pk__in=ids).update(resolved_at=timezone.now())
                ctl.note(f"{count} resolved")
        except audit.Refused as exc:
            self.message_user(request, exc.message, messages.ERROR)


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The control audit, read-only: rows are written by scheduler.audit and never edited."""

    list_display = ["created_at", "actor_label", "action", "target_label", "result", "message", "source"]
    list_filter = ["action", "result", "source", "actor_label"]
    search_fields = ["actor_label", "target_label", "target_id", "reason", "message"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    list_select_related = ["actor"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False
