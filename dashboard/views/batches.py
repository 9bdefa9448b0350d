"""Batch runs: the last run of each registered batch and the recent runs, filtered by batch and
status (GET parameters checked against the registry and the status choices; anything else is
ignored), identical outcomes folded into one row unless ``?each=1``."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.batch_runs import RunGroup, group_identical
from scheduler import registry
from scheduler.models import BatchRun

RUNS_PER_PAGE = 100


@require_GET
def batch_runs(request: HttpRequest) -> HttpResponse:
    latest = {r.batch: r for r in BatchRun.objects.latest_per_batch()}
    batch = request.GET.get("batch", "")
    batch = batch if batch in registry.batch_ids() else ""
    status = request.GET.get("status", "")
    status = status if status in BatchRun.Status.values else ""
    each = request.GET.get("each") == "1"
    recent = BatchRun.objects.all()
    if batch:
        recent = recent.filter(batch=batch)
    if status:
        recent = recent.filter(status=status)
    # get_page: a bogus or out-of-range ?page= shows the first or last page, never a 404.
    page = Paginator(recent, RUNS_PER_PAGE).get_page(request.GET.get("page"))
    runs = list(page.object_list)
    groups = [RunGroup(run, [run]) for run in runs] if each else group_identical(runs)
    return render(
        request,
        "dashboard/batches.html",
        {
            "batches": [(spec, latest.get(spec.id)) for spec in registry.batches()],
            "recent_page": page,
            "groups": groups,
            "folded": len(runs) - len(groups),
            "each": each,
            "batch_filter": batch,
            "status_filter": status,
            "batch_ids": registry.batch_ids(),
            "statuses": BatchRun.Status.choices,
        },
    )
