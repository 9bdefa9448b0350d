"""The engine's records: one ``BatchRun`` per batch execution and the ``Alert`` notices operators see.

The engine never points a foreign key at a domain app (ARCHITECTURE.md rule 7): a run records
what it ran for as a scope name, an id and the name it had then (``gateway``, 3, "prod").
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from . import registry


def count_words(name: str, value: object) -> str:
    """One count as words: ("sessions_updated", 3) → "3 sessions updated", ("panels", 1) → "1 panel",
    ("connected", False) → "connected: no", ("latency_ms", 2.2704) → "latency 2.27 ms"."""
    words = str(name).replace("_", " ").strip()
    if isinstance(value, bool):
        return f"{words}: {'yes' if value else 'no'}"
    if isinstance(value, int | float):
        number = f"{value:,}" if isinstance(value, int) else f"{value:,.2f}".rstrip("0").rstrip(".")
        if words.endswith(" ms"):
            return f"{words[:-3]} {number} ms"
        if value == 1 and words.split(" ")[0].endswith("s") and not words.split(" ")[0].endswith("ss"):
            first, _, rest = words.partition(" ")
            words = f"{first[:-1]} {rest}".strip()
        return f"{number} {words}"
    if isinstance(value, list | tuple):
        shown = ", ".join(str(v) for v in value[:5]) + (
            f" and {len(value) - 5} more" if len(value) > 5 else ""
        )
        return f"{words}: {shown or 'none'}"
    if value is None or value == "":
        return f"{words}: none"
    return f"{words}: {value}"


class BatchRunQuerySet(models.QuerySet["BatchRun"]):
    def latest_per_batch(self) -> list[BatchRun]:
        """The most recent run of each registered batch (one index lookup per batch)."""
        runs: list[BatchRun] = []
        for batch in registry.batch_ids():
            run = self.filter(batch=batch).order_by("-started_at").first()
            if run is not None:
                runs.append(run)
        return runs

    def for_target(self, scope: str, target_id: int) -> BatchRunQuerySet:
        return self.filter(scope=scope, target_id=target_id)

    def running(self) -> BatchRunQuerySet:
        return self.filter(status=BatchRun.Status.RUNNING)


class BatchRun(models.Model):
    """One execution, recorded when it starts (``running``, with a heartbeat the runner's lock
    thread renews) and updated when it ends; a run whose worker died is marked ``lost``."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        OK = "ok", "OK"
        ERROR = "error", "Error"
        SKIPPED = "skipped", "Skipped"
        LOST = "lost", "Lost"

    # A registry key (e.g. "BATCH-001"), not a choice: a new batch kind needs no migration.
    batch = models.CharField(max_length=50)
    scope = models.CharField(
        max_length=40, blank=True, help_text="What the batch ran for: '' (global) or a scope name."
    )
    target_id = models.BigIntegerField(null=True, blank=True)
    target_name = models.CharField(max_length=200, blank=True, help_text="The target's name when it ran.")
    started_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.FloatField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices)
    counts = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="Last sign of life of the worker running it."
    )
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid of the process that ran it.")
    # The token of the run's lock in Redis: a running row whose lock holds another token (or
    # none) has no live worker behind it.
    lock_token = models.CharField(max_length=32, blank=True, editable=False)

    objects = BatchRunQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["batch", "-started_at"], name="batchrun_batch_time"),
            models.Index(fields=["started_at"], name="batchrun_time"),
            models.Index(fields=["scope", "target_id"], name="batchrun_target"),
            # The lost-run detector reads the few running rows on every batch run.
            models.Index(fields=["heartbeat_at"], name="batchrun_running", condition=Q(status="running")),
        ]

    def __str__(self) -> str:
        return f"{self.batch} {self.started_at:%Y-%m-%d %H:%M:%S} {self.status}"

    @property
    def lock_scope(self) -> object:
        """The scope of its lock (scheduler.runner): the target's id, or "global"."""
        return "global" if self.target_id is None else self.target_id

    @property
    def counts_text(self) -> str:
        """The counts in words: {'panels': 0, 'connected': True} → "0 panels · connected: yes"."""
        return " · ".join(count_words(name, value) for name, value in (self.counts or {}).items())

    @property
    def outcome_key(self) -> tuple:
        """Runs with the same key did the same thing (the batch page shows them as one row)."""
        return (self.batch, self.scope, self.target_id, self.status, self.counts_text, self.error)

    @property
    def batch_label(self) -> str:
        spec = registry.find(self.batch)
        return spec.label if spec else self.batch


class AlertQuerySet(models.QuerySet["Alert"]):
    def open(self) -> AlertQuerySet:
        return self.filter(resolved_at__isnull=True)


class Alert(models.Model):
    """Something an operator must see on the dashboard (e.g. a failed history cleanup)."""

    class Level(models.TextChoices):
        WARNING = "warning", "Warning"
        ERROR = "error", "Error"

    level = models.CharField(max_length=10, choices=Level.choices, default=Level.ERROR)
    source = models.CharField(max_length=50)
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    objects = AlertQuerySet.as_manager()

    class Meta:
        db_table = "dashboard_alert"  # moved from the dashboard app, table kept (scheduler 0002)
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"[{self.source}] {self.message[:80]}"


class AuditEntryQuerySet(models.QuerySet["AuditEntry"]):
    def for_target(self, target_type: str, target_id: str) -> AuditEntryQuerySet:
        return self.filter(target_type=target_type, target_id=str(target_id))

    def refused(self) -> AuditEntryQuerySet:
        return self.filter(result=AuditEntry.Result.REFUSED)


class AuditEntry(models.Model):
    """One control action: who did what to which target, why, from where, and how it ended.

    Written by :mod:`scheduler.audit` for every control, allowed or refused; never edited. The
    target is a type, an id and the label it had then (no foreign key up into a domain app).
    """

    class Result(models.TextChoices):
        OK = "ok", "OK"
        REFUSED = "refused", "Refused"
        ERROR = "error", "Error"

    created_at = models.DateTimeField(default=timezone.now)
    actor = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_entries"
    )
    actor_label = models.CharField(
        max_length=200, help_text="Who, as shown: a username, \"api token 'ops' (alice)\", 'system'."
    )
    action = models.CharField(max_length=60, help_text="What, as noun.verb: chat.send, chat.abort.")
    target_type = models.CharField(max_length=40, blank=True)
    target_id = models.CharField(max_length=255, blank=True)
    target_label = models.CharField(max_length=300, blank=True)
    reason = models.TextField(blank=True, help_text="Why, in the actor's words (optional).")
    result = models.CharField(max_length=10, choices=Result.choices)
    message = models.TextField(blank=True, help_text="The refusal or error, as the actor was told.")
    source = models.CharField(max_length=60, blank=True, help_text="web, api, websocket, admin, command…")
    ip_address = models.GenericIPAddressField(null=True, blank=True)

    objects = AuditEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["-created_at"], name="audit_time"),
            models.Index(fields=["action", "-created_at"], name="audit_action_time"),
            models.Index(fields=["target_type", "target_id"], name="audit_target"),
        ]
        # The roles' permissions (scheduler.roles): created explicitly by migration 0003.
        permissions = [
            ("operate", "Operate: send chats, abort runs, run batches now"),
            ("administer", "Administer: audit log, API tokens, emergency stop"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action} {self.result}"
