"""The admin of notifications: channels (a write-only secret, a test action), and the
notifications and deliveries as read-only history. Registered by :mod:`scheduler.admin`."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from agentflow.lib.admin import ReadOnlyAdmin, milliseconds
from agentflow.lib.fields import UnreadableSecret
from scheduler import audit, notify

from . import delivery
from .models import Channel, ChannelThread, Delivery, Notification

SECRET_HELP = (
    "Write-only: never shown again. Leave blank to keep the current one. Slack: the incoming "
    "webhook's URL; webhook: the whsec_… signing secret you share with the receiver (make one: "
    "python -c \"import base64,secrets; print('whsec_'+base64.b64encode(secrets.token_bytes(32)).decode())\""
    "); "
    "GitHub: a token that may write the repository's issues."
)


class ChannelForm(forms.ModelForm):
    events = forms.MultipleChoiceField(
        choices=list(notify.EVENTS.items()),
        widget=forms.CheckboxSelectMultiple,
        initial=list(notify.EVENTS),
        help_text="The events this channel receives.",
    )
    url = forms.URLField(
        required=False, max_length=500, assume_scheme="https", help_text="Webhook: the receiver's URL."
    )
    api_url = forms.URLField(
        required=False,
        max_length=300,
        assume_scheme="https",
        initial="https://api.github.com",
        help_text="GitHub: the REST API's base URL.",
    )
    # Write-only, like a gateway's token: never rendered back into the page.
    secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=SECRET_HELP,
    )

    class Meta:
        model = Channel
        fields = [
            "name",
            "kind",
            "enabled",
            "events",
            "min_level",
            "recipients",
            "url",
            "repository",
            "api_url",
            "secret",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["secret"] = ""  # so keeping it is not logged as "Changed secret"

    def clean_secret(self) -> str:
        secret = self.cleaned_data.get("secret", "").strip()
        if not secret and self.instance.pk:
            return self.instance.secret  # keep the stored one
        return secret


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    form = ChannelForm
    list_display = [
        "name",
        "kind",
        "enabled",
        "events_text",
        "min_level",
        "target",
        "has_secret",
        "updated_at",
    ]
    list_filter = ["kind", "enabled"]
    search_fields = ["name"]
    actions = ["send_test"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "enabled", "events", "min_level"]}),
        ("Where it sends (by kind)", {"fields": ["recipients", "url", "repository", "api_url", "secret"]}),
    ]

    @admin.display(description="Events")
    def events_text(self, obj: Channel) -> str:
        return obj.events_label

    @admin.display(description="Sends to")
    def target(self, obj: Channel) -> str:
        return obj.target_label

    @admin.display(description="Secret")
    def has_secret(self, obj: Channel) -> str:
        """Only whether there is one: the secret itself is never shown."""
        if isinstance(obj.secret, UnreadableSecret):
            return "unreadable (its encryption key is missing)"
        return "set" if obj.secret else "not set"

    @admin.action(description="Send a test notification to the selected channels")
    def send_test(self, request: HttpRequest, queryset: QuerySet[Channel]) -> None:
        actor = audit.Actor.of_user(request.user, source="admin", ip_address=request.META.get("REMOTE_ADDR"))
        for channel in queryset.order_by("name"):
            try:
                sent = delivery.send_test(actor, channel)
            except audit.Refused as exc:
                self.message_user(request, exc.message, messages.ERROR)
                return
            if sent.status == Delivery.Status.SENT:
                detail = (
                    sent.response_body[:120]
                    if sent.response_status is None
                    else f"HTTP {sent.response_status}"
                )
                self.message_user(request, f"{channel.name}: sent ({detail}).", messages.SUCCESS)
            else:
                self.message_user(
                    request, f"{channel.name}: {sent.status}: {sent.error[:300]}", messages.ERROR
                )


class DeliveryInline(admin.TabularInline):
    model = Delivery
    fields = ("channel", "status", "attempts", "response_status", "error", "next_attempt_at", "sent_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = ["created_at", "kind", "level", "subject", "thread"]
    list_filter = ["kind", "level"]
    search_fields = ["subject", "text", "thread"]
    date_hierarchy = "created_at"
    inlines = [DeliveryInline]
    show_full_result_count = False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = [
        "created_at",
        "channel",
        "kind",
        "status",
        "attempts",
        "response_status",
        "short_error",
        "next_attempt_at",
        "took",
    ]
    list_filter = ["status", "channel"]
    list_select_related = ["channel", "notification"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description="Event", ordering="notification__kind")
    def kind(self, obj: Delivery) -> str:
        return obj.notification.kind

    @admin.display(description="Error")
    def short_error(self, obj: Delivery) -> str:
        return obj.error[:100]

    @admin.display(description="Duration", ordering="duration_ms")
    def took(self, obj: Delivery) -> str:
        return milliseconds(obj.duration_ms)


@admin.register(ChannelThread)
class ChannelThreadAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = ["channel", "thread", "issue_number", "state", "updated_at"]
    list_filter = ["channel", "state"]
    search_fields = ["thread"]
