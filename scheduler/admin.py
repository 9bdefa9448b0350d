from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from agentflow.lib.admin import ReadOnlyAdmin, milliseconds

from . import audit
from .models import Alert, AuditEntry, BatchRun


@admin.register(BatchRun)
class BatchRunAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Run history: read-only (the engine records it; retention deletes it)."""

    list_display = [
        "started_at",
        "batch",
        "target_name",
        "status",
        "duration",
        "worker",
        "counts_words",
        "short_error",
    ]
    list_filter = ["batch", "status", "scope"]
    search_fields = ["error", "target_name"]
    date_hierarchy = "started_at"
    show_full_result_count = False

    @admin.display(description="Duration", ordering="duration_ms")
    def duration(self, obj: BatchRun) -> str:
        return milliseconds(obj.duration_ms)

    @admin.display(description="Counts")
    def counts_words(self, obj: BatchRun) -> str:
        return obj.counts_text[:120]

    @admin.display(description="Error")
    def short_error(self, obj: BatchRun) -> str:
        return obj.error[:80]


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    """Alerts are raised by the engine; an operator only resolves them (the action, or the form)."""

    list_display = ["created_at", "level", "source", "short_message", "resolved_at"]
    list_filter = ["level", "source", ("resolved_at", admin.EmptyFieldListFilter)]
    search_fields = ["message", "source"]
    date_hierarchy = "created_at"
    readonly_fields = ["level", "source", "message", "created_at"]
    actions = ["resolve"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Message")
    def short_message(self, obj: Alert) -> str:
        return obj.message[:120]

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
