"""Config history: every stored version of a gateway's config and a diff of any two."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from dashboard import params
from fleet import configs
from fleet.models import ConfigHistory, Gateway


@require_GET
def config_history(request: HttpRequest, gateway_id: int) -> HttpResponse:
    gateway = get_object_or_404(Gateway, pk=gateway_id)
    rows = list(ConfigHistory.objects.filter(gateway=gateway).defer("config", "diff")[:200])
    diff = old = new = None
    a, b = params.get_id(request.GET, "a"), params.get_id(request.GET, "b")
    if a is not None and b is not None:
        pair = {c.pk: c for c in ConfigHistory.objects.filter(gateway=gateway, pk__in=[a, b])}
        if len(pair) == 2:
            old, new = sorted(pair.values(), key=lambda c: (c.created_at, c.pk))
            diff = configs.unified_diff(
                old.config,
                new.config,
                f"{old.created_at:%Y-%m-%d %H:%M:%S}",
                f"{new.created_at:%Y-%m-%d %H:%M:%S}",
            ).splitlines()
    elif rows and len(rows) > 1:
        new, old = rows[0], rows[1]
        diff = (ConfigHistory.objects.get(pk=new.pk).diff or "").splitlines()
    return render(
        request,
        "dashboard/config_history.html",
        {"gateway": gateway, "rows": rows, "diff": diff, "old": old, "new": new},
    )
