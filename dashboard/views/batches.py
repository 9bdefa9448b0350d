"""Batch runs: the last run of each registered batch and the recent runs."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from scheduler import registry
from scheduler.models import BatchRun

RUNS_PER_PAGE = 100


@require_GET
def batch_runs(request: HttpRequest) -> HttpResponse:
    latest = {r.batch: r for r in BatchRun.objects.latest_per_batch()}
    recent = BatchRun.objects.all()
    if (batch := request.GET.get("batch")) in registry.batch_ids():
        recent = recent.filter(batch=batch)
    if request.GET.get("status") in BatchRun.Status.values:
        recent = recent.filter(status=request.GET["status"])
    return render(
        request,
        "dashboard/batches.html",
        {
            "batches": [(spec, latest.get(spec.id)) for spec in registry.batches()],
            # get_page: a bogus or out-of-range ?page= shows the first or last page, never a 404.
            "recent_page": Paginator(recent, RUNS_PER_PAGE).get_page(request.GET.get("page")),
            "batch_filter": batch,
            "statuses": BatchRun.Status.choices,
        },
    )
