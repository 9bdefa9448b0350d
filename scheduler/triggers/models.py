"""The records of schedule triggers: ``Schedule`` (a job's cron / interval / one-off trigger,
with its policies and the materialised next due time) and ``ScheduleFire`` (one row per trigger
and due time: fired, caught up, missed, skipped, buffered, failed; unique, so a due time fires
once whatever the number of tick processes).

Imported by :mod:`scheduler.models` (the app's models module), so the app label is ``scheduler``.
Time computation and validation live in :mod:`scheduler.triggers.schedule`.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import Q
from django.utils.timezone import now as _now


class ScheduleQuerySet(models.QuerySet["Schedule"]):
    def active(self) -> ScheduleQuerySet:
        """Enabled, not paused after failures, its job enabled."""
        return self.filter(enabled=True, paused_at__isnull=True, job__enabled=True)

    def due(self, now: Any) -> ScheduleQuerySet:
        return self.active().filter(fire_at__lte=now)

    def with_last_fire(self) -> ScheduleQuerySet:
        """Each trigger with its newest fire's due time, outcome and run (``last_due``,
        ``last_outcome``, ``last_run_pk``, ``last_run_status``), one query."""
        newest = ScheduleFire.objects.filter(trigger=models.OuterRef("pk")).order_by("-due_at")
        return self.annotate(
            last_due=models.Subquery(newest.values("due_at")[:1]),
            last_outcome=models.Subquery(newest.values("outcome")[:1]),
            last_run_pk=models.Subquery(newest.values("run_id")[:1]),
            last_run_status=models.Subquery(newest.values("run__status")[:1]),
        )


class Schedule(models.Model):
    """One schedule trigger of a job. ``kind``: cron (``cron``, 5 fields, in ``timezone``),
    interval (``every_seconds``, optionally ``at_time`` for whole days, local to ``timezone``),
    or at (``at_datetime``, once).

    ``next_due_at`` is the nominal next fire time; ``fire_at`` the time the tick fires it (plus
    the trigger's jitter). The tick claims a due time with a conditional UPDATE on
    ``next_due_at`` and writes its ``ScheduleFire`` (unique per trigger and due time)."""

    class Kind(models.TextChoices):
        CRON = "cron", "Cron"
        INTERVAL = "interval", "Interval"
        AT = "at", "Once (at a time)"

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"  # after failures (paused_reason), or by hand
        DISABLED = "disabled", "Disabled"
        DONE = "done", "Nothing due"

    class Overlap(models.TextChoices):
        SKIP = "skip", "Skip (while a run is unfinished)"
        BUFFER = "buffer", "Buffer one (start it when the run ends)"
        ALLOW = "allow", "Allow all"
        CANCEL = "cancel", "Cancel the running one"

    class CatchUp(models.TextChoices):
        ONCE = "once", "Run once (the latest missed)"
        SKIP = "skip", "Skip (record as missed)"

    job = models.ForeignKey("scheduler.Job", on_delete=models.CASCADE, related_name="schedules")
    name = models.SlugField(max_length=100, default="schedule", help_text="Unique within the job.")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.CRON)
    cron = models.CharField(max_length=200, blank=True, help_text='5 fields, e.g. "0 9 * * 1-5".')
    every_seconds = models.PositiveIntegerField(null=True, blank=True, help_text="The interval.")
    at_time = models.TimeField(
        null=True, blank=True, help_text="Interval of whole days: the local time of day (HH:MM)."
    )
    at_datetime = models.DateTimeField(null=True, blank=True, help_text="Once: when.")
    timezone = models.CharField(max_length=64, default="UTC", help_text="IANA name, e.g. Europe/Berlin.")
    enabled = models.BooleanField(default=True)
    overlap = models.CharField(max_length=10, choices=Overlap.choices, default=Overlap.SKIP)
    catch_up = models.CharField(max_length=10, choices=CatchUp.choices, default=CatchUp.ONCE)
    catch_up_window_seconds = models.PositiveIntegerField(
        default=3600, help_text="A missed fire older than this is recorded, never run."
    )
    jitter_seconds = models.PositiveIntegerField(
        default=0, help_text="Fire up to this many seconds after the due time (stable per due time)."
    )
    pause_after_failures = models.PositiveSmallIntegerField(
        default=0, help_text="Pause after this many consecutive failed runs (0: never)."
    )
    consecutive_failures = models.PositiveSmallIntegerField(default=0, editable=False)
    paused_at = models.DateTimeField(null=True, blank=True, editable=False)
    paused_reason = models.TextField(blank=True, editable=False)
    anchor_at = models.DateTimeField(
        default=_now, help_text="Intervals count from here (the first fire is one interval after)."
    )
    next_due_at = models.DateTimeField(null=True, blank=True, editable=False)
    fire_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_fire_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_run = models.ForeignKey(
        "scheduler.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ScheduleQuerySet.as_manager()

    class Meta:
        ordering = ["job__name", "name"]
        constraints = [models.UniqueConstraint(fields=["job", "name"], name="schedule_job_name")]
        indexes = [models.Index(fields=["fire_at"], name="schedule_fire_at", condition=Q(enabled=True))]

    def __str__(self) -> str:
        return self.label

    def save(self, *args: Any, **kwargs: Any) -> None:
        from . import schedule

        schedule.plan_next(self)  # next_due_at / fire_at from the definition as it is now
        super().save(*args, **kwargs)

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from . import schedule

        problems = schedule.validate_schedule(self)
        if problems:
            raise ValidationError(problems)

    @property
    def label(self) -> str:
        """``<job>:<name>``: the run's ``triggered_by``."""
        return f"{self.job.name}:{self.name}" if self.job_id else self.name

    @property
    def state(self) -> str:
        if not self.enabled:
            return self.State.DISABLED
        if self.paused_at is not None:
            return self.State.PAUSED
        if self.next_due_at is None:
            return self.State.DONE
        return self.State.ACTIVE


class ScheduleFire(models.Model):
    """One due time of one trigger, whatever happened to it."""

    class Outcome(models.TextChoices):
        FIRED = "fired", "Fired"
        CAUGHT_UP = "caught_up", "Caught up"
        MISSED = "missed", "Missed"
        SKIPPED = "skipped", "Skipped (overlap)"
        BUFFERED = "buffered", "Buffered"
        MANUAL = "manual", "Fired by hand"
        FAILED = "failed", "Not queued"

    trigger = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="fires")
    due_at = models.DateTimeField()
    fired_at = models.DateTimeField(default=_now)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    run = models.ForeignKey(
        "scheduler.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="schedule_fires"
    )
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["-due_at"]
        constraints = [models.UniqueConstraint(fields=["trigger", "due_at"], name="schedulefire_once")]
        indexes = [models.Index(fields=["trigger", "outcome"], name="schedulefire_outcome")]

    def __str__(self) -> str:
        return f"{self.trigger_id} {self.due_at:%Y-%m-%d %H:%M:%S} {self.outcome}"

    @property
    def late_seconds(self) -> float:
        return (self.fired_at - self.due_at).total_seconds()
