"""The endpoint form, shared by the admin and the Triggers › Webhooks page: the secret is
write-only (never rendered back) and a new one on an existing endpoint is a rotation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms

from .models import Endpoint
from .providers import PROVIDERS


class EndpointForm(forms.ModelForm):
    secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. Leave blank to keep the current secret. "
        + " ".join(f"{p.label}: {p.secret_hint}" for p in PROVIDERS.values()),
    )
    keep_previous_hours = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=24 * 30,
        initial=24,
        label="Keep the previous secret valid for (hours)",
        help_text="When you type a new secret: the old one keeps verifying this long, so senders can switch.",
    )

    class Meta:
        model = Endpoint
        fields = [
            "slug",
            "provider",
            "secret",
            "events",
            "filters",
            "branch",
            "job",
            "input_template",
            "enabled",
            "rate_limit_per_minute",
            "max_body_bytes",
        ]

    # Where each provider's secret comes from: the page lists them under the field.
    secret_hints = [(p.label, p.secret_hint) for p in PROVIDERS.values()]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("events", "filters", "input_template"):  # JSON: a few lines, monospaced
            self.fields[name].widget.attrs.update(rows=3, spellcheck="false", **{"class": "json-input"})
        self.initial["secret"] = ""  # so keeping it is not logged as "Changed secret"
        self.stored_secret = self.instance.secret if self.instance.pk else ""

    def clean_secret(self) -> str:
        secret = self.cleaned_data.get("secret", "")
        if not secret and not self.instance.pk:
            raise forms.ValidationError("A new endpoint needs its secret (the sender signs with it).")
        return secret

    def save(self, commit: bool = True) -> Endpoint:
        new_secret = self.cleaned_data.get("secret", "")
        endpoint = super().save(commit=False)
        endpoint.secret = self.stored_secret or new_secret
        hours = self.cleaned_data.get("keep_previous_hours")
        if commit:
            endpoint.save()
            if new_secret and self.stored_secret and new_secret != self.stored_secret:
                endpoint.rotate_secret(new_secret, timedelta(hours=24 if hours is None else hours))
                endpoint.secret_env = ""
                endpoint.save(update_fields=["secret_env"])
        else:
            endpoint.secret = new_secret or self.stored_secret
        return endpoint
