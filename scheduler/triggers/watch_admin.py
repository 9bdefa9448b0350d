"""The admin of file watches: patterns one per line, events as checkboxes, the directory checked
against AGENTFLOW_WATCH_ROOTS (Watch.clean → scheduler.triggers.watch.validate); state, counts
and recent events read-only (the watcher writes them)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin

from .watch_models import EVENTS, Watch, WatchEvent


class WatchForm(forms.ModelForm):
    patterns = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One glob per line (or comma-separated), relative to the directory: "
        '"*.pdf", "in/**/*.csv". Empty: every file.',
    )
    events = forms.MultipleChoiceField(
        choices=[(e, e) for e in EVENTS], widget=forms.CheckboxSelectMultiple, initial=["created"]
    )

    class Meta:
        model = Watch
        fields = [
            "name",
            "directory",
            "patterns",
            "events",
            "recursive",
            "debounce_ms",
            "job",
            "move_to",
            "enabled",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["patterns"] = "\n".join(self.instance.patterns or [])

    def clean_patterns(self) -> list[str]:
        text = self.cleaned_data.get("patterns") or ""
        return [p.strip() for line in text.splitlines() for p in line.split(",") if p.strip()]


class WatchEventInline(admin.TabularInline):
    model = WatchEvent
    fields = ("at", "event", "path", "run")
    readonly_fields = ("at", "event", "path", "run")
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False
    ordering = ["-id"]

    def get_queryset(self, request: Any) -> Any:
        qs = super().get_queryset(request)
        ids = list(qs.order_by("-id").values_list("id", flat=True)[:50])
        return qs.filter(id__in=ids)


@admin.register(Watch)
class WatchAdmin(admin.ModelAdmin):
    form = WatchForm
    list_display = ["name", "directory", "job", "state", "enabled", "last_event_at", "runs_made"]
    list_filter = ["state", "enabled"]
    search_fields = ["name", "directory"]
    readonly_fields = [
        "state",
        "state_detail",
        "state_changed_at",
        "baseline_at",
        "last_event_at",
        "runs_made",
    ]
    list_select_related = ["job"]
    inlines = [WatchEventInline]
