"""Issue 11 §1: 100 schedule triggers firing every minute for 10 minutes (``--minutes`` for a
shorter run). Target: every fire ≤ 1 s late at p99 (lateness = the run's ``queued_at`` − the due
time), 0 missed, 0 duplicated.

Real processes: ``celery beat`` (the DatabaseScheduler, the settings' entries: the schedules'
safety-net pass every AGENTFLOW_SCHEDULE_TICK_SECONDS) and 2 worker processes (solo pool) that
run the ETA wake-ups and the no-op runs. The baseline, in the same run and for at most 2
minutes: AGENTFLOW_SCHEDULE_ARM=off, fires only on beat's pass (what a beat-driven tick alone
gives). On the bench SQLite database (AGENTFLOW_BENCH_DIR), or BENCH_DATABASE_URL."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from datetime import UTC, datetime, timedelta

from bench._common import log_path, percentile, server_env, setup, stop
from bench.bench_queue import CELERY, drain_broker, queues, start_workers, wait_ready

TRIGGERS = int(os.environ.get("BENCH_SCHEDULES_TRIGGERS", 100))
MINUTES = int(os.environ.get("BENCH_SCHEDULES_MINUTES", 10))
BASELINE_MINUTES = 2


def start_beat(env: dict[str, str]) -> subprocess.Popen:
    from django.conf import settings

    log = log_path("schedules-beat").open("wb")
    schedule_file = str(settings.DATA_DIR / "beat-schedule")
    args = [CELERY, "-A", "agentflow", "beat", "-l", "WARNING", "-s", schedule_file]
    return subprocess.Popen(args, cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)


def phase(minutes: int, arm: bool) -> dict:
    from django_celery_beat.models import PeriodicTask

    from scheduler.models import Job, Run, Schedule, ScheduleFire

    ScheduleFire.objects.all().delete()
    Schedule.objects.all().delete()
    Run.objects.all().delete()
    PeriodicTask.objects.all().delete()  # beat re-reads the settings' entries
    drain_broker()
    job, _ = Job.objects.get_or_create(name="bench-schedule", defaults={"kind": "noop"})
    # Triggers made just after a minute boundary: the first fire is the next whole minute.
    now = datetime.now(UTC)
    wait = 60 - now.second - now.microsecond / 1e6
    if wait < 20:  # not in the last seconds before a due time
        time.sleep(wait + 1)
    for i in range(TRIGGERS):
        s = Schedule(job=job, name=f"t{i:03d}", cron="* * * * *", overlap="allow")
        s.full_clean()
        s.save()
    first = min(Schedule.objects.values_list("next_due_at", flat=True))
    os.environ["AGENTFLOW_SCHEDULE_ARM"] = "true" if arm else "false"  # beat's and the workers'
    workers = start_workers(2)
    beat = start_beat(server_env())
    try:
        wait_ready(workers)
        end = first + timedelta(minutes=minutes - 1)
        while datetime.now(UTC) < end + timedelta(seconds=15):
            time.sleep(1)
            if beat.poll() is not None or any(p.poll() is not None for p in workers):
                raise RuntimeError("beat or a worker stopped: see var/bench-logs/")
    finally:
        stop(beat)
        for p in workers:
            stop(p)
        os.environ.pop("AGENTFLOW_SCHEDULE_ARM", None)
    dues = [first + timedelta(minutes=k) for k in range(minutes)]
    fires = list(
        ScheduleFire.objects.filter(due_at__in=dues)
        .select_related("run")
        .values_list("trigger_id", "due_at", "outcome", "run__queued_at")
    )
    late = [(q - d).total_seconds() for _, d, o, q in fires if q is not None]
    runs = Run.objects.filter(trigger="schedule").values_list("dedupe_key", flat=True)
    keys = list(runs)
    expected = TRIGGERS * minutes
    fired = {(t, d) for t, d, o, q in fires if o == "fired" and q is not None}
    return {
        "minutes": minutes,
        "arm": arm,
        "expected": expected,
        "fired": len(fired),
        "missed": expected - len(fired),
        "duplicated": len(keys) - len(set(keys)) + (len(fires) - len({(t, d) for t, d, _, _ in fires})),
        "other_outcomes": sorted({o for _, _, o, _ in fires} - {"fired"}),
        "late_p50_ms": round(statistics.median(late) * 1000, 1) if late else None,
        "late_p99_ms": round(percentile(late, 99) * 1000, 1) if late else None,
        "late_max_ms": round(max(late) * 1000, 1) if late else None,
    }


def run() -> dict:
    setup("schedules")
    minutes = int(os.environ.get("BENCH_SCHEDULES_MINUTES", MINUTES))
    engine = phase(minutes, arm=True)
    print(f"  engine: {engine}", flush=True)
    baseline = phase(min(minutes, BASELINE_MINUTES), arm=False)
    print(f"  baseline (beat's pass only): {baseline}", flush=True)
    p99 = engine["late_p99_ms"]
    return {
        "triggers": TRIGGERS,
        "queues": queues(),
        "engine": engine,
        "baseline_beat_only": baseline,
        "targets": [
            {
                "name": "fire lateness p99",
                "value": f"{p99} ms",
                "target": "≤ 1000 ms",
                "ok": p99 is not None and p99 <= 1000,
            },
            {"name": "missed fires", "value": engine["missed"], "target": 0, "ok": engine["missed"] == 0},
            {
                "name": "duplicated fires",
                "value": engine["duplicated"],
                "target": 0,
                "ok": engine["duplicated"] == 0,
            },
        ],
    }
