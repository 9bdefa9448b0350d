"""The flows' Celery task: resume a flow run (its step's run ended, or a pause is rechecked)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from . import engine, hooks
from .models import FlowRun


@shared_task(name="flows.tasks.resume_flow", bind=True, ignore_result=True, max_retries=30)
def resume_flow(self: Any, flow_run_id: int) -> str | None:
    status = engine.advance(flow_run_id)
    if status is None:  # another process is advancing it: look again shortly
        raise self.retry(countdown=1)
    if status in FlowRun.FINAL:
        hooks.complete(FlowRun.objects.get(pk=flow_run_id))
    return status
