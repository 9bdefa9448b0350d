from __future__ import annotations

from django.contrib import admin, messages
from django.forms import ModelForm
from django.http import HttpRequest

from scheduler import audit
from scheduler.roles import Role

from . import access
from .models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "role", "prefix", "created_at", "last_used_at"]
    list_filter = ["role"]
    search_fields = ["name", "prefix", "user__username"]
    fields = ["user", "name", "role", "prefix", "created_at", "last_used_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]

    def save_model(self, request: HttpRequest, obj: ApiToken, form: ModelForm, change: bool) -> None:
        if change:
            return super().save_model(request, obj, form, change)
        token, raw = ApiToken.issue(obj.user, obj.name, Role.parse(obj.role))
        obj.pk, obj.prefix, obj.token_hash = token.pk, token.prefix, token.token_hash
        audit.record(
            "api_token.issue",
            access.actor(request, source="admin"),
            audit.Target("api_token", str(token.pk), f"{token} for {token.user} as {token.role}"),
        )
        messages.warning(
            request,
            f"API token for {obj.user}: {raw} — copy it now: it is stored hashed and is not shown again.",
        )
