"""Stored flows (edited here, validated before they are saved) and flow runs (read-only)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin

from . import spec
from .models import Flow, FlowRun


class FlowForm(forms.ModelForm):
    class Meta:
        model = Flow
        fields = ["source", "path"]
        widgets = {"source": forms.Textarea(attrs={"rows": 30, "cols": 100, "spellcheck": "false"})}

    def clean_source(self) -> str:
        source = self.cleaned_data["source"]
        try:
            self.flow = spec.parse(source, origin="source")
        except spec.FlowError as exc:
            raise forms.ValidationError(exc.problems) from None
        clash = Flow.objects.filter(name=self.flow.name).exclude(pk=self.instance.pk)
        if clash.exists():
            raise forms.ValidationError(f"a stored flow is already named {self.flow.name!r}")
        return source

    def save(self, commit: bool = True) -> Any:
        self.instance.name = self.flow.name
        self.instance.description = self.flow.description
        return super().save(commit)


@admin.register(Flow)
class FlowAdmin(admin.ModelAdmin):
    form = FlowForm
    list_display = ("name", "description", "path", "updated_at")
    search_fields = ("name", "description")
    readonly_fields = ("name", "description", "updated_at")
    fields = ("name", "description", "source", "path", "updated_at")


@admin.register(FlowRun)
class FlowRunAdmin(admin.ModelAdmin):
    list_display = ("id", "flow_name", "status", "position", "preset", "tracer", "started_at", "finished_at")
    list_filter = ("status", "preset", "tracer")
    search_fields = ("flow_name", "trace_id")
    readonly_fields = [f.name for f in FlowRun._meta.fields]

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False
