"""The intake edge: ``POST /webhooks/<slug>/``, no login, no CSRF (the signature is the proof).
Never a 500: an unexpected failure (the database away) answers 503 so the sender retries."""

from __future__ import annotations

import logging

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from . import intake

log = logging.getLogger("agentflow.webhooks")


@csrf_exempt
@login_not_required
def receive(request: HttpRequest, slug: str) -> HttpResponse:
    if request.method != "POST":
        refused = JsonResponse({"status": "method", "detail": "webhooks are POSTed"}, status=405)
        refused["Allow"] = "POST"
        return refused
    raw_length = request.META.get("CONTENT_LENGTH") or ""
    length = int(raw_length) if raw_length.isdigit() else None
    try:
        outcome = intake.receive(
            slug,
            dict(request.headers.items()),
            request.read,
            content_length=length,
            content_type=request.content_type or "",
        )
    except Exception:
        log.exception("webhook intake failed for %s", slug[:100])
        return JsonResponse({"status": "error", "detail": "not recorded, try again"}, status=503)
    if outcome.content_type == "application/json":
        response: HttpResponse = JsonResponse(outcome.body, status=outcome.status, safe=False)
    else:
        response = HttpResponse(str(outcome.body), status=outcome.status, content_type=outcome.content_type)
    for name, value in outcome.headers.items():
        response[name] = value
    return response
