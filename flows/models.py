"""Flows and their traces. Foreign keys point down to the engine's runs (ARCHITECTURE.md rule 7)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from scheduler.models import Run


class Flow(models.Model):
    """A flow definition stored in the database (the YAML text), so a job can name it."""

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    source = models.TextField(help_text="The flow's YAML (flows/README.md).")
    path = models.CharField(max_length=500, blank=True, help_text="The file it was loaded from, if any.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class FlowRunQuerySet(models.QuerySet["FlowRun"]):
    def waiting_on(self, run_id: int) -> FlowRunQuerySet:
        return self.filter(waiting_run_id=run_id, status=FlowRun.Status.WAITING)


class FlowRun(models.Model):
    """The state of one flow execution, saved after every step: a worker that dies loses at most
    the step it was in, which the next attempt runs again (flows/engine.py)."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        WAITING = "waiting", "Waiting for a step's run"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        ABORTED = "aborted", "Aborted"
        CANCELLED = "cancelled", "Cancelled"

    FINAL = ("succeeded", "failed", "aborted", "cancelled")

    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="flow_run")
    flow_name = models.CharField(max_length=100)
    source = models.TextField(help_text="The YAML the run started with (later edits do not change it).")
    preset = models.CharField(max_length=20, default="dev")
    tracer = models.CharField(max_length=20, default="none")
    tracer_args = models.JSONField(default=dict, blank=True)
    write = models.BooleanField(default=False, help_text="Patches may change files on disk.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    context = models.JSONField(default=dict)
    position = models.CharField(max_length=100, blank=True, help_text="The step it is in (or goes to next).")
    step_attempt = models.PositiveSmallIntegerField(default=0)
    step_started_ns = models.BigIntegerField(default=0)
    visits = models.JSONField(default=dict, blank=True)
    steps_done = models.PositiveIntegerField(default=0)
    waiting_run = models.ForeignKey(
        Run,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The agent or command run the current step waits for.",
    )
    trace_id = models.CharField(max_length=32)
    root_span_id = models.CharField(max_length=16)
    step_span_id = models.CharField(max_length=16, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    started_ns = models.BigIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = FlowRunQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["waiting_run"], name="flowrun_waiting")]

    def __str__(self) -> str:
        return f"{self.flow_name} (run {self.run_id})"


class Span(models.Model):
    """One span of a trace (the waterfall page reads these; a chosen tracer gets a copy)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="spans")
    trace_id = models.CharField(max_length=32)
    span_id = models.CharField(max_length=16)
    parent_span_id = models.CharField(max_length=16, blank=True)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, default="step")
    status = models.CharField(max_length=10, default="ok")
    status_message = models.TextField(blank=True)
    start_ns = models.BigIntegerField()
    end_ns = models.BigIntegerField()
    attributes = models.JSONField(default=dict, blank=True)
    events = models.JSONField(default=list, blank=True)
    child_run = models.ForeignKey(
        Run,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The agent or command run this span waited for.",
    )

    class Meta:
        ordering = ["start_ns", "id"]
        indexes = [models.Index(fields=["run", "start_ns"], name="span_run_start")]

    def __str__(self) -> str:
        return self.name

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6
