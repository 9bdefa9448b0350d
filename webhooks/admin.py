from __future__ import annotations

from django.contrib import admin

from agentflow.lib.admin import ReadOnlyAdmin, milliseconds
from agentflow.lib.fields import UnreadableSecret

from .forms import EndpointForm
from .models import Delivery, Endpoint


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    form = EndpointForm
    list_display = [
        "slug",
        "provider",
        "events_label",
        "job",
        "enabled",
        "secret_state",
        "rate_limit_per_minute",
    ]
    list_filter = ["provider", "enabled"]
    search_fields = ["slug", "job__name"]
    readonly_fields = [
        "url",
        "secret_state",
        "previous_secret_until",
        "secret_env",
        "created_at",
        "updated_at",
    ]
    fieldsets = [
        (None, {"fields": ["slug", "url", "provider", "job", "enabled"]}),
        (
            "Secret",
            {
                "fields": [
                    "secret",
                    "keep_previous_hours",
                    "secret_state",
                    "previous_secret_until",
                    "secret_env",
                ]
            },
        ),
        ("What runs", {"fields": ["events", "filters", "branch", "input_template"]}),
        ("Limits", {"fields": ["rate_limit_per_minute", "max_body_bytes"]}),
        ("History", {"fields": ["created_at", "updated_at"]}),
    ]

    @admin.display(description="Events")
    def events_label(self, obj: Endpoint) -> str:
        return obj.events_label

    @admin.display(description="Secret")
    def secret_state(self, obj: Endpoint) -> str:
        """Only whether there is one (and a rotation): the secret itself is never shown."""
        if isinstance(obj.secret, UnreadableSecret):
            return "unreadable (a missing AGENTFLOW_ENCRYPTION_KEYS key)"
        state = "set" if obj.secret else "not set"
        if obj.previous_secret and obj.previous_secret_until:
            state += f"; the previous one is valid until {obj.previous_secret_until:%Y-%m-%d %H:%M} UTC"
        return state


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = [
        "received_at",
        "endpoint",
        "event",
        "verdict",
        "status_code",
        "delivery_id",
        "run",
        "took",
    ]
    list_filter = ["verdict", "endpoint"]
    search_fields = ["delivery_id", "event"]
    date_hierarchy = "received_at"
    list_select_related = ["endpoint", "run"]

    @admin.display(description="Took")
    def took(self, obj: Delivery) -> str:
        return milliseconds(obj.duration_ms)
