from django.apps import AppConfig


class SchedulerConfig(AppConfig):
    name = "scheduler"
    verbose_name = "Batch jobs"

    def ready(self) -> None:
        from dashboard import metrics

        from .metrics import BatchCollector

        metrics.register(BatchCollector())
