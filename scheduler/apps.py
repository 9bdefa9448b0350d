from __future__ import annotations

from django.apps import AppConfig


class SchedulerConfig(AppConfig):
    name = "scheduler"
    verbose_name = "Batch jobs"

    def ready(self) -> None:
        from agentflow.lib import metrics

        from . import live  # noqa: F401 - declares the engine's live events
        from .metrics import BatchCollector

        metrics.register(BatchCollector())
