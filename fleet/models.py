"""What the gateways tell us: gateways, their agents and sessions, config and chat history, health.

The tables keep the names they had in the ``dashboard`` app (moved in fleet/migrations/0001,
state only), so upgrading moves no data.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.db import models
from django.utils import timezone

from agentflow.lib.fields import EncryptedTextField
from openclaw import AuthError, ProtocolMismatchError

if TYPE_CHECKING:
    from openclaw import Compatibility, GatewayError, HelloInfo


def from_ms(value: Any) -> datetime | None:
    """A gateway millisecond timestamp as an aware datetime (None for anything odd)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    try:
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


class GatewayQuerySet(models.QuerySet["Gateway"]):
    def enabled(self) -> GatewayQuerySet:
        return self.filter(enabled=True)


class Gateway(models.Model):
    class Status(models.TextChoices):
        UNKNOWN = "unknown", "Not checked yet"
        CONNECTED = "connected", "Connected"
        DEGRADED = "degraded", "Degraded"
        READ_ONLY = "read_only", "Read-only"
        DISCONNECTED = "disconnected", "Disconnected"
        AUTH_FAILED = "auth_failed", "Authentication failed"
        INCOMPATIBLE = "incompatible", "Incompatible"

    HEALTHY = (Status.CONNECTED, Status.READ_ONLY)

    name = models.CharField(max_length=100, unique=True)
    url = models.CharField("WebSocket URL", max_length=500, help_text="e.g. ws://127.0.0.1:18789/")
    # Encrypted at rest (AGENTFLOW_ENCRYPTION_KEYS); never rendered back or logged: the admin
    # form is write-only and __repr__ leaves it out.
    token = EncryptedTextField(blank=True)
    enabled = models.BooleanField(default=True)

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.UNKNOWN)
    status_reason = models.TextField(blank=True, help_text="Why the gateway has this status, for operators.")
    last_error_code = models.CharField(max_length=80, blank=True)
    version = models.CharField(max_length=100, blank=True)
    protocol = models.PositiveSmallIntegerField(null=True, blank=True)
    scopes = models.JSONField(default=list, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    last_connected_at = models.DateTimeField(null=True, blank=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = GatewayQuerySet.as_manager()

    class Meta:
        db_table = "dashboard_gateway"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<Gateway {self.pk} {self.name!r} {self.url!r}>"

    @property
    def is_healthy(self) -> bool:
        return self.status in self.HEALTHY

    @property
    def can_write(self) -> bool:
        return self.status == self.Status.CONNECTED

    def mark_connected(
        self, hello: HelloInfo, compat: Compatibility, latency_ms: float | None = None
    ) -> None:
        status = {
            "ok": self.Status.CONNECTED,
            "degraded": self.Status.DEGRADED,
            "read_only": self.Status.READ_ONLY,
        }[compat.mode]
        now = timezone.now()
        self._save_state(
            status=status,
            status_reason=compat.summary,
            last_error_code="",
            version=hello.server_version,
            protocol=hello.protocol,
            scopes=list(hello.scopes),
            latency_ms=latency_ms if latency_ms is not None else self.latency_ms,
            last_connected_at=now,
            last_checked_at=now,
        )

    def mark_failed(self, error: GatewayError) -> None:
        if isinstance(error, AuthError):
            status = self.Status.AUTH_FAILED
        elif isinstance(error, ProtocolMismatchError):
            status = self.Status.INCOMPATIBLE
        else:
            status = self.Status.DISCONNECTED
        self._save_state(
            status=status,
            status_reason=error.operator_message,
            last_error_code=error.log_code,
            latency_ms=None,
            last_checked_at=timezone.now(),
        )

    def _save_state(self, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(self, name, value)
        # update() rather than save(): never overwrite a token or URL an admin just edited.
        Gateway.objects.filter(pk=self.pk).update(**fields, updated_at=timezone.now())


class Agent(models.Model):
    gateway = models.ForeignKey(Gateway, on_delete=models.CASCADE, related_name="agents")
    agent_id = models.CharField(max_length=200)
    name = models.CharField(max_length=200, blank=True)
    emoji = models.CharField(max_length=32, blank=True)
    model = models.CharField(max_length=200, blank=True)
    is_default = models.BooleanField(default=False)
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="children",
        help_text="The agent above this one in the org chart (none: directly under the gateway).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "dashboard_agent"
        ordering = ["gateway", "-is_default", "agent_id"]
        constraints = [models.UniqueConstraint(fields=["gateway", "agent_id"], name="uniq_agent_per_gateway")]

    def __str__(self) -> str:
        return f"{self.emoji} {self.name or self.agent_id}".strip()


class AgentSession(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        IDLE = "idle", "Idle"
        OFFLINE = "offline", "Offline"

    gateway = models.ForeignKey(Gateway, on_delete=models.CASCADE, related_name="sessions")
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions"
    )
    session_key = models.CharField(max_length=500)
    session_id = models.CharField(max_length=200, blank=True)
    agent_key = models.CharField("agent id", max_length=200, blank=True)
    kind = models.CharField(max_length=50, blank=True)
    title = models.CharField(max_length=500, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OFFLINE)
    has_active_run = models.BooleanField(default=False)
    last_run_id = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=200, blank=True)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    gw_created_at = models.DateTimeField(null=True, blank=True)
    gw_updated_at = models.DateTimeField(null=True, blank=True)
    last_interaction_at = models.DateTimeField(null=True, blank=True)
    run_started_at = models.DateTimeField(null=True, blank=True)
    run_ended_at = models.DateTimeField(null=True, blank=True)
    parent_session_key = models.CharField(max_length=500, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="subsessions"
    )
    synced_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "dashboard_agentsession"
        ordering = ["gateway", "session_key"]
        constraints = [
            models.UniqueConstraint(fields=["gateway", "session_key"], name="uniq_session_per_gateway")
        ]
        indexes = [
            models.Index(fields=["gateway", "status"], name="session_gw_status"),
            models.Index(fields=["agent", "status"], name="session_agent_status"),
        ]

    def __str__(self) -> str:
        return self.session_key


class ConfigHistory(models.Model):
    gateway = models.ForeignKey(Gateway, on_delete=models.CASCADE, related_name="config_history")
    hash = models.CharField(max_length=200)
    config = models.JSONField(help_text="The gateway config with every secret redacted.")
    changed_paths = models.JSONField(default=list, blank=True)
    diff = models.TextField(blank=True, help_text="Unified diff against the previous row.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "config_history"
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "config history"
        indexes = [
            models.Index(fields=["gateway", "-created_at"], name="config_gw_created"),
            models.Index(fields=["created_at"], name="config_created"),
        ]

    def __str__(self) -> str:
        return f"{self.gateway} @ {self.created_at:%Y-%m-%d %H:%M:%S} ({self.hash[-12:]})"


class ChatHistory(models.Model):
    gateway = models.ForeignKey(Gateway, on_delete=models.CASCADE, related_name="chat_history")
    session_key = models.CharField(max_length=500)
    message_id = models.CharField(max_length=200, help_text="The gateway's __openclaw.id.")
    role = models.CharField(max_length=32)
    text = models.TextField(blank=True)
    timestamp = models.DateTimeField()
    run_id = models.CharField(max_length=200, blank=True)
    usage = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "chat_history"
        ordering = ["timestamp", "id"]
        verbose_name_plural = "chat history"
        constraints = [
            models.UniqueConstraint(fields=["gateway", "session_key", "message_id"], name="uniq_chat_message")
        ]
        indexes = [
            models.Index(fields=["gateway", "session_key", "timestamp"], name="chat_session_time"),
            models.Index(fields=["timestamp"], name="chat_time"),
        ]

    def __str__(self) -> str:
        return f"{self.session_key} {self.role}: {self.text[:60]}"


class HealthSample(models.Model):
    """One BATCH-005 measurement; an hour of these draws the gateway's latency sparkline."""

    gateway = models.ForeignKey(Gateway, on_delete=models.CASCADE, related_name="health_samples")
    checked_at = models.DateTimeField(default=timezone.now)
    connected = models.BooleanField()
    latency_ms = models.FloatField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        db_table = "dashboard_healthsample"
        ordering = ["-checked_at"]
        indexes = [models.Index(fields=["gateway", "-checked_at"], name="health_gw_time")]

    def __str__(self) -> str:
        return f"{self.gateway} {self.checked_at:%H:%M:%S} {'up' if self.connected else 'down'}"
