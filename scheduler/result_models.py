"""What happens with a run's result (issue 11 §4): a job's ``ResultAction`` rows, and one
``ResultDelivery`` per finished run × action (its attempts, retries and answers).

Imported by :mod:`scheduler.models` (the app's models module), so the app label is ``scheduler``.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone


class ResultAction(models.Model):
    """On success or on failure of a job's run: deliver the reply to a notification channel, post
    it as a comment on the GitHub pull request or issue that triggered the run, or run another
    job with the reply as its input."""

    class When(models.TextChoices):
        SUCCESS = "success", "On success"
        FAILURE = "failure", "On failure"

    class Kind(models.TextChoices):
        CHANNEL = "channel", "Deliver to a notification channel"
        GITHUB_COMMENT = "github_comment", "Comment on the GitHub PR or issue"
        RUN_JOB = "run_job", "Run another job"

    job = models.ForeignKey("scheduler.Job", on_delete=models.CASCADE, related_name="result_actions")
    when = models.CharField(max_length=10, choices=When.choices, default=When.SUCCESS)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    channel = models.ForeignKey(
        "scheduler.Channel",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="result_actions",
        help_text="Deliver to a channel: which one.",
    )
    target_job = models.ForeignKey(
        "scheduler.Job",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Run another job: which one (its input is the reply).",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["job", "when", "id"]

    def __str__(self) -> str:
        return f"{self.job} {self.get_when_display().lower()}: {self.target_label}"

    @property
    def target_label(self) -> str:
        if self.kind == self.Kind.CHANNEL:
            return f"channel {self.channel.name}" if self.channel else "a channel"
        if self.kind == self.Kind.RUN_JOB:
            return f"run job {self.target_job.name}" if self.target_job else "run a job"
        return "comment on the GitHub PR or issue"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.kind == self.Kind.CHANNEL and self.channel_id is None:
            errors["channel"] = "Choose the channel to deliver to."
        if self.kind == self.Kind.RUN_JOB:
            if self.target_job_id is None:
                errors["target_job"] = "Choose the job to run."
            elif self.target_job_id == self.job_id:
                errors["target_job"] = "A job cannot run itself with its own result."
        if errors:
            raise ValidationError(errors)


class ResultDeliveryQuerySet(models.QuerySet["ResultDelivery"]):
    def due(self, now: datetime) -> ResultDeliveryQuerySet:
        return self.filter(status=ResultDelivery.Status.PENDING, next_attempt_at__lte=now)


class ResultDelivery(models.Model):
    """One result action for one finished run: pending until done, retried with backoff (the
    claim is a conditional UPDATE of ``next_attempt_at``, as for notification deliveries), failed
    after AGENTFLOW_RESULT_MAX_ATTEMPTS or an answer a retry cannot help. A channel delivery
    hands over to the notification machinery (``notification_delivery``: its retries and log)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    run = models.ForeignKey("scheduler.Run", on_delete=models.CASCADE, related_name="result_deliveries")
    action = models.ForeignKey(
        ResultAction, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    kind = models.CharField(max_length=20, choices=ResultAction.Kind.choices)
    when = models.CharField(max_length=10, choices=ResultAction.When.choices)
    target = models.CharField(max_length=300, blank=True, help_text="Where it went, as shown.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    note = models.TextField(blank=True)
    error = models.TextField(blank=True)
    history = models.JSONField(default=list, blank=True)
    notification_delivery = models.ForeignKey(
        "scheduler.Delivery", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_run = models.ForeignKey(
        "scheduler.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    objects = ResultDeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["created_at"]
        verbose_name_plural = "result deliveries"
        indexes = [
            models.Index(fields=["next_attempt_at"], name="resultdelivery_due", condition=Q(status="pending"))
        ]
        constraints = [
            models.UniqueConstraint(fields=["run", "action"], name="resultdelivery_one_per_action")
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} {self.get_kind_display().lower()}: {self.status}"

    @property
    def shown_status(self) -> str:
        """A channel delivery's status is its notification delivery's."""
        if self.notification_delivery is not None:
            return self.notification_delivery.status
        return self.status
