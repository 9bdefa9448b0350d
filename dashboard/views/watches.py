"""File watches (issue 11 §3): the list (each watch's directory, patterns, events, job, state,
last event, runs made), a watch's page (recent events and runs), and the watcher process's
status (heartbeat in Redis) with the directories it watches against the kernel's inotify limits.
Read-only: watches are edited in the admin or imported as code."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from scheduler.models import Run, Watch
from scheduler.triggers import watch as w

EVENTS_SHOWN = 100
RUNS_SHOWN = 25


def _process() -> dict:
    status = w.watcher_status()
    limits = w.inotify_limits()
    used, limit = status.get("inotify_watches"), limits.get("max_user_watches")
    return {
        "watcher": status,
        "limits": limits,
        "roots": settings.AGENTFLOW_WATCH_ROOTS,
        "inotify_share": round(100 * used / limit, 1) if used is not None and limit else None,
        "inotify_used": f"{used:,}" if used is not None else "?",
        "max_user_watches": f"{limit:,}" if limit else None,
    }


@require_GET
def watches(request: HttpRequest) -> HttpResponse:
    rows = list(Watch.objects.select_related("job").order_by("name"))
    return render(
        request,
        "dashboard/watches.html",
        {"watches": rows, "problems": sum(1 for r in rows if r.has_problem and r.enabled), **_process()},
    )


@require_GET
def watch_detail(request: HttpRequest, watch_id: int) -> HttpResponse:
    watch = get_object_or_404(Watch.objects.select_related("job"), pk=watch_id)
    events = list(watch.watch_events.select_related("run").order_by("-id")[:EVENTS_SHOWN])
    runs = list(
        Run.objects.filter(trigger=Run.Trigger.FILE, triggered_by=watch.trigger_label).order_by("-id")[
            :RUNS_SHOWN
        ]
    )
    return render(
        request,
        "dashboard/watch.html",
        {"watch": watch, "events": events, "runs": runs, "files": watch.files.count(), **_process()},
    )
