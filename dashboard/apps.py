from __future__ import annotations

from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Dashboard"

    def ready(self) -> None:
        from agentflow.lib import metrics

        from .consumers import DroppedCollector

        metrics.register(DroppedCollector())
