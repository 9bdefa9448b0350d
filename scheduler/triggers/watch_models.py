"""The file watch's rows (issue 11 §3), part of the ``scheduler`` app (imported at the end of
scheduler/models.py): ``Watch`` (what to watch and which job to start), ``WatchFile`` (the files a
watch has handled, path + mtime + size: a restart does not refire for them) and ``WatchEvent``
(the recent events a watch saw, with the run each started; the newest
AGENTFLOW_WATCH_EVENTS_KEPT per watch are kept). The logic is in scheduler/triggers/watch.py."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone

EVENTS = ("created", "modified", "deleted")


class Watch(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", "Not started yet"
        WATCHING = "watching", "Watching"
        MISSING = "missing", "Directory missing"
        UNREADABLE = "unreadable", "Directory unreadable"
        OUTSIDE_ROOTS = "outside_roots", "Outside the watch roots"
        DISABLED = "disabled", "Disabled"

    PROBLEMS = ("missing", "unreadable", "outside_roots")

    name = models.SlugField(max_length=100, unique=True)
    directory = models.CharField(
        max_length=500, help_text="An absolute directory under AGENTFLOW_WATCH_ROOTS (~ is expanded)."
    )
    patterns = models.JSONField(
        default=list,
        blank=True,
        help_text='Glob patterns relative to the directory, e.g. ["*.pdf", "**/*.csv"]; empty: every file.',
    )
    events = models.JSONField(default=list, help_text='Any of "created", "modified", "deleted".')
    recursive = models.BooleanField(default=False, help_text="Also watch the directories below it.")
    debounce_ms = models.PositiveIntegerField(
        default=1000, help_text="Events of one watch within this quiet time make one run."
    )
    job = models.ForeignKey("scheduler.Job", on_delete=models.PROTECT, related_name="watches")
    move_to = models.CharField(
        max_length=500,
        blank=True,
        help_text="After a run succeeds, move its files into this folder (under the watch roots).",
    )
    enabled = models.BooleanField(default=True)
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    state_detail = models.CharField(max_length=500, blank=True)
    state_changed_at = models.DateTimeField(null=True, blank=True)
    baseline_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the files already there were recorded (they do not fire); reset when the "
        "directory, patterns or recursion change.",
    )
    last_event_at = models.DateTimeField(null=True, blank=True)
    runs_made = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        # What the watch matches changed: the files there now are its new baseline (they do not fire).
        if self.pk is not None:
            old = Watch.objects.filter(pk=self.pk).values("directory", "patterns", "recursive").first()
            if old and (old["directory"], old["patterns"], old["recursive"]) != (
                self.directory,
                self.patterns,
                self.recursive,
            ):
                self.baseline_at = None
                WatchFile.objects.filter(watch_id=self.pk).delete()
        super().save(*args, **kwargs)

    @property
    def trigger_label(self) -> str:
        """``Run.triggered_by`` of the runs it makes."""
        return f"watch:{self.name}"

    @property
    def has_problem(self) -> bool:
        return self.state in self.PROBLEMS

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from . import watch

        problems = watch.validate(self)
        if problems:
            raise ValidationError(problems)


class WatchFile(models.Model):
    """A file the watch has handled, as it was then. One row per (watch, path); removed when the
    file is deleted or moved away, so the table mirrors the matching files (bounded by them)."""

    watch = models.ForeignKey(Watch, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=1000)
    mtime_ns = models.BigIntegerField()
    size = models.BigIntegerField()
    seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["watch", "path"], name="watchfile_unique")]

    def __str__(self) -> str:
        return self.path


class WatchEvent(models.Model):
    class Event(models.TextChoices):
        CREATED = "created", "Created"
        MODIFIED = "modified", "Modified"
        DELETED = "deleted", "Deleted"

    watch = models.ForeignKey(Watch, on_delete=models.CASCADE, related_name="watch_events")
    at = models.DateTimeField(default=timezone.now)
    event = models.CharField(max_length=10, choices=Event.choices)
    path = models.CharField(max_length=1000)
    run = models.ForeignKey(
        "scheduler.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["watch", "-id"], name="watchevent_recent")]

    def __str__(self) -> str:
        return f"{self.event} {self.path}"
