from __future__ import annotations

from django.db import models


class DisabledEntry(models.Model):
    """The admin's switch: an allowlist entry named here is refused (entries are never added here)."""

    name = models.CharField(max_length=100, unique=True)
    disabled_at = models.DateTimeField(auto_now_add=True)
    reason = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.name


class Execution(models.Model):
    """One process the executor started (or refused to)."""

    command = models.CharField(max_length=100)
    args = models.JSONField(default=list)
    asked_by = models.CharField(max_length=200, blank=True)  # "run 42 attempt …", "bench", …
    run_id = models.BigIntegerField(null=True, blank=True)
    sandbox = models.CharField(max_length=20)
    started_at = models.DateTimeField(auto_now_add=True)
    duration_ms = models.FloatField(default=0)
    exit_code = models.IntegerField(null=True, blank=True)
    output_bytes = models.BigIntegerField(default=0)
    killed = models.BooleanField(default=False)
    timed_out = models.BooleanField(default=False)
    host = models.CharField(max_length=255, blank=True)  # where it runs: a pgid means something only there
    pgid = models.IntegerField(null=True, blank=True)  # set while it runs; the stop hook kills it
    running = models.BooleanField(default=False)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.command} {' '.join(self.args)}"
