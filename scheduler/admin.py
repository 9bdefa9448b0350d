from django.contrib import admin

from .models import BatchRun


@admin.register(BatchRun)
class BatchRunAdmin(admin.ModelAdmin):
    list_display = ["started_at", "batch", "gateway", "status", "duration_ms", "counts", "short_error"]
    list_filter = ["batch", "status", "gateway"]
    search_fields = ["error"]
    date_hierarchy = "started_at"
    list_select_related = ["gateway"]
    show_full_result_count = False

    @admin.display(description="Error")
    def short_error(self, obj: BatchRun) -> str:
        return obj.error[:120]
