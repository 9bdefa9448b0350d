"""Triggers: the schedules page (every schedule trigger with its job, expression, zone, sentence,
next and last fire, policy and state), a schedule's page (the next 10 fire times, its fire history)
and the operator controls enable / disable / fire now (``scheduler.triggers.schedule``: role check
and audit row there). Webhooks and file watches have their own pages under /triggers/."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard import access
from scheduler import audit
from scheduler.models import Schedule
from scheduler.triggers import schedule

FIRES_PER_PAGE = 50


def _row(s: Schedule) -> dict:
    return {
        "s": s,
        "expression": schedule.expression(s),
        "sentence": schedule.describe(s),
        "next": s.next_due_at.astimezone(schedule.zone(s.timezone)) if s.next_due_at else None,
        "last": s.last_due.astimezone(schedule.zone(s.timezone)) if getattr(s, "last_due", None) else None,  # type: ignore[attr-defined]
    }


@require_GET
def triggers(request: HttpRequest) -> HttpResponse:
    listed = Schedule.objects.select_related("job").with_last_fire().order_by("job__name", "name")
    return render(
        request,
        "dashboard/triggers.html",
        {"rows": [_row(s) for s in listed], "can_operate": access.can_operate(request)},
    )


@require_GET
def schedule_detail(request: HttpRequest, schedule_id: int) -> HttpResponse:
    s = get_object_or_404(Schedule.objects.select_related("job", "last_run").with_last_fire(), pk=schedule_id)
    fires = Paginator(s.fires.select_related("run").order_by("-due_at"), FIRES_PER_PAGE)
    page = fires.get_page(request.GET.get("page"))
    tz = schedule.zone(s.timezone)
    return render(
        request,
        "dashboard/trigger.html",
        {
            **_row(s),
            "preview": schedule.preview(s, 10),
            "fires": page,
            "zone": tz,
            "can_operate": access.can_operate(request),
            "counts": {
                o: s.fires.filter(outcome=o).count() for o in ("fired", "caught_up", "missed", "skipped")
            },
        },
    )


def _control(request: HttpRequest, schedule_id: int, what: str) -> HttpResponse:
    s = get_object_or_404(Schedule.objects.select_related("job"), pk=schedule_id)
    actor = access.actor(request)
    try:
        if what == "fire":
            fire = schedule.fire_now(actor, s)
            if fire.run_id:
                messages.success(
                    request,
                    f"{s.label} fired: run {fire.run_id} is {fire.run.get_status_display().lower()}.",  # type: ignore[union-attr]
                )
            else:
                messages.error(request, f"{s.label} did not queue a run: {fire.detail}")
        else:
            schedule.set_enabled(actor, s, what == "enable")
            messages.success(request, f"{s.label} is {'enabled' if what == 'enable' else 'disabled'}.")
    except audit.Refused as exc:
        messages.error(request, str(exc))
    except ValidationError as exc:
        messages.error(request, "; ".join(exc.messages))
    if request.POST.get("back") == "list":  # the list's buttons come back to the list
        return redirect("dashboard:triggers")
    return redirect("dashboard:schedule-detail", s.pk)


@require_POST
def schedule_enable(request: HttpRequest, schedule_id: int) -> HttpResponse:
    return _control(request, schedule_id, "enable")


@require_POST
def schedule_disable(request: HttpRequest, schedule_id: int) -> HttpResponse:
    return _control(request, schedule_id, "disable")


@require_POST
def schedule_fire(request: HttpRequest, schedule_id: int) -> HttpResponse:
    return _control(request, schedule_id, "fire")
