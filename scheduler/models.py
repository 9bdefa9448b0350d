from django.db import models
from django.utils import timezone


class Batch(models.TextChoices):
    SESSION_POLLING = "BATCH-001", "Session polling"
    CONFIG_POLLING = "BATCH-002", "Config polling"
    CHAT_POLLING = "BATCH-003", "Chat polling"
    HISTORY_CLEANUP = "BATCH-004", "History cleanup"
    HEALTH_CHECK = "BATCH-005", "Health check"


class BatchRunQuerySet(models.QuerySet["BatchRun"]):
    def latest_per_batch(self) -> list["BatchRun"]:
        """The most recent run of each batch (one small query per batch: five index lookups)."""
        runs = []
        for batch in Batch.values:
            run = self.filter(batch=batch).order_by("-started_at").first()
            if run is not None:
                runs.append(run)
        return runs


class BatchRun(models.Model):
    class Status(models.TextChoices):
        OK = "ok", "OK"
        ERROR = "error", "Error"
        SKIPPED = "skipped", "Skipped"

    batch = models.CharField(max_length=10, choices=Batch.choices)
    gateway = models.ForeignKey(
        "dashboard.Gateway", null=True, blank=True, on_delete=models.CASCADE, related_name="batch_runs"
    )
    started_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.FloatField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices)
    counts = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    objects = BatchRunQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["batch", "-started_at"], name="batchrun_batch_time"),
            models.Index(fields=["started_at"], name="batchrun_time"),
        ]

    def __str__(self) -> str:
        return f"{self.batch} {self.started_at:%Y-%m-%d %H:%M:%S} {self.status}"
