"""The engine's records: one ``BatchRun`` per batch execution and the ``Alert`` notices operators see.

The engine never points a foreign key at a domain app (ARCHITECTURE.md rule 7): a run records
what it ran for as a scope name, an id and the name it had then (``gateway``, 3, "prod").
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime
from typing import Any

from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from agentflow.lib.redis import get_redis, key

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
    # The same execution in the runs table (scheduler/batch_runs.py): kind "batch".
    # Null for a run skipped on its lock (nothing ran) and for rows older than migration 0008.
    # A ForeignKey, not one-to-one: a retried Run (a new attempt) runs the batch again.
    run = models.ForeignKey(
        "Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="batch_runs", editable=False
    )

    # The run's one-line summary as logged, set by the runner on the row it returns (not stored).
    summary = ""

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


class AlertRule(models.Model):
    """One alert condition with its editable settings (admin): one row per registered condition
    (scheduler/alert_rules.py), created with the condition's defaults after migrate.

    ``threshold`` is in the condition's unit (a percent, seconds, runs; see ``unit``), ``window``
    the period its figure is computed over, ``min_samples`` the fewest observations before a
    ratio counts (an error rate of 1 failure in 3 runs at night is not a signal), ``cooldown``
    how long after a resolve the same alert (rule and subject) stays quiet if it comes back."""

    class Level(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        ERROR = "error", "Error"
        CRITICAL = "critical", "Critical"

    # A registry key (scheduler.alert_rules), not a choice: a new condition needs no migration.
    key = models.SlugField(max_length=60, unique=True)
    enabled = models.BooleanField(default=True)
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.WARNING)
    threshold = models.FloatField(null=True, blank=True, help_text="In the condition's unit (see the list).")
    window_seconds = models.PositiveIntegerField(
        default=0, help_text="The period the figure is computed over (0: the state now)."
    )
    min_samples = models.PositiveIntegerField(
        default=0, help_text="The fewest observations in the window before a ratio counts (0: any)."
    )
    cooldown_seconds = models.PositiveIntegerField(
        default=300,
        help_text="After a resolve, a return within this long re-opens it without a notification.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


ALERT_BANNER_KEY = ("alerts", "banner")


def drop_alert_banner() -> None:
    """Alerts changed: every page's banners (scheduler.alerts.open_snapshot) read the database
    again. Dropped now and again after the commit (a page that re-read it in between saw the old
    rows)."""

    def drop() -> None:
        with contextlib.suppress(Exception):  # Redis down: the snapshot expires on its own (BANNER_TTL)
            get_redis().delete(key(*ALERT_BANNER_KEY))

    drop()
    transaction.on_commit(drop)


class AlertQuerySet(models.QuerySet["Alert"]):
    def update(self, **kwargs: Any) -> int:
        changed = super().update(**kwargs)
        if changed:
            drop_alert_banner()
        return changed

    def delete(self) -> tuple[int, dict[str, int]]:
        result = super().delete()
        drop_alert_banner()
        return result

    def open(self) -> AlertQuerySet:
        return self.filter(resolved_at__isnull=True)

    def by_severity(self) -> AlertQuerySet:
        """Critical first, then error, warning, info; newest first within a level."""
        return self.order_by(severity_rank(), "-created_at", "-id")


def severity_rank() -> models.Case:
    """0 for critical … 3 for info, as an ORDER BY expression."""
    return models.Case(
        *(models.When(level=v, then=models.Value(i)) for i, v in enumerate(Alert.SEVERITY)),
        default=models.Value(len(Alert.SEVERITY)),
    )


class Alert(models.Model):
    """Something an operator must see on the dashboard (e.g. a failed history cleanup).

    An alert of a rule (``rule`` set) is one episode of its condition for one ``subject`` (a
    job, a gateway, a provider key; "" for the whole install): raised when the condition first
    holds (``created_at``: first seen), touched on each evaluation that still sees it
    (``last_seen``, ``count``), resolved when it clears. At most one is open per rule and
    subject (the constraint). Alerts without a rule (a batch failure, a job's on-error) are
    resolved by an operator or by their source."""

    class Level(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        ERROR = "error", "Error"
        CRITICAL = "critical", "Critical"

    SEVERITY = ("critical", "error", "warning", "info")

    level = models.CharField(max_length=10, choices=Level.choices, default=Level.ERROR)
    source = models.CharField(max_length=50)
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now, help_text="First seen.")
    resolved_at = models.DateTimeField(null=True, blank=True)
    rule = models.CharField(
        max_length=60, blank=True, help_text="The rule's key ('' when no rule raised it)."
    )
    subject = models.CharField(max_length=200, blank=True, help_text="What it is about, within its rule.")
    last_seen = models.DateTimeField(null=True, blank=True)
    count = models.PositiveIntegerField(default=1, help_text="Evaluations that saw the condition.")
    value = models.FloatField(null=True, blank=True, help_text="The figure when last seen.")
    reopened = models.PositiveIntegerField(
        default=0, help_text="Times the condition came back within the cooldown (re-opened quietly)."
    )

    objects = AlertQuerySet.as_manager()

    class Meta:
        db_table = "dashboard_alert"  # moved from the dashboard app, table kept (scheduler 0002)
        ordering = ["-created_at"]
        indexes = [
            # Every page's banner and the evaluator read the open alerts (a few rows).
            models.Index(fields=["created_at"], name="alert_open", condition=Q(resolved_at__isnull=True)),
            # The cooldown: the latest resolved alert of a rule and subject.
            models.Index(fields=["rule", "subject", "resolved_at"], name="alert_rule_subject"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "subject"],
                condition=Q(resolved_at__isnull=True) & ~Q(rule=""),
                name="alert_one_open_per_rule_subject",
            )
        ]

    def __str__(self) -> str:
        return f"[{self.source}] {self.message[:80]}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        super().save(*args, **kwargs)
        drop_alert_banner()

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        result = super().delete(*args, **kwargs)
        drop_alert_banner()
        return result

    @property
    def seen_at(self) -> datetime:
        """Last seen (first seen for an alert seen once)."""
        return self.last_seen or self.created_at

    @property
    def banner_level(self) -> str:
        """The banner component's levels: critical shows as error (its title says critical)."""
        return "error" if self.level == self.Level.CRITICAL else self.level


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


# --- jobs, runs, attempts, pauses (the execution queue, scheduler/queue.py) -----------------------


class Priority(models.TextChoices):
    URGENT = "urgent", "Urgent"
    HIGH = "high", "High"
    NORMAL = "normal", "Normal"
    LOW = "low", "Low"


class Job(models.Model):
    """A job definition: what runs (an action key), with which parameters, and its policy.

    Fleet targets are parameters (``{"gateway": 3, "agent": "main"}``) validated by the action,
    never a foreign key into a domain app (ARCHITECTURE.md rule 7)."""

    class OnError(models.TextChoices):
        NOTIFY = "notify", "Notify (an alert)"
        RUN_JOB = "run_job", "Run another job"
        NOTHING = "nothing", "Nothing"

    name = models.SlugField(max_length=100, unique=True)
    # A registry key (scheduler.actions), not a choice: a new kind needs no migration.
    kind = models.CharField(max_length=60)
    params = models.JSONField(default=dict, blank=True)
    prompt_template = models.TextField(
        blank=True, help_text="Rendered with the run's input as {{ input }} (Django template syntax)."
    )
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    timeout_seconds = models.PositiveIntegerField(default=600)
    max_attempts = models.PositiveSmallIntegerField(default=3)
    on_error = models.CharField(max_length=10, choices=OnError.choices, default=OnError.NOTIFY)
    on_error_job = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    concurrency_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many of its runs at once (empty: no limit)."
    )
    enabled = models.BooleanField(default=True)
    tags = models.JSONField(default=list, blank=True)
    # A system job: one per registered batch (scheduler/batch_runs.py), created after migrate;
    # never deleted (its runs are the batch's history), its schedule is the batch's beat entry.
    system = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        if self.system:
            from django.core.exceptions import ValidationError

            raise ValidationError(
                f"job {self.name!r} is a system job (a batch): it cannot be deleted", code="system_job"
            )
        return super().delete(*args, **kwargs)

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from . import actions

        problems: dict[str, list[str]] = {}
        try:
            self.params = actions.validate_params(self.kind, self.params)
        except ValidationError as exc:
            problems["kind" if exc.code == "unknown_kind" else "params"] = exc.messages
        if not isinstance(self.tags, list) or not all(isinstance(t, str) for t in self.tags):
            problems["tags"] = ["tags must be a list of strings"]
        if self.max_attempts < 1:
            problems["max_attempts"] = ["at least 1"]
        if self.system and self.kind != "batch":
            problems["kind"] = ["a system job runs its batch: its kind stays batch"]
        if self.on_error == self.OnError.RUN_JOB and self.on_error_job_id is None:
            problems["on_error_job"] = ["choose the job to run on error"]
        if self.on_error_job_id is not None and self.on_error_job_id == self.pk:
            problems["on_error_job"] = ["a job cannot run itself on error"]
        if problems:
            raise ValidationError(problems)


class RunQuerySet(models.QuerySet["Run"]):
    def ready(self) -> RunQuerySet:
        """Waiting to start now (the partial index ``run_ready``)."""
        return self.filter(status=Run.Status.QUEUED)

    def in_flight(self) -> RunQuerySet:
        return self.filter(status=Run.Status.RUNNING)

    def waiting(self) -> RunQuerySet:
        return self.filter(status__in=Run.WAITING)

    def final(self) -> RunQuerySet:
        return self.filter(status__in=Run.FINAL)

    def counts(self) -> dict[str, dict[str, int]]:
        """{priority: {status: n}} over the whole table (one grouped query)."""
        out: dict[str, dict[str, int]] = {}
        for row in self.values("priority", "status").annotate(n=models.Count("id")).order_by():
            out.setdefault(row["priority"], {})[row["status"]] = row["n"]
        return out


class Run(models.Model):
    """One execution of a job (or an ad-hoc action), a row from the moment it is queued.

    queued → running → succeeded | failed | cancelled | aborted | lost, with scheduled (waits for
    ``run_after``), blocked (its provider is blocked) and parked (held by a pause) as waiting
    states. The transitions live in :mod:`scheduler.queue` and :mod:`scheduler.controls`."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SCHEDULED = "scheduled", "Scheduled"
        BLOCKED = "blocked", "Blocked"
        PARKED = "parked", "Parked"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        ABORTED = "aborted", "Aborted"
        LOST = "lost", "Lost"

    class Trigger(models.TextChoices):
        USER = "user", "User"
        API_TOKEN = "api_token", "API token"
        SCHEDULE = "schedule", "Schedule"
        WEBHOOK = "webhook", "Webhook"
        FILE = "file", "File"
        SYSTEM = "system", "System"

    WAITING = ("queued", "scheduled", "blocked", "parked")
    FINAL = ("succeeded", "failed", "cancelled", "aborted", "lost")
    NOT_FINAL = (*WAITING, "running")

    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    kind = models.CharField(max_length=60)
    params = models.JSONField(default=dict, blank=True)
    input = models.JSONField(null=True, blank=True)
    prompt = models.TextField(blank=True)
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    run_after = models.DateTimeField(null=True, blank=True)
    dedupe_key = models.CharField(max_length=200, blank=True)
    trigger = models.CharField(max_length=10, choices=Trigger.choices, default=Trigger.SYSTEM)
    triggered_by = models.CharField(max_length=200, blank=True)
    # Concurrency keys, copied from params when queued (limits are checked on these strings).
    gateway = models.CharField(max_length=100, blank=True)
    agent = models.CharField(max_length=100, blank=True)
    provider = models.CharField(max_length=100, blank=True)
    job_name = models.CharField(max_length=100, blank=True, help_text="The job's name when queued.")
    result = models.TextField(blank=True)
    result_truncated = models.BooleanField(default=False)
    usage = models.JSONField(default=dict, blank=True)
    error_class = models.CharField(max_length=30, blank=True)
    error = models.TextField(blank=True)
    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="Attempts counted against max_attempts (rate-limit waits are not)."
    )
    max_attempts = models.PositiveSmallIntegerField(default=3)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    timeout_seconds = models.PositiveIntegerField(default=600)
    stop = models.ForeignKey(
        "EmergencyStop",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="held_runs",
        help_text="The emergency stop that parked or aborted it, until an operator requeues or cancels it.",
    )

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            # The claim: the oldest queued run of a priority (a few rows of the table, always).
            models.Index(fields=["priority", "id"], name="run_ready", condition=Q(status="queued")),
            models.Index(fields=["run_after"], name="run_scheduled", condition=Q(status="scheduled")),
            models.Index(fields=["started_at"], name="run_running", condition=Q(status="running")),
            models.Index(fields=["status", "priority"], name="run_status"),
            models.Index(fields=["job", "-id"], name="run_job"),
            # The ops API's windows (scheduler/stats.py): runs finished / started in the last hour.
            # Covering (priority, status): SQLite's planner otherwise counts finished runs per
            # priority x state by scanning run_state_queued in its order (75 ms at 100,000 rows).
            models.Index(fields=["finished_at", "priority", "status"], name="run_finished_cover"),
            models.Index(fields=["started_at"], name="run_started"),
            # The queue page: counts per priority x state with the arrivals of the last 10
            # minutes from the index alone.
            models.Index(fields=["status", "priority", "queued_at"], name="run_state_queued"),
            # The "an unfinished run holds this dedupe key?" lookup of enqueue (webhook deliveries,
            # schedule fires, result actions, probes). SQLite cannot use the partial unique index
            # below for it (it proves a partial index's WHERE only against literals, and the ORM
            # binds parameters): without this it scanned every queued run.
            models.Index(fields=["dedupe_key"], name="run_dedupe_key"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["dedupe_key"],
                condition=Q(status__in=("queued", "scheduled", "blocked", "parked", "running"))
                & ~Q(dedupe_key=""),
                name="run_dedupe_not_final",
            )
        ]

    def __str__(self) -> str:
        return f"run {self.pk} {self.job_name or self.kind} {self.status}"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL

    @property
    def wait_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.started_at - self.queued_at).total_seconds()

    @property
    def execution_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class Attempt(models.Model):
    """One try of a run. Its uuid is the gateway's idempotency key, hence the gateway's runId."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        ABORTED = "aborted", "Aborted"
        LOST = "lost", "Lost"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="attempt_set")
    number = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    error_class = models.CharField(max_length=30, blank=True)
    error = models.TextField(blank=True)
    session_key = models.CharField(max_length=300, blank=True)
    external_id = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid of the worker that started it.")
    # True while a worker process is inside the action's start(): if that worker dies, the
    # attempt is lost. False once start() returned Started (the work goes on elsewhere).
    in_worker = models.BooleanField(default=True)

    class Meta:
        ordering = ["run", "number"]
        indexes = [
            models.Index(fields=["worker"], name="attempt_in_worker", condition=Q(status="running")),
        ]
        constraints = [models.UniqueConstraint(fields=["run", "number"], name="attempt_run_number")]

    def __str__(self) -> str:
        return f"attempt {self.number} of run {self.run_id} {self.status}"


class QueuePause(models.Model):
    """A pause is a row: while it exists, the runs it covers are parked and never claimed."""

    class Scope(models.TextChoices):
        ALL = "all", "Everything"
        PRIORITY = "priority", "A priority"
        GATEWAY = "gateway", "A gateway"
        AGENT = "agent", "An agent"
        JOB = "job", "A job"

    scope = models.CharField(max_length=10, choices=Scope.choices)
    value = models.CharField(max_length=100, blank=True)
    who = models.CharField(max_length=200)
    reason = models.TextField(blank=True)
    since = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["since"]
        constraints = [models.UniqueConstraint(fields=["scope", "value"], name="queuepause_scope_value")]

    def __str__(self) -> str:
        return "paused: everything" if self.scope == "all" else f"paused: {self.scope} {self.value}"


class ProviderBlockQuerySet(models.QuerySet["ProviderBlock"]):
    def open(self) -> ProviderBlockQuerySet:
        return self.filter(ended_at__isnull=True)

    def of(self, gateway: str, agent: str, provider: str) -> ProviderBlockQuerySet:
        return self.filter(gateway=gateway, agent=agent, provider=provider)


class ProviderBlock(models.Model):
    """One episode of a blocked provider (gateway × agent × provider), from the first
    ``provider_auth`` failure to the unblock. The Redis flag is the hot path the workers read;
    this row is the record: why, how many runs it held, each probe, the GitHub issue, the end.
    Gateway, agent and provider are strings (no foreign key into fleet, ARCHITECTURE.md rule 7)."""

    gateway = models.CharField(max_length=100)
    agent = models.CharField(max_length=100)
    provider = models.CharField(max_length=100, blank=True)
    reason = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    ended_by = models.CharField(max_length=200, blank=True, help_text="Who unblocked it (a probe: system).")
    probes = models.PositiveIntegerField(default=0)
    last_probe_at = models.DateTimeField(null=True, blank=True)
    last_probe_result = models.TextField(blank=True)
    github_issue_url = models.URLField(max_length=300, blank=True)
    github_issue_state = models.CharField(max_length=10, blank=True, help_text="open / closed, as last read.")
    notification_error = models.TextField(blank=True, help_text="The last notification failure, if any.")
    runs_blocked = models.PositiveIntegerField(default=0)
    runs_requeued = models.PositiveIntegerField(default=0)

    objects = ProviderBlockQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["gateway", "agent", "provider"],
                condition=Q(ended_at__isnull=True),
                name="providerblock_one_open",
            )
        ]

    def __str__(self) -> str:
        state = "open" if self.ended_at is None else "ended"
        return f"provider {self.provider or '?'} of agent {self.agent} (gateway {self.gateway}) {state}"

    @property
    def is_open(self) -> bool:
        return self.ended_at is None


class EmergencyStopQuerySet(models.QuerySet["EmergencyStop"]):
    def engaged(self) -> EmergencyStopQuerySet:
        return self.filter(released_at__isnull=True)

    def released(self) -> EmergencyStopQuerySet:
        return self.filter(released_at__isnull=False)


class EmergencyStop(models.Model):
    """An emergency stop is a row (scheduler/stops.py): while it is engaged nothing it covers starts,
    what it covered was aborted or parked, and the gateways' own cron stays off. Mirrored to Redis
    for the workers' check before every start; the database decides when Redis cannot answer.

    ``parked_ids`` / ``aborted_ids`` / ``saved_state`` are the state saved when it engaged (which
    runs it held, what each gateway's cron was); ``steps`` the engage's steps with their timings."""

    class Scope(models.TextChoices):
        GLOBAL = "global", "Everything"
        GATEWAY = "gateway", "A gateway"
        AGENT = "agent", "An agent"
        PRIORITY = "priority", "A priority queue"
        PROVIDER = "provider", "A provider"

    scope = models.CharField(max_length=10, choices=Scope.choices, default=Scope.GLOBAL)
    value = models.CharField(max_length=100, blank=True)
    reason = models.TextField()
    who = models.CharField(max_length=200)
    automatic = models.CharField(
        max_length=60, blank=True, help_text="The condition that engaged it (blank: a person)."
    )
    requested_at = models.DateTimeField(default=timezone.now, help_text="When the engage call began.")
    engaged_at = models.DateTimeField(
        default=timezone.now, help_text="From this instant no worker sends anything it covers."
    )
    completed_at = models.DateTimeField(null=True, blank=True, help_text="Every engage step done.")
    released_at = models.DateTimeField(null=True, blank=True)
    released_by = models.CharField(max_length=200, blank=True)
    release_reason = models.TextField(blank=True)
    parked_ids = models.JSONField(default=list, blank=True)
    aborted_ids = models.JSONField(default=list, blank=True)
    saved_state = models.JSONField(default=dict, blank=True)
    steps = models.JSONField(default=list, blank=True)

    objects = EmergencyStopQuerySet.as_manager()

    class Meta:
        ordering = ["-engaged_at"]
        indexes = [models.Index(fields=["released_at"], name="stop_engaged")]

    def __str__(self) -> str:
        state = "engaged" if self.released_at is None else "released"
        return f"emergency stop {self.pk} ({self.scope_label}) {state}"

    @property
    def is_engaged(self) -> bool:
        return self.released_at is None

    @property
    def scope_label(self) -> str:
        if self.scope == self.Scope.GLOBAL:
            return "everything"
        return f"{self.get_scope_display().split(' ', 1)[-1].lower()} {self.value}"

    @property
    def engage_ms(self) -> float | None:
        if self.completed_at is None:
            return None
        return (self.completed_at - self.requested_at).total_seconds() * 1000


class StopCondition(models.Model):
    """An automatic condition (scheduler/conditions.py): ``threshold`` hits within ``window_seconds``
    (or one hit whose measure passes ``threshold``, for a rate-limit wait) either raise an alert
    or engage an emergency stop of ``scope``. ``value`` "*" means the value the hits name (the
    failing provider). An automatic stop stays engaged until a person releases it."""

    class Action(models.TextChoices):
        ALERT = "alert", "Alert only"
        STOP = "stop", "Engage an emergency stop"

    key = models.SlugField(max_length=40, unique=True)
    label = models.CharField(max_length=200)
    pattern = models.CharField(
        max_length=300,
        blank=True,
        help_text="A regular expression the failure's text must match (blank: any).",
    )
    threshold = models.FloatField(
        default=1, help_text="Hits within the window (for the rate-limit wait: seconds waited)."
    )
    window_seconds = models.PositiveIntegerField(default=300)
    action = models.CharField(max_length=10, choices=Action.choices, default=Action.ALERT)
    scope = models.CharField(
        max_length=10, choices=EmergencyStop.Scope.choices, default=EmergencyStop.Scope.GLOBAL
    )
    value = models.CharField(max_length=100, blank=True, help_text='"*": the value the hits name.')
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return f"condition {self.key} ({self.get_action_display().lower()})"


class ConditionHit(models.Model):
    """One occurrence of a condition (a row, not a Redis counter: Redis failing is a condition)."""

    condition = models.ForeignKey(StopCondition, on_delete=models.CASCADE, related_name="hits")
    at = models.DateTimeField(default=timezone.now)
    subject = models.CharField(max_length=100, blank=True, help_text="What it names (a provider).")
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["condition", "at"], name="conditionhit_window")]

    def __str__(self) -> str:
        return f"{self.condition_id} hit at {self.at:%Y-%m-%d %H:%M:%S}" + (
            f" ({self.subject})" if self.subject else ""
        )


# --- notifications (issue 10 §5): their own module, part of this app -----------------------------

# and result actions (issue 11 §4)
from .notifications.models import Channel, ChannelThread, Delivery, Notification  # noqa: E402, F401
from .result_models import ResultAction, ResultDelivery  # noqa: E402, F401

# --- schedule triggers (issue 11 §1): scheduler/triggers/ ------------------------------------------
from .triggers.models import Schedule, ScheduleFire  # noqa: E402, F401

# --- file watches (issue 11 §3): their own module, part of this app ------------------------------
from .triggers.watch_models import Watch, WatchEvent, WatchFile  # noqa: E402, F401
