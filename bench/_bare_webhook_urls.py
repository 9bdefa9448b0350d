"""The bench's bare view (bench_webhooks' baseline): a Django view that only answers 202, at the
intake's path, served by the same Daphne, ASGI handler, request threads and middleware as the
product (``bench._bare_webhook_settings``). Never in the product's URLs."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
@login_not_required
def accepted(request: HttpRequest, slug: str) -> HttpResponse:
    return HttpResponse(status=202)


urlpatterns = [path("webhooks/<str:slug>/", accepted)]
