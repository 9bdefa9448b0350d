"""Ops endpoints without a login: /healthz and /metrics."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from agentflow.lib import metrics
from fleet import health


@login_not_required
@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    report = health.report()
    return JsonResponse(report, status=503 if report["status"] == "down" else 200)


@login_not_required
@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    problem = metrics.access_problem(request)
    if problem:
        return HttpResponseForbidden(problem + "\n", content_type="text/plain; charset=utf-8")
    return HttpResponse(metrics.render(), content_type=metrics.CONTENT_TYPE)
