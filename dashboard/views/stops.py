"""The emergency stop's pages: the Stops page (engaged stops, history, the engage form), a stop's
page (its steps, what it saved, the runs it holds, release, requeue / cancel), the banner fragment
every page refreshes when a stop changes, and the POSTs, which call ``scheduler.stops`` (role
check and audit row there)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from dashboard import access
from fleet.models import Agent, Gateway
from scheduler import stops
from scheduler.models import EmergencyStop, Priority, Run

HISTORY = 50
HELD_SHOWN = 500


def _choices() -> dict:
    return {
        "scopes": EmergencyStop.Scope.choices,
        "priorities": Priority.values,
        "gateway_names": list(Gateway.objects.order_by("name").values_list("name", flat=True)[:100]),
        "agent_ids": sorted(set(Agent.objects.values_list("agent_id", flat=True)[:500])),
    }


@require_GET
def stops_page(request: HttpRequest) -> HttpResponse:
    engaged = stops.engaged()
    history = list(EmergencyStop.objects.released().order_by("-released_at")[:HISTORY])
    return render(
        request,
        "dashboard/stops.html",
        {
            "engaged": engaged,
            "history": history,
            "held": stops.held_runs().count(),
            "can_stop": access.actor(request).can("administer"),
            **_choices(),
        },
    )


@require_GET
def stop_detail(request: HttpRequest, stop_id: int) -> HttpResponse:
    stop = get_object_or_404(EmergencyStop, pk=stop_id)
    held = Run.objects.filter(stop=stop).order_by("id")
    counts = {
        status: held.filter(status=status).count() for status in (Run.Status.PARKED, Run.Status.ABORTED)
    }
    return render(
        request,
        "dashboard/stop.html",
        {
            "stop": stop,
            "held": list(held[:HELD_SHOWN]),
            "held_total": sum(counts.values()),
            "held_counts": counts,
            "can_stop": access.actor(request).can("administer"),
            "notes": [s for s in stop.steps if s.get("note")],
        },
    )


@require_GET
def stop_banner(request: HttpRequest) -> HttpResponse:
    return render(request, "components/stop_banner.html", {"engaged_stops": stops.banner()})


def _reason(request: HttpRequest) -> str:
    return request.POST.get("reason", "").strip()[:2000]


@require_POST
def stop_engage(request: HttpRequest) -> HttpResponse:
    scope = request.POST.get("scope", "global")
    value = request.POST.get("value", "")
    try:
        stop = stops.engage(access.actor(request), scope, value, _reason(request))
    except (ValidationError, PermissionDenied) as exc:
        text = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        messages.error(request, f"Not stopped: {text}")
        return redirect(request.POST.get("next") or reverse("dashboard:stops"))
    messages.warning(
        request,
        f"Emergency stop engaged for {stop.scope_label} in {stop.engage_ms or 0:.0f} ms: "
        f"{len(stop.aborted_ids)} running run(s) aborted, {len(stop.parked_ids)} parked.",
    )
    return redirect("dashboard:stop-detail", stop.pk)


@require_POST
def stop_release(request: HttpRequest, stop_id: int) -> HttpResponse:
    then_requeue = request.POST.get("requeue") == "on"
    try:
        (stop,), out = stops.release_and_requeue(
            access.actor(request), stop_id=stop_id, reason=_reason(request), then_requeue=then_requeue
        )
    except (ValidationError, PermissionDenied) as exc:
        text = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        messages.error(request, f"Not released: {text}")
    else:
        held = stops.held_runs(stop).count()
        if then_requeue:
            left = f" {held} run(s) could not be requeued: see below." if held else ""
            messages.success(
                request, f"Released {stop.scope_label} and requeued {out.requeued} run(s).{left}"
            )
        else:
            messages.success(
                request,
                f"Released {stop.scope_label}. Nothing was replayed: "
                f"{held} run(s) wait for your decision below.",
            )
    return redirect("dashboard:stop-detail", stop_id)


@require_POST
def stop_requeue(request: HttpRequest, stop_id: int) -> HttpResponse:
    stop = get_object_or_404(EmergencyStop, pk=stop_id)
    action, _, which = request.POST.get("do", "requeue-all").partition("-")
    chosen: str | list[int]
    if which == "selected":
        try:
            chosen = [int(v) for v in request.POST.getlist("run")]
        except ValueError:
            chosen = []
        if not chosen:
            messages.error(request, "Select the runs first.")
            return redirect("dashboard:stop-detail", stop_id)
    else:
        chosen = "all"
    try:
        out = stops.requeue(
            access.actor(request), chosen, cancel=action == "cancel", stop=stop, reason=_reason(request)
        )
    except (ValidationError, PermissionDenied) as exc:
        text = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        messages.error(request, f"Nothing changed: {text}")
    else:
        done = (
            f"{out.cancelled} run(s) cancelled" if action == "cancel" else f"{out.requeued} run(s) requeued"
        )
        skipped = (
            f"; {len(out.skipped)} skipped ({out.skipped[0]}{'…' if len(out.skipped) > 1 else ''})"
            if out.skipped
            else ""
        )
        messages.success(request, done + skipped + ".")
    return redirect("dashboard:stop-detail", stop_id)
