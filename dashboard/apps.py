from __future__ import annotations

from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Dashboard"

    def ready(self) -> None:
        from django.urls import register_converter

        from agentflow.lib import metrics

        from .params import IdConverter

        # <id:...> in dashboard/urls.py: ids past 2^63-1 are a 404, not an overflow in the query.
        register_converter(IdConverter, "id")

        from .consumers import DroppedCollector

        metrics.register(DroppedCollector())

        from . import queue_page

        queue_page.register_alert_conditions()
