"""Schedule triggers (scheduler/triggers/schedule.py) with the real database and Redis, no
worker: validation, DST in both directions, catch-up after a downtime, overlap policies,
pause after failures, and one fire per due time with two ticks at once. Time by time-machine."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import connection

from scheduler import queue
from scheduler.models import Job, Run, Schedule, ScheduleFire
from scheduler.triggers import schedule

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

BERLIN = ZoneInfo("Europe/Berlin")
WORKER = "test-host:1"


@pytest.fixture(autouse=True)
def _isolated(redis_prefix):
    return redis_prefix


def make_job(name: str = "report", **fields) -> Job:
    return Job.objects.create(name=name, kind="noop", **fields)


def make_schedule(job: Job, **fields) -> Schedule:
    fields.setdefault("cron", "* * * * *")
    s = Schedule(job=job, **fields)
    s.full_clean()
    s.save()
    return s


def fire(at: datetime) -> schedule.FireReport:
    with time_machine.travel(at, tick=False):
        return schedule.fire_due()


def outcomes(s: Schedule) -> list[tuple[str, str]]:
    return [
        (f.due_at.astimezone(ZoneInfo(s.timezone)).strftime("%m-%d %H:%M"), f.outcome)
        for f in s.fires.order_by("due_at")
    ]


# --- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"cron": "0 9 * *"}, "cron", "has 4 field(s); a cron expression has 5"),
        ({"cron": "61 9 * * *"}, "cron", "invalid cron '61 9 * * *': minute 61 is out of range (0-59)"),
        ({"cron": "0 9 * 13 *"}, "cron", "month 13 is out of range (1-12 or JAN-DEC)"),
        ({"cron": "0 9 * * MON-FOO"}, "cron", "'FOO' is not a day-of-week (0-7 or SUN-SAT)"),
        ({"cron": "*/0 9 * * *"}, "cron", "the minute step in '*/0' is 0: a step is at least 1"),
        ({"cron": "0 17-9 * * *"}, "cron", "the hour range '17-9' runs backwards"),
        ({"cron": "0 9 30 2 *"}, "cron", "day-of-month '30' never occurs in month '2'"),
        ({"cron": "0 9 * * 1#6"}, "cron", "in the day-of-week 1#6, the week of the month is 1-5, not '6'"),
        ({"kind": "interval", "cron": "", "every_seconds": 10**12}, "every_seconds", "at most 3650 days"),
        ({"jitter_seconds": 10**9}, "jitter_seconds", "a jitter is at most 7 days"),
        ({"catch_up_window_seconds": 10**12}, "catch_up_window_seconds", "at most 3650 days"),
        (
            {"kind": "at", "cron": "", "at_datetime": datetime(9999, 12, 31, tzinfo=UTC)},
            "at_datetime",
            "between the years 1970 and 9000",
        ),
        ({"cron": "0 9 * * * 2026"}, "cron", "has 6 field(s)"),
        ({"cron": "0 0 31 2 *"}, "cron", "invalid cron"),
        ({"timezone": "Europe/Berln"}, "timezone", "did you mean Europe/Berlin?"),
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown time zone 'Mars/Olympus'"),
        ({"kind": "interval", "cron": ""}, "every_seconds", "needs its length"),
        ({"kind": "interval", "every_seconds": 3600, "at_time": time(9)}, "at_time", "whole days"),
        ({"kind": "at", "cron": ""}, "at_datetime", "needs its date and time"),
    ],
)
def test_a_bad_definition_is_refused_saying_what_is_wrong(fields, field, words):
    s = Schedule(job=make_job(), **{"cron": "0 9 * * *", **fields})
    with pytest.raises(ValidationError) as caught:
        s.full_clean()
    assert words in " ".join(caught.value.message_dict[field])


def test_an_exported_schedule_reads_back_with_no_catch_up_window():
    """The export writes a zero window as 0 ("0s" is no duration the reader takes)."""
    s = make_schedule(make_job(), cron="0 9 * * *", catch_up="skip", catch_up_window_seconds=0)
    (entry,) = schedule.export_entries()
    assert entry["catch_up_window"] == 0
    (definition,), problems = schedule.parse_entry(entry)
    assert problems == [] and definition.fields["catch_up_window_seconds"] == 0 == s.catch_up_window_seconds


@pytest.mark.parametrize(
    ("text", "at", "expected"),
    [
        ("30m", "", schedule.Every(seconds=1800)),
        ("1d", "09:00", schedule.Every(seconds=86400, at=time(9))),
        ("every 30 minutes", "", schedule.Every(seconds=1800)),
        ("every hour", "", schedule.Every(seconds=3600)),
        ("daily at 09:00", "", schedule.Every(seconds=86400, at=time(9))),
        ("every Monday 00:00", "", schedule.Every(cron="0 0 * * 1")),
        ("every sunday at 18:30", "", schedule.Every(cron="30 18 * * 0")),
    ],
)
def test_every_reads_the_forms_of_the_config_file(text, at, expected):
    assert schedule.parse_every(text, at) == expected


@pytest.mark.parametrize(("text", "at"), [("soon", ""), ("2h", "09:00"), ("1d", "25:00"), ("0m", "")])
def test_a_bad_every_is_refused(text, at):
    with pytest.raises(ValidationError):
        schedule.parse_every(text, at)


def test_the_preview_lists_ten_times_and_says_them_in_words():
    s = make_schedule(make_job(), cron="0 9 * * 1-5", timezone="Europe/Berlin")
    times = schedule.preview(s, 10, after=datetime(2026, 12, 4, 12, tzinfo=UTC))  # a Friday
    assert len(times) == 10
    assert [t.strftime("%a %H:%M") for t in times[:3]] == ["Mon 09:00", "Tue 09:00", "Wed 09:00"]
    assert times[0].utcoffset() == timedelta(hours=1)
    assert schedule.describe(s) == "At 09:00, Monday through Friday"
    interval = make_schedule(make_job("b"), kind="interval", cron="", every_seconds=86400, at_time=time(9))
    assert schedule.describe(interval) == "Every day at 09:00"


# --- DST ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cron", "interval"])
@pytest.mark.parametrize(
    ("start", "expected"),
    [
        # fall-back day (clocks 03:00 → 02:00): 02:30 happens twice, fires once, the first
        (datetime(2026, 10, 24, 12, tzinfo=BERLIN), ["10-25 02:30 +0200", "10-26 02:30 +0100"]),
        # spring-forward day (02:00 → 03:00): 02:30 does not exist, fires at 03:00
        (datetime(2026, 3, 28, 12, tzinfo=BERLIN), ["03-29 03:00 +0200", "03-30 02:30 +0200"]),
    ],
)
def test_a_daily_0230_in_berlin_fires_once_on_both_dst_days(kind, start, expected):
    fields = (
        {"cron": "30 2 * * *"}
        if kind == "cron"
        else {"kind": "interval", "cron": "", "every_seconds": 86400, "at_time": time(2, 30)}
    )
    with time_machine.travel(start, tick=False):
        s = make_schedule(make_job(), timezone="Europe/Berlin", overlap="allow", **fields)
    # walk the clock through both days a quarter hour at a time, firing as the tick would
    t = start
    while t < start + timedelta(days=2):
        t += timedelta(minutes=15)
        fire(t)
    fired = [f for f in s.fires.order_by("due_at") if f.outcome == ScheduleFire.Outcome.FIRED]
    assert [f.due_at.astimezone(BERLIN).strftime("%m-%d %H:%M %z") for f in fired] == expected
    assert Run.objects.filter(trigger=Run.Trigger.SCHEDULE).count() == 2


# --- missed fires and catch-up ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected", "runs"),
    [
        ("once", [("10:00", "missed"), ("11:00", "missed"), ("12:00", "caught_up")], 1),
        ("skip", [("10:00", "missed"), ("11:00", "missed"), ("12:00", "missed")], 0),
    ],
)
def test_fires_missed_during_a_downtime_are_recorded_and_caught_up_by_policy(policy, expected, runs):
    with time_machine.travel(datetime(2026, 12, 2, 9, 30, tzinfo=UTC), tick=False):
        s = make_schedule(make_job(), cron="0 * * * *", catch_up=policy, catch_up_window_seconds=3600)
    report = fire(datetime(2026, 12, 2, 12, 20, tzinfo=UTC))  # down from 09:30 to 12:20
    assert [(d[-5:], o) for d, o in outcomes(s)] == expected
    assert Run.objects.filter(trigger=Run.Trigger.SCHEDULE).count() == runs
    assert report.missed == 3 - runs
    s.refresh_from_db()
    assert s.next_due_at == datetime(2026, 12, 2, 13, tzinfo=UTC)
    if runs:
        run = Run.objects.get()
        assert run.input["fire"] == "caught_up" and run.input["due_at"].startswith("2026-12-02T12:00")


def test_a_missed_fire_older_than_the_catch_up_window_is_not_run():
    with time_machine.travel(datetime(2026, 12, 2, 9, 30, tzinfo=UTC), tick=False):
        s = make_schedule(make_job(), cron="0 10 * * *", catch_up="once", catch_up_window_seconds=600)
    fire(datetime(2026, 12, 2, 11, 0, tzinfo=UTC))
    assert outcomes(s) == [("12-02 10:00", "missed")]
    assert not Run.objects.exists()


def test_a_fire_on_time_queues_a_run_through_the_queue_with_its_due_time():
    with time_machine.travel(datetime(2026, 12, 2, 9, 30, 10, tzinfo=UTC), tick=False):
        s = make_schedule(make_job(priority="high"), cron="31 9 * * *")
    fire(datetime(2026, 12, 2, 9, 30, 59, tzinfo=UTC))
    assert not s.fires.exists()  # not due yet
    fire(datetime(2026, 12, 2, 9, 31, 0, 200000, tzinfo=UTC))
    run = Run.objects.get()
    assert (run.trigger, run.triggered_by, run.priority, run.status) == (
        "schedule",
        "report:schedule",
        "high",
        "queued",
    )
    assert run.input == {
        "due_at": "2026-12-02T09:31:00+00:00",
        "trigger": "schedule",
        "schedule": "31 9 * * *",
        "timezone": "UTC",
        "fire": "fired",
    }
    assert run.dedupe_key == f"schedule:{s.pk}:{int(datetime(2026, 12, 2, 9, 31, tzinfo=UTC).timestamp())}"


# --- overlap -------------------------------------------------------------------------------------


def _two_fires(policy: str) -> Schedule:
    with time_machine.travel(datetime(2026, 12, 2, 9, 0, 30, tzinfo=UTC), tick=False):
        s = make_schedule(make_job(), overlap=policy)
    fire(datetime(2026, 12, 2, 9, 1, 1, tzinfo=UTC))
    fire(datetime(2026, 12, 2, 9, 2, 1, tzinfo=UTC))
    return s


def test_overlap_skip_records_the_fire_and_queues_nothing_while_a_run_is_unfinished():
    s = _two_fires("skip")
    assert [o for _, o in outcomes(s)] == ["fired", "skipped"]
    assert Run.objects.count() == 1


def test_overlap_allow_queues_every_fire():
    s = _two_fires("allow")
    assert [o for _, o in outcomes(s)] == ["fired", "fired"]
    assert Run.objects.count() == 2


def test_overlap_cancel_cancels_the_unfinished_run_then_queues(django_capture_on_commit_callbacks):
    s = _two_fires("cancel")
    first, second = Run.objects.order_by("id")
    assert (first.status, second.status) == ("cancelled", "queued")
    assert [o for _, o in outcomes(s)] == ["fired", "fired"]
    assert "cancelled run" in s.fires.order_by("due_at").last().detail


def test_overlap_buffer_keeps_one_and_starts_it_when_the_run_ends(django_capture_on_commit_callbacks):
    s = _two_fires("buffer")
    fire(datetime(2026, 12, 2, 9, 3, 1, tzinfo=UTC))
    assert [o for _, o in outcomes(s)] == ["fired", "buffered", "skipped"]
    assert Run.objects.count() == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert queue.start_next(WORKER).status == "succeeded"  # noop: finishes at once
    buffered = s.fires.get(outcome="buffered")
    assert buffered.run is not None and buffered.run.status == "queued"
    assert buffered.run.input["due_at"].startswith("2026-12-02T09:02")


# --- pause after failures --------------------------------------------------------------------------


def test_it_pauses_after_n_consecutive_failed_runs_and_says_why(django_capture_on_commit_callbacks):
    job = make_job(params={"fail": "invalid_request"}, max_attempts=1)
    with time_machine.travel(datetime(2026, 12, 2, 9, 0, 30, tzinfo=UTC), tick=False):
        s = make_schedule(job, pause_after_failures=2, overlap="allow")
    for minute in (1, 2):
        fire(datetime(2026, 12, 2, 9, minute, 1, tzinfo=UTC))
        with django_capture_on_commit_callbacks(execute=True):
            assert queue.start_next(WORKER).status == "failed"
    s.refresh_from_db()
    assert s.consecutive_failures == 2 and s.paused_at is not None and s.state == "paused"
    assert (
        "paused after 2 consecutive failed runs" in s.paused_reason and "invalid_request" in s.paused_reason
    )
    fire(datetime(2026, 12, 2, 9, 5, 1, tzinfo=UTC))
    assert Run.objects.count() == 2  # paused: no more fires
    from scheduler.audit import Actor

    with time_machine.travel(datetime(2026, 12, 2, 9, 5, 30, tzinfo=UTC), tick=False):
        schedule.set_enabled(Actor.system(), s, True)
    s.refresh_from_db()
    assert s.paused_at is None and s.consecutive_failures == 0
    assert s.next_due_at == datetime(2026, 12, 2, 9, 6, tzinfo=UTC)  # replanned from now, no catch-up


def test_a_success_resets_the_failure_count(django_capture_on_commit_callbacks):
    job = make_job(params={"fail": "invalid_request"}, max_attempts=1)
    with time_machine.travel(datetime(2026, 12, 2, 9, 0, 30, tzinfo=UTC), tick=False):
        s = make_schedule(job, pause_after_failures=2, overlap="allow")
    fire(datetime(2026, 12, 2, 9, 1, 1, tzinfo=UTC))
    with django_capture_on_commit_callbacks(execute=True):
        queue.start_next(WORKER)
    Job.objects.filter(pk=job.pk).update(params={})
    fire(datetime(2026, 12, 2, 9, 2, 1, tzinfo=UTC))
    Run.objects.filter(status="queued").update(params={})
    with django_capture_on_commit_callbacks(execute=True):
        assert queue.start_next(WORKER).status == "succeeded"
    s.refresh_from_db()
    assert s.consecutive_failures == 0 and s.paused_at is None


# --- jitter, fire now, a disabled job -----------------------------------------------------------------


def test_jitter_delays_the_fire_by_a_stable_offset_within_bounds():
    with time_machine.travel(datetime(2026, 12, 2, 9, 0, 30, tzinfo=UTC), tick=False):
        s = make_schedule(make_job(), jitter_seconds=30)
    offset = (s.fire_at - s.next_due_at).total_seconds()
    assert 0 <= offset <= 30
    assert schedule.jitter(s, s.next_due_at) == schedule.jitter(Schedule.objects.get(pk=s.pk), s.next_due_at)


def test_fire_now_queues_a_run_and_a_disabled_job_is_recorded_not_queued():
    from scheduler.audit import Actor
    from scheduler.models import AuditEntry

    job = make_job()
    s = make_schedule(job)
    got = schedule.fire_now(Actor.system(), s)
    assert got.outcome == "manual" and got.run.trigger == "schedule"
    assert AuditEntry.objects.filter(action="schedule.fire_now", result="ok").exists()
    Job.objects.filter(pk=job.pk).update(enabled=False)
    s.refresh_from_db()
    assert schedule.fire_now(Actor.system(), s).outcome == "failed"
    assert AuditEntry.objects.filter(action="schedule.fire_now", result="error").exists()


# --- no duplicate fire -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_ticks_at_once_fire_each_due_time_once(own_queues):
    with time_machine.travel(datetime(2026, 12, 2, 9, 0, 30, tzinfo=UTC), tick=False):
        job = make_job(concurrency_limit=1000)
        triggers = [make_schedule(job, name=f"t{i}", overlap="allow") for i in range(20)]
    barrier = threading.Barrier(2)
    reports: list[schedule.FireReport] = []

    def tick() -> None:
        try:
            barrier.wait()
            with time_machine.travel(datetime(2026, 12, 2, 9, 1, 0, 300000, tzinfo=UTC), tick=False):
                reports.append(schedule.fire_due())
        finally:
            connection.close()

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(r.fired for r in reports) == 20
    assert len(reports) == 2  # both ticks ran to the end (the loser changed no row)
    assert ScheduleFire.objects.count() == 20
    assert Run.objects.count() == 20
    assert {f.trigger_id for f in ScheduleFire.objects.all()} == {t.pk for t in triggers}
