from __future__ import annotations

from django.apps import AppConfig


class SchedulerConfig(AppConfig):
    name = "scheduler"
    verbose_name = "Batch jobs"

    def ready(self) -> None:
        from agentflow.lib import metrics

        from . import actions, batch_runs, live, signals  # noqa: F401 - live declares the engine's live events
        from .breakers import BreakerCollector
        from .limits import RateLimitCollector
        from .metrics import BatchCollector, RunCollector, on_run_finished

        metrics.register(BatchCollector())
        metrics.register(RunCollector())
        signals.run_finished.connect(on_run_finished, dispatch_uid="scheduler-run-metrics")
        metrics.register(RateLimitCollector())
        metrics.register(BreakerCollector())
        actions.register_action(actions.NOOP_ACTION)
        actions.register_action(batch_runs.BATCH_ACTION)
        batch_runs.connect()
        from . import roles

        roles.connect_signals()
