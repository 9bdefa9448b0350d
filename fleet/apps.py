from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.apps import AppConfig

if TYPE_CHECKING:  # models cannot be imported before the app registry is ready
    from .models import Gateway


class FleetConfig(AppConfig):
    name = "fleet"
    verbose_name = "Fleet monitoring"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from agentflow.lib import metrics

        from . import agent_runs, alerts, automation, batches, emergency, live  # noqa: F401 - live declares the fleet's live events
        from .metrics import FleetCollector
        from .models import Gateway

        batches.register()
        agent_runs.register()
        emergency.register()  # the stop hook (abort on the gateways, their cron off) and gateway names
        alerts.register()
        automation.register()  # the job section of automation as code
        metrics.register(FleetCollector())
        post_delete.connect(_forget_batch_runs, sender=Gateway, dispatch_uid="fleet-gateway-runs")


def _forget_batch_runs(sender: type[Gateway], instance: Gateway, **kwargs: Any) -> None:
    """A deleted gateway's batch runs go with it (the engine keeps no foreign key to fleet rows)."""
    from scheduler.models import BatchRun

    BatchRun.objects.for_target("gateway", instance.pk).delete()
