from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import health, metrics
from .models import AgentSession, Gateway


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
    allowed = settings.METRICS_ALLOWED_IPS
    if allowed and request.META.get("REMOTE_ADDR") not in allowed:
        return HttpResponseForbidden("metrics are restricted (AGENTFLOW_METRICS_ALLOWED_IPS)\n")
    return HttpResponse(metrics.render(), content_type=metrics.CONTENT_TYPE)


@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    gateways = Gateway.objects.annotate(
        n_agents=Count("agents", distinct=True),
        n_active=Count("sessions", filter=Q(sessions__status=AgentSession.Status.ACTIVE), distinct=True),
        n_sessions=Count("sessions", distinct=True),
    ).prefetch_related("agents")
    return render(request, "dashboard/overview.html", {"gateways": gateways})
