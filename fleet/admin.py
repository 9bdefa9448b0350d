from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages

from agentflow.lib.admin import ReadOnlyAdmin, milliseconds
from agentflow.lib.fields import UnreadableSecret
from scheduler import audit
from scheduler.models import ProviderBlock

from . import agent_runs
from .models import Agent, AgentSession, ChatHistory, ConfigHistory, Gateway, HealthSample


class GatewayForm(forms.ModelForm):
    # The token is write-only: never rendered back into the page.
    token = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. Leave blank to keep the current token.",
    )

    class Meta:
        model = Gateway
        fields = ["name", "url", "token", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Start blank, so keeping the token is not logged as "Changed token".
        self.initial["token"] = ""

    def clean_url(self) -> str:
        url = self.cleaned_data["url"].strip()
        if not url.startswith(("ws://", "wss://")):
            raise forms.ValidationError("The gateway URL must start with ws:// or wss://")
        return url

    def clean_token(self) -> str:
        token = self.cleaned_data.get("token", "")
        if not token and self.instance.pk:
            return self.instance.token  # keep the stored one
        if not token:
            raise forms.ValidationError("A new gateway needs its token (gateway.auth.token).")
        return token


@admin.register(Gateway)
class GatewayAdmin(admin.ModelAdmin):
    form = GatewayForm
    list_display = ["name", "url", "enabled", "status", "latency", "version", "has_token", "last_checked_at"]
    list_filter = ["enabled", "status"]
    search_fields = ["name", "url"]
    readonly_fields = (
        "status",
        "status_reason",
        "last_error_code",
        "version",
        "protocol",
        "scopes",
        "latency_ms",
        "last_connected_at",
        "last_checked_at",
        "created_at",
        "updated_at",
    )
    fieldsets = [
        (None, {"fields": ["name", "url", "token", "enabled"]}),
        ("Last known state", {"fields": readonly_fields}),
    ]

    @admin.display(description="Latency", ordering="latency_ms")
    def latency(self, obj: Gateway) -> str:
        return milliseconds(obj.latency_ms)

    @admin.display(description="Token")
    def has_token(self, obj: Gateway) -> str:
        """Only whether there is one: the token itself is never shown."""
        if isinstance(obj.token, UnreadableSecret):
            return "unreadable (its encryption key is missing)"
        return "set" if obj.token else "not set"


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["agent_id", "name", "emoji", "model", "gateway", "parent", "is_default", "updated_at"]
    list_filter = ["gateway", "is_default"]
    search_fields = ["agent_id", "name", "model"]
    list_select_related = ["gateway", "parent"]
    raw_id_fields = ["parent"]


@admin.register(AgentSession)
class AgentSessionAdmin(admin.ModelAdmin):
    list_display = [
        "short_key",
        "agent",
        "status",
        "has_active_run",
        "total_tokens",
        "gw_updated_at",
        "gateway",
    ]
    list_filter = ["gateway", "status", "has_active_run", "kind"]
    search_fields = ["session_key", "session_id", "title", "agent_key"]
    list_select_related = ["gateway", "agent"]
    raw_id_fields = ["agent", "parent"]
    date_hierarchy = "gw_updated_at"

    @admin.display(description="Session key", ordering="session_key")
    def short_key(self, obj: AgentSession) -> str:
        return obj.session_key if len(obj.session_key) <= 60 else obj.session_key[:59] + "…"


@admin.register(ConfigHistory)
class ConfigHistoryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "gateway", "short_hash", "paths"]
    list_filter = ["gateway"]
    search_fields = ["hash"]
    date_hierarchy = "created_at"
    list_select_related = ["gateway"]

    @admin.display(description="Hash")
    def short_hash(self, obj: ConfigHistory) -> str:
        return obj.hash[-16:]

    @admin.display(description="Changed paths")
    def paths(self, obj: ConfigHistory) -> str:
        paths = [str(p) for p in obj.changed_paths] if isinstance(obj.changed_paths, list) else []
        return ", ".join(paths[:4]) + (f" and {len(paths) - 4} more" if len(paths) > 4 else "")


@admin.register(ChatHistory)
class ChatHistoryAdmin(admin.ModelAdmin):
    list_display = ["timestamp", "gateway", "session_key", "role", "short_text"]
    list_filter = ["gateway", "role"]
    search_fields = ["session_key", "message_id", "run_id", "text"]
    date_hierarchy = "timestamp"
    list_select_related = ["gateway"]
    show_full_result_count = False  # COUNT(*) over millions of rows is slow

    @admin.display(description="Text")
    def short_text(self, obj: ChatHistory) -> str:
        return obj.text[:60] + ("…" if len(obj.text) > 60 else "")


@admin.register(HealthSample)
class HealthSampleAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Health checks: read-only history (BATCH-005 records it; retention deletes it)."""

    list_display = ["checked_at", "gateway", "connected", "latency", "short_error"]
    list_filter = ["gateway", "connected"]
    date_hierarchy = "checked_at"
    list_select_related = ["gateway"]
    show_full_result_count = False

    @admin.display(description="Latency", ordering="latency_ms")
    def latency(self, obj: HealthSample) -> str:
        return milliseconds(obj.latency_ms)

    @admin.display(description="Error")
    def short_error(self, obj: HealthSample) -> str:
        return obj.error[:80]


@admin.register(ProviderBlock)
class ProviderBlockAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Episodes of a blocked provider (fleet.agent_runs, fleet.probes): the record, read-only;
    "Unblock" is the same audited control as the queue page's button and ``manage.py provider``."""

    list_display = [
        "started_at",
        "gateway",
        "agent",
        "provider",
        "ended_at",
        "ended_by",
        "probes",
        "runs_blocked",
    ]
    list_filter = ["provider", "ended_at"]
    search_fields = ["gateway", "agent", "provider", "reason"]
    date_hierarchy = "started_at"
    actions = ["unblock"]

    @admin.action(description="Unblock the selected providers (queue their blocked runs again)")
    def unblock(self, request: Any, queryset: Any) -> None:
        actor = audit.Actor.of_user(request.user, source="admin", ip_address=request.META.get("REMOTE_ADDR"))
        done = 0
        for block in queryset.filter(ended_at__isnull=True):
            try:
                done += agent_runs.unblock(
                    actor, block.gateway, block.agent, block.provider, "unblocked in the admin"
                )
            except audit.Refused as exc:
                self.message_user(request, exc.message, messages.ERROR)
                return
        self.message_user(request, f"unblocked; {done} run(s) queued again", messages.SUCCESS)
