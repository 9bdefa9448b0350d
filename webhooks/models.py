"""Webhook endpoints (where a sender posts, how it is verified, which job it starts) and the
delivery log (every request to a known endpoint, with its verdict and the run it started)."""

from __future__ import annotations

import fnmatch
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from agentflow.lib.fields import EncryptedTextField
from scheduler.models import Job, Run

from .providers import CHOICES, PROVIDERS


def _default_events() -> list[str]:
    return ["*"]


class EndpointQuerySet(models.QuerySet["Endpoint"]):
    def with_last_delivery(self) -> EndpointQuerySet:
        last = Delivery.objects.filter(endpoint=OuterRef("pk")).order_by("-pk")
        return self.annotate(
            last_verdict=Subquery(last.values("verdict")[:1]),
            last_at=Subquery(last.values("received_at")[:1]),
        )


class Endpoint(models.Model):
    """Served at ``/webhooks/<slug>/``. The secret is write-only and encrypted at rest; a
    rotation keeps the previous secret valid until ``previous_secret_until``."""

    slug = models.SlugField(max_length=100, unique=True, help_text="Served at /webhooks/<slug>/.")
    provider = models.CharField(max_length=20, choices=CHOICES)
    secret = EncryptedTextField(blank=True)
    previous_secret = EncryptedTextField(blank=True, editable=False)
    previous_secret_until = models.DateTimeField(null=True, blank=True, editable=False)
    # Automation as code: the environment variable the secret came from ("GITHUB_WEBHOOK_SECRET"),
    # written back as "${GITHUB_WEBHOOK_SECRET}" on export (never the value).
    secret_env = models.CharField(max_length=100, blank=True, editable=False)
    events = models.JSONField(
        default=_default_events,
        blank=True,
        help_text='Event types it runs the job for, e.g. ["pull_request", "push"] ("github.push" also '
        'reads; "*": any). Others are recorded and acknowledged, not run.',
    )
    filters = models.JSONField(
        default=dict,
        blank=True,
        help_text="Payload fields that must match (dotted paths; a value, a glob or a list), e.g. "
        '{"action": "opened"} or {"pull_request.base.ref": "main"}.',
    )
    branch = models.CharField(
        max_length=200,
        blank=True,
        help_text='Only this branch (a glob, e.g. "main" or "release/*"): the push\'s ref or the pull '
        "request's base branch.",
    )
    job = models.ForeignKey(Job, on_delete=models.PROTECT, related_name="webhook_endpoints")
    input_template = models.JSONField(
        default=dict,
        blank=True,
        help_text='The run\'s input: names → templates over the payload, e.g. {"repository": '
        '"{{ payload.repository.full_name }}", "pr": "{{ payload.number }}"}. Empty: '
        "{event, delivery, payload}.",
    )
    enabled = models.BooleanField(default=True)
    rate_limit_per_minute = models.PositiveIntegerField(
        default=600, help_text="Verified deliveries a minute before it answers 429 (0: no limit)."
    )
    max_body_bytes = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Larger bodies are refused with 413 (empty: AGENTFLOW_WEBHOOK_MAX_BODY).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = EndpointQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def path(self) -> str:
        return f"/webhooks/{self.slug}/"

    @property
    def url(self) -> str:
        """Where senders post: absolute with AGENTFLOW_PUBLIC_URL, else the path."""
        base = settings.AGENTFLOW_PUBLIC_URL.rstrip("/")
        return base + self.path

    @property
    def body_cap(self) -> int:
        return int(self.max_body_bytes or settings.AGENTFLOW_WEBHOOK_MAX_BODY)

    @property
    def provider_label(self) -> str:
        provider = PROVIDERS.get(self.provider)
        return provider.label if provider else self.provider

    @property
    def events_label(self) -> str:
        events = self.events or []
        return "any event" if "*" in events else ", ".join(events) or "none"

    def valid_secrets(self, now: datetime | None = None) -> list[str]:
        """The current secret, and the previous one while its rotation lasts."""
        now = now or timezone.now()
        secrets = [self.secret] if self.secret else []
        if self.previous_secret and self.previous_secret_until and self.previous_secret_until > now:
            secrets.append(self.previous_secret)
        return secrets

    def rotate_secret(self, new: str, keep_previous_for: timedelta) -> None:
        """``new`` becomes the secret; the old one stays valid for ``keep_previous_for`` (zero:
        not at all). Saves the three fields."""
        if not new:
            raise ValidationError("a new secret cannot be empty")
        if self.secret and keep_previous_for > timedelta(0):
            self.previous_secret = self.secret
            self.previous_secret_until = timezone.now() + keep_previous_for
        else:
            self.previous_secret, self.previous_secret_until = "", None
        self.secret = new
        self.save(update_fields=["secret", "previous_secret", "previous_secret_until", "updated_at"])

    def accepts(self, event: str) -> bool:
        for wanted in self.events or []:
            wanted = wanted.removeprefix(f"{self.provider}.")
            if wanted == "*" or wanted == event or fnmatch.fnmatchcase(event, wanted):
                return True
        return False

    def mismatch(self, payload: Any) -> str:
        """Why the payload fails the filters ("" when it passes them)."""
        for path, expected in (self.filters or {}).items():
            value = lookup(payload, path)
            wanted = expected if isinstance(expected, list) else [expected]
            if not any(_matches(value, w) for w in wanted):
                return f"filter {path}: {_short(value)} is not {_short(expected)}"
        if self.branch:
            branch = branch_of(payload)
            if branch is None or not fnmatch.fnmatchcase(branch, self.branch):
                return f"branch {branch or '(none)'} is not {self.branch}"
        return ""

    def clean(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValidationError({"provider": f"unknown provider (one of {', '.join(PROVIDERS)})"})
        if not isinstance(self.events, list) or not all(isinstance(e, str) and e for e in self.events):
            raise ValidationError({"events": 'a list of event names, e.g. ["push"] (or ["*"])'})
        if not self.events:
            raise ValidationError({"events": 'name at least one event (or "*" for any)'})
        if not isinstance(self.filters, dict):
            raise ValidationError({"filters": 'an object of field → value, e.g. {"action": "opened"}'})
        if not isinstance(self.input_template, dict) or not all(
            isinstance(v, str) for v in self.input_template.values()
        ):
            raise ValidationError({"input_template": "an object of name → template text"})
        from .inputs import check_templates  # the template engine is the intake's

        problem = check_templates(self.input_template)
        if problem:
            raise ValidationError({"input_template": problem})


def lookup(payload: Any, path: str) -> Any:
    value = payload
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def branch_of(payload: Any) -> str | None:
    """A push's branch (``ref`` ``refs/heads/x``) or a pull request's base branch."""
    base = lookup(payload, "pull_request.base.ref")
    if isinstance(base, str):
        return base
    ref = lookup(payload, "ref")
    if isinstance(ref, str):
        return ref.removeprefix("refs/heads/")
    return None


def _matches(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, str) and isinstance(value, str):
        return fnmatch.fnmatchcase(value, wanted)
    return bool(value == wanted)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "…"


class DeliveryLogQuerySet(models.QuerySet["Delivery"]):
    def log(
        self, endpoint: int | None = None, verdict: str = "", since: datetime | None = None
    ) -> DeliveryLogQuerySet:
        qs = self.select_related("endpoint", "run").order_by("-pk")
        if endpoint is not None:
            qs = qs.filter(endpoint_id=endpoint)
        if verdict:
            qs = qs.filter(verdict=verdict)
        if since is not None:
            qs = qs.filter(received_at__gte=since)
        return qs


class Delivery(models.Model):
    """One request to a known endpoint. Headers are stored with signatures and credentials
    masked; the body up to the endpoint's cap (a refused larger one: its first 4 KiB)."""

    class Verdict(models.TextChoices):
        ACCEPTED = "accepted", "Accepted (run queued)"
        DUPLICATE = "duplicate", "Duplicate"
        IGNORED = "ignored", "Ignored (recorded, not run)"
        ANSWERED = "answered", "Answered (handshake)"
        BAD_SIGNATURE = "bad_signature", "Bad signature"
        MALFORMED = "malformed", "Malformed"
        TOO_LARGE = "too_large", "Too large"
        RATE_LIMITED = "rate_limited", "Rate limited"
        DISABLED = "disabled", "Endpoint disabled"
        NOT_RUN = "not_run", "Not run (the job refused it)"

    # The verdicts after which the delivery id is taken: a later one with it is a duplicate.
    CLAIMING = ("accepted", "ignored", "answered", "not_run")
    VERIFIED = ("accepted", "duplicate", "ignored", "answered", "not_run")

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deliveries")
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    delivery_id = models.CharField(max_length=200, blank=True)
    event = models.CharField(max_length=100, blank=True)
    verdict = models.CharField(max_length=20, choices=Verdict.choices)
    status_code = models.PositiveSmallIntegerField()
    reason = models.CharField(max_length=300, blank=True)
    headers = models.JSONField(default=dict)
    body = models.TextField(blank=True)
    body_bytes = models.PositiveIntegerField(default=0)
    retry = models.PositiveSmallIntegerField(default=0)
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    redelivery_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="redeliveries"
    )
    duration_ms = models.FloatField(null=True, blank=True)

    objects = DeliveryLogQuerySet.as_manager()

    class Meta:
        ordering = ["-pk"]
        verbose_name_plural = "deliveries"
        constraints = [
            # One claiming delivery per sender id: a second request with it (a retry, a replay, a
            # concurrent duplicate) is recorded as a duplicate and starts no run.
            models.UniqueConstraint(
                fields=["endpoint", "delivery_id"],
                condition=Q(
                    verdict__in=("accepted", "ignored", "answered", "not_run"), redelivery_of__isnull=True
                )
                & ~Q(delivery_id=""),
                name="webhooks_delivery_claims_id",
            )
        ]
        indexes = [
            models.Index(fields=["endpoint", "-received_at"], name="webhooks_delivery_endpoint"),
            # The intake's "already claimed?" lookup of every delivery. SQLite cannot use the
            # partial unique index above for it (it proves a partial index's WHERE only against
            # literals, and the ORM binds parameters), so without this it scanned the whole log:
            # 3.4 ms of CPU per delivery at 12,000 rows (bench/bench_webhooks.py).
            models.Index(fields=["endpoint", "delivery_id"], name="webhooks_delivery_id"),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint.slug} {self.event or '-'} {self.verdict}"

    @property
    def verified(self) -> bool:
        return self.verdict in self.VERIFIED

    @property
    def body_truncated(self) -> bool:
        return len(self.body.encode()) < self.body_bytes
