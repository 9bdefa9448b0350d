"""Triggers › Webhooks: the endpoints (URL, provider, events, job, last delivery), an endpoint's
page (its settings, never its secret, and its recent deliveries), the form that adds or edits one
(admin role, audited; a new secret on an existing endpoint is a rotation), the delivery log
(filtered by endpoint, verdict and time) and a delivery's page with its Redeliver button
(``webhooks.intake.redeliver``: the operator role and the audit row are there)."""

from __future__ import annotations

import json
from datetime import timedelta

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dashboard import access
from dashboard.params import as_id
from scheduler import audit
from webhooks import intake
from webhooks.forms import EndpointForm
from webhooks.models import Delivery, Endpoint

DELIVERIES_PER_PAGE = 50
RECENT = 20
SINCE = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}


@require_GET
def webhooks(request: HttpRequest) -> HttpResponse:
    endpoints = Endpoint.objects.select_related("job").with_last_delivery()
    return render(
        request,
        "dashboard/webhooks.html",
        {"endpoints": endpoints, "can_administer": access.actor(request).can("administer")},
    )


@require_GET
def webhook_detail(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    endpoint = get_object_or_404(Endpoint.objects.select_related("job"), pk=endpoint_id)
    recent = endpoint.deliveries.select_related("run").order_by("-pk")[:RECENT]
    return render(
        request,
        "dashboard/webhook.html",
        {
            "endpoint": endpoint,
            "deliveries": recent,
            "rotating": bool(endpoint.valid_secrets()[1:]),
            "can_administer": access.actor(request).can("administer"),
        },
    )


@require_http_methods(["GET", "POST"])
def webhook_edit(request: HttpRequest, endpoint_id: int | None = None) -> HttpResponse:
    endpoint = get_object_or_404(Endpoint, pk=endpoint_id) if endpoint_id is not None else None
    form = EndpointForm(request.POST or None, instance=endpoint)
    if request.method == "POST" and form.is_valid():
        slug = form.cleaned_data["slug"]
        action = "webhook.change" if endpoint else "webhook.create"
        target = audit.Target("webhook_endpoint", str(endpoint.pk if endpoint else ""), slug)
        with audit.control(action, access.actor(request), target, needs="administer", atomic=True) as ctl:
            saved = form.save()
            rotated = saved.previous_secret_until and form.cleaned_data.get("secret")
            ctl.note("secret rotated" if rotated else "")
        messages.success(request, f"Endpoint {saved.slug} saved; senders post to {saved.url}.")
        return redirect("dashboard:webhook-detail", saved.pk)
    if not access.actor(request).can("administer") and request.method == "GET":
        messages.info(request, "Saving needs the admin role.")
    return render(request, "dashboard/webhook_form.html", {"form": form, "endpoint": endpoint})


@require_GET
def webhook_deliveries(request: HttpRequest) -> HttpResponse:
    endpoints = list(Endpoint.objects.only("pk", "slug"))
    endpoint = as_id(request.GET.get("endpoint", ""))
    endpoint = endpoint if endpoint in {e.pk for e in endpoints} else None
    verdict = request.GET.get("verdict", "")
    verdict = verdict if verdict in Delivery.Verdict.values else ""
    since_key = request.GET.get("since", "")
    since_key = since_key if since_key in SINCE else ""
    since = timezone.now() - SINCE[since_key] if since_key else None
    page = Paginator(Delivery.objects.log(endpoint, verdict, since), DELIVERIES_PER_PAGE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "dashboard/webhook_deliveries.html",
        {
            "endpoints": endpoints,
            "deliveries_page": page,
            "endpoint_filter": endpoint,
            "verdict_filter": verdict,
            "since_filter": since_key,
            "verdicts": Delivery.Verdict.choices,
            "since_choices": [("1h", "Last hour"), ("24h", "Last 24 hours"), ("7d", "Last 7 days")],
        },
    )


@require_GET
def webhook_delivery(request: HttpRequest, delivery_id: int) -> HttpResponse:
    delivery = get_object_or_404(
        Delivery.objects.select_related("endpoint", "run", "redelivery_of"), pk=delivery_id
    )
    can = access.can_operate(request)
    reason = ""
    if not can:
        reason = "Redelivering needs the operator role."
    elif not delivery.verified:
        reason = "Only a delivery that passed verification can be redelivered."
    elif delivery.body_truncated:
        reason = "The stored body is cut: it cannot be redelivered."
    return render(
        request,
        "dashboard/webhook_delivery.html",
        {
            "delivery": delivery,
            "headers": sorted(delivery.headers.items()),
            "pretty_body": _indented_json(delivery.body, delivery.body_truncated),
            "redeliver_disabled": reason,
            "redeliveries": delivery.redeliveries.select_related("run").order_by("-pk")[:10],
        },
    )


def _indented_json(body: str, truncated: bool) -> str:
    """A JSON body indented for reading ("" when it is not JSON or was cut: shown as stored)."""
    if truncated or body.lstrip()[:1] not in ("{", "["):
        return ""
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return ""


@require_POST
def webhook_redeliver(request: HttpRequest, delivery_id: int) -> HttpResponse:
    original = get_object_or_404(Delivery.objects.select_related("endpoint__job"), pk=delivery_id)
    try:
        delivery = intake.redeliver(access.actor(request), original)  # a viewer: Refused, the 403 page
    except ValidationError as exc:
        messages.error(request, "Not redelivered: " + "; ".join(exc.messages))
        return redirect("dashboard:webhook-delivery", original.pk)
    messages.success(request, f"Redelivered as delivery #{delivery.pk}: {delivery.reason}.")
    return redirect("dashboard:webhook-delivery", delivery.pk)
