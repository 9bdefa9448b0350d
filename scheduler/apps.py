from __future__ import annotations

from django.apps import AppConfig


class SchedulerConfig(AppConfig):
    name = "scheduler"
    verbose_name = "Batch jobs"

    def ready(self) -> None:
        from agentflow.lib import metrics

        from . import actions, batch_runs, live  # noqa: F401 - live declares the engine's live events
        from .breakers import BreakerCollector
        from .limits import RateLimitCollector
        from .metrics import BatchCollector

        metrics.register(BatchCollector())
        metrics.register(RateLimitCollector())
        metrics.register(BreakerCollector())
        actions.register_action(actions.NOOP_ACTION)
        actions.register_action(batch_runs.BATCH_ACTION)
        batch_runs.connect()
