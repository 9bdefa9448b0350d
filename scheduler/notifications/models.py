"""The records of notifications: where they go (``Channel``), what happened (``Notification``),
one ``Delivery`` per notification × channel, and the GitHub issue of a thread (``ChannelThread``).

Imported by :mod:`scheduler.models` (the app's models module), so the app label is ``scheduler``.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import models
from django.db.models import Q
from django.utils import timezone

from agentflow.lib.fields import EncryptedTextField
from agentflow.lib.http import redact
from scheduler import notify

RESPONSE_MAX_CHARS = 2000  # a delivery keeps this much of the receiver's answer
GITHUB_API_URL = "https://api.github.com"


def every_event() -> list[str]:
    """A new channel's default: every event kind."""
    return list(notify.EVENTS)


class ChannelQuerySet(models.QuerySet["Channel"]):
    def with_last_delivery(self) -> ChannelQuerySet:
        """Each channel with its newest delivery's status and time (``last_status``, ``last_at``)."""
        newest = Delivery.objects.filter(channel=models.OuterRef("pk")).order_by("-created_at")
        return self.annotate(
            last_status=models.Subquery(newest.values("status")[:1]),
            last_at=models.Subquery(newest.values("created_at")[:1]),
            last_error=models.Subquery(newest.values("error")[:1]),
        )


class Channel(models.Model):
    """Where notifications go: an email list, a Slack incoming webhook, a signed webhook or a
    GitHub repository's issues. The ``secret`` (the Slack URL, the ``whsec_`` signing secret, the
    GitHub token) is encrypted at rest and write-only: no page, form or log shows it."""

    class Kind(models.TextChoices):
        EMAIL = "email", "Email"
        SLACK = "slack", "Slack"
        WEBHOOK = "webhook", "Signed webhook"
        GITHUB = "github", "GitHub issues"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    enabled = models.BooleanField(default=True)
    events = models.JSONField(default=every_event, help_text="The event kinds it receives.")
    min_level = models.CharField(
        max_length=10,
        choices=[(level, level.capitalize()) for level in notify.LEVELS],
        default="info",
        help_text="Events below this level are not sent to it.",
    )
    recipients = models.TextField(blank=True, help_text="Email: addresses, one a line or comma-separated.")
    url = models.URLField(max_length=500, blank=True, help_text="Webhook: the receiver's URL.")
    repository = models.CharField(max_length=200, blank=True, help_text='GitHub: "owner/name".')
    api_url = models.URLField(
        max_length=300, blank=True, default=GITHUB_API_URL, help_text="GitHub: the REST API's base URL."
    )
    secret = EncryptedTextField(
        blank=True,
        help_text="Slack: the incoming-webhook URL; webhook: the whsec_… signing secret; GitHub: a token.",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ChannelQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    def receives(self, event: notify.Event) -> bool:
        """Whether this channel gets ``event`` (a test event is for one channel, always)."""
        if event.channel is not None:
            return event.channel == self.pk
        if not self.enabled or event.kind not in (self.events or []):
            return False
        return notify.LEVELS.index(event.level) >= notify.LEVELS.index(self.min_level)

    @property
    def events_label(self) -> str:
        events = self.events or []
        if set(events) >= set(notify.EVENTS):
            return "all events"
        return ", ".join(notify.EVENTS.get(e, e) for e in events) or "none"

    @property
    def recipient_list(self) -> list[str]:
        return [a.strip() for a in self.recipients.replace(",", "\n").splitlines() if a.strip()]

    @property
    def has_secret(self) -> bool:
        return bool(self.secret)

    @property
    def target_label(self) -> str:
        """Where it sends, without secrets (for pages and logs)."""
        if self.kind == self.Kind.EMAIL:
            shown = self.recipient_list
            return ", ".join(shown[:3]) + (f" and {len(shown) - 3} more" if len(shown) > 3 else "")
        if self.kind == self.Kind.WEBHOOK:
            return redact(self.url)
        if self.kind == self.Kind.GITHUB:
            return self.repository
        return "incoming webhook"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        unknown = [e for e in (self.events or []) if e not in notify.EVENTS]
        if not isinstance(self.events, list) or unknown:
            errors["events"] = f"Unknown event kinds: {', '.join(map(str, unknown))}."
        if self.kind == self.Kind.EMAIL:
            if not self.recipient_list:
                errors["recipients"] = "An email channel needs at least one recipient."
            for address in self.recipient_list:
                try:
                    validate_email(address)
                except ValidationError:
                    errors["recipients"] = f"Not an email address: {address}"
        elif self.kind == self.Kind.WEBHOOK:
            if not self.url:
                errors["url"] = "A webhook channel needs the receiver's URL."
            if not _is_whsec(self.secret):
                errors["secret"] = "A signing secret is whsec_ followed by base64 (Standard Webhooks)."
        elif self.kind == self.Kind.GITHUB:
            owner, _, name = self.repository.strip().strip("/").partition("/")
            if not owner or not name or "/" in name:
                errors["repository"] = 'The repository is "owner/name".'
            if not self.api_url:
                errors["api_url"] = f"The API's base URL ({GITHUB_API_URL} for github.com)."
        if self.kind in (self.Kind.SLACK, self.Kind.GITHUB) and not self.secret:
            what = "incoming-webhook URL" if self.kind == self.Kind.SLACK else "token"
            errors["secret"] = f"A {self.get_kind_display()} channel needs its {what}."
        if (
            self.kind == self.Kind.SLACK
            and self.secret
            and not self.secret.startswith(("https://", "http://"))
        ):
            errors["secret"] = "The Slack secret is the incoming webhook's URL (https://…)."
        if errors:
            raise ValidationError(errors)


def _is_whsec(secret: str) -> bool:
    if not secret.startswith("whsec_"):
        return False
    try:
        return bool(base64.b64decode(secret[len("whsec_") :] + "==", validate=False))
    except (binascii.Error, ValueError):
        return False


class Notification(models.Model):
    """One event as it was sent (``notify.send``): written on commit of the caller's transaction."""

    kind = models.CharField(max_length=40)
    level = models.CharField(max_length=10, default="info")
    subject = models.CharField(max_length=300)
    text = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    thread = models.CharField(max_length=200, blank=True)
    link = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["-created_at"], name="notification_time")]

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject[:80]}"

    @property
    def label(self) -> str:
        return notify.EVENTS.get(self.kind) or notify.DIRECT.get(self.kind, self.kind)


class DeliveryQuerySet(models.QuerySet["Delivery"]):
    def due(self, now: datetime) -> DeliveryQuerySet:
        return self.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now)

    def log(self, channel: int | None = None, status: str = "", kind: str = "") -> DeliveryQuerySet:
        """The delivery log, newest first, optionally of one channel, status and event kind."""
        rows = self.select_related("channel", "notification").order_by("-created_at")
        if channel is not None:
            rows = rows.filter(channel_id=channel)
        if status:
            rows = rows.filter(status=status)
        if kind:
            rows = rows.filter(notification__kind=kind)
        return rows


class Delivery(models.Model):
    """One notification to one channel: pending until sent, retried with backoff, failed (final)
    after AGENTFLOW_NOTIFY_MAX_ATTEMPTS or an answer that says retrying cannot help.

    ``next_attempt_at`` is both the schedule and the claim: an attempt moves it a lease ahead with
    a conditional UPDATE (scheduler/notifications/delivery.py), so a duplicate message, the tick and
    a second worker never send the same attempt twice, and a worker that died mid-send is retried
    once the lease is over. ``history`` keeps one line per attempt (the delivery log)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True)
    error = models.TextField(blank=True)
    history = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(fields=["-created_at"], name="delivery_time"),
            models.Index(fields=["channel", "-created_at"], name="delivery_channel_time"),
            models.Index(fields=["next_attempt_at"], name="delivery_due", condition=Q(status="pending")),
        ]
        constraints = [
            models.UniqueConstraint(fields=["notification", "channel"], name="delivery_one_per_channel")
        ]

    def __str__(self) -> str:
        return f"{self.notification.kind} → {self.channel.name}: {self.status}"

    @property
    def webhook_id(self) -> str:
        """The Standard Webhooks ``webhook-id``: the same on every retry (receivers dedupe by it)."""
        return f"msg_{self.pk.hex}"


class ChannelThread(models.Model):
    """The GitHub issue a channel opened for a thread (``stop:12``): later events of the thread
    comment on it, and its closing event closes it."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="threads")
    thread = models.CharField(max_length=200)
    issue_number = models.PositiveIntegerField()
    issue_url = models.URLField(max_length=300, blank=True)
    state = models.CharField(max_length=10, default="open")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["channel", "thread"], name="channelthread_one")]

    def __str__(self) -> str:
        return f"{self.channel.name} {self.thread} → #{self.issue_number} ({self.state})"
