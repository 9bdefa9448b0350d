from __future__ import annotations

from django.apps import AppConfig


class SchedulerConfig(AppConfig):
    name = "scheduler"
    verbose_name = "Batch jobs"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from agentflow.lib import metrics

        from . import actions, alert_conditions, alert_rules, batch_runs, live, signals  # noqa: F401 - live declares the engine's live events
        from .breakers import BreakerCollector
        from .limits import RateLimitCollector
        from .metrics import BatchCollector, RunCollector, on_run_finished

        metrics.register(BatchCollector())
        metrics.register(RunCollector())
        signals.run_finished.connect(on_run_finished, dispatch_uid="scheduler-run-metrics")
        metrics.register(RateLimitCollector())
        metrics.register(BreakerCollector())
        from agentflow.lib import redis as redis_lib

        from . import conditions

        if conditions.on_redis_failure not in redis_lib.FAILURE_HOOKS:
            redis_lib.FAILURE_HOOKS.append(conditions.on_redis_failure)  # the stop's Redis condition
        actions.register_action(actions.NOOP_ACTION)
        actions.register_action(batch_runs.BATCH_ACTION)
        batch_runs.connect()
        from . import results

        results.connect()  # the automation log's run.finished lines and the jobs' result actions
        from . import results_config

        results_config.register()  # on_success / on_failure of automation.toml's jobs
        alert_conditions.register()
        post_migrate.connect(alert_rules.create_after_migrate, dispatch_uid="scheduler-alert-rules")
        from . import roles

        roles.connect_signals()
        from .triggers import watch_config

        watch_config.register()  # file watches: automation sections, the alert condition, the move
        from .triggers import schedule

        schedule.connect()  # buffered fires, failure counts and pause-on-failure
        schedule.register()  # automation status and automation as code
