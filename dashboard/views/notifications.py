"""The Notifications page: the channels (kind, events, enabled, last delivery), the delivery log
(filtered by channel, status and event, newest first) and each channel's "Send test" button,
which calls ``scheduler.notifications.delivery.send_test`` (role check and audit row there)."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from dashboard import access
from dashboard.params import as_id
from scheduler import notify
from scheduler.models import Channel, Delivery
from scheduler.notifications import delivery

DELIVERIES_PER_PAGE = 50


@require_GET
def notifications(request: HttpRequest) -> HttpResponse:
    channels = list(Channel.objects.with_last_delivery())
    channel = as_id(request.GET.get("channel", ""))
    channel = channel if channel in {c.pk for c in channels} else None
    status = request.GET.get("status", "")
    status = status if status in Delivery.Status.values else ""
    kind = request.GET.get("kind", "")
    kind = kind if kind in notify.EVENTS or kind in notify.DIRECT else ""
    page = Paginator(Delivery.objects.log(channel, status, kind), DELIVERIES_PER_PAGE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "dashboard/notifications.html",
        {
            "channels": channels,
            "deliveries_page": page,
            "channel_filter": channel,
            "status_filter": status,
            "kind_filter": kind,
            "statuses": Delivery.Status.choices,
            "kinds": [*notify.EVENTS.items(), *notify.DIRECT.items()],
            "tested": request.GET.get("tested", ""),
            "can_operate": access.can_operate(request),
        },
    )


@require_POST
def notification_test(request: HttpRequest, channel_id: int) -> HttpResponse:
    channel = get_object_or_404(Channel, pk=channel_id)
    sent = delivery.send_test(access.actor(request), channel)  # a viewer: Refused, the 403 page
    if sent.status == Delivery.Status.SENT:
        detail = f"HTTP {sent.response_status}" if sent.response_status else sent.response_body[:120]
        messages.success(request, f"Test sent to {channel.name}: {detail}.")
    else:
        messages.error(request, f"Test to {channel.name} {sent.status}: {sent.error[:300]}")
    return redirect(f"{reverse('dashboard:notifications')}?tested={sent.pk}#delivery-{sent.pk}")
