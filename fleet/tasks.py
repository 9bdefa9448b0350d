"""Celery tasks of the fleet app: thin wrappers around fleet/probes.py."""

from __future__ import annotations

from celery import shared_task

from . import probes


@shared_task(name="fleet.tasks.probe_providers", ignore_result=True)
def probe_providers() -> int:
    """Beat's entry (every AGENTFLOW_PROVIDER_PROBE_SECONDS): probe the blocked providers."""
    return len(probes.probe_pass())


@shared_task(name="fleet.tasks.notify_provider_blocked", ignore_result=True)
def notify_provider_blocked(episode_id: int) -> None:
    probes.notify_blocked(episode_id)


@shared_task(name="fleet.tasks.notify_provider_unblocked", ignore_result=True)
def notify_provider_unblocked(episode_id: int) -> None:
    probes.notify_unblocked(episode_id)
