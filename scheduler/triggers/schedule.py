"""Schedule triggers: cron (5 fields), interval (every N s/min/h/d, optionally at HH:MM) and one-off
"at" times, each in its IANA time zone, fired by one engine tick (not one beat entry each).

Times: next fire times come from cronsim (DST-correct: a daily 02:30 Europe/Berlin fires once on
the fall-back day and at 03:00 on the spring-forward day); an interval of whole days with an
``at`` time is the same daily cron stepped every N local days; a plain interval counts seconds
from ``anchor_at`` (absolute, DST does not apply). The human sentence comes from cron-descriptor.

Firing (:func:`fire_due`, the task ``scheduler.tasks.fire_schedules``): for each active trigger
whose ``fire_at`` has passed, in one transaction:

1. claim the due time: ``UPDATE … SET next_due_at = <next> WHERE pk = … AND next_due_at = <due>``
   (a second tick process, or a restarted worker, changes no row and stops there);
2. due times older than ``AGENTFLOW_SCHEDULE_MISFIRE_SECONDS`` were missed (AgentFlow was down):
   each is recorded (``missed``); by the ``catch_up`` policy the newest one inside the catch-up
   window runs once (``caught_up``) or none does;
3. a ``ScheduleFire`` row (unique per trigger and due time), then the overlap policy and
   :func:`scheduler.queue.enqueue` (trigger ``schedule``, dedupe key per trigger and due time),
   so priority, limits, pauses, the emergency stop and audit apply as to any run.

``cancel`` (the overlap policy) cancels the unfinished runs through
:func:`scheduler.controls.cancel_run` after the claim commits, then queues. ``buffer`` records a
``buffered`` fire and queues it when the running one finishes (``run_finished``), which also
counts consecutive failures for pause-on-failure.

After a pass, :func:`arm` sends one ``fire_schedules`` message with an ETA at the next
``fire_at`` (at most one per ETA, a Redis key), so a fire does not wait for beat's safety-net
interval (``AGENTFLOW_SCHEDULE_TICK_SECONDS``).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import logging
import re
import zoneinfo
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any

from cronsim import CronSim, CronSimError
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from .models import Schedule, ScheduleFire

log = logging.getLogger("agentflow.scheduler")

BATCH = 500  # triggers per pass
MISSED_RECORD_MAX = 100  # missed due times recorded one by one per pass; the rest are counted
SCAN_MAX = 100_000  # due times walked at most while skipping a long downtime


# --- time zones, cron, intervals ----------------------------------------------------------------


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def zone_problem(name: str) -> str | None:
    """Why ``name`` is not a usable IANA time zone, or None."""
    name = (name or "").strip()
    if not name:
        return "a time zone is needed (an IANA name such as Europe/Berlin or UTC)"
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(name, sorted(_zone_names()), n=1)
        hint = f"; did you mean {close[0]}?" if close else " (an IANA name such as Europe/Berlin or UTC)"
        return f"unknown time zone {name!r}{hint}"
    return None


def zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name or "UTC")


def cron_problem(expr: str) -> str | None:
    """Why ``expr`` is not a 5-field cron expression cronsim accepts, or None."""
    expr = (expr or "").strip()
    if not expr:
        return "a cron expression is needed (5 fields: minute hour day-of-month month day-of-week)"
    fields = expr.split()
    if len(fields) != 5:
        return (
            f"{expr!r} has {len(fields)} field(s); a cron expression has 5: "
            "minute hour day-of-month month day-of-week"
        )
    try:
        next(CronSim(expr, datetime(2026, 1, 1, tzinfo=UTC)))
    except CronSimError as exc:
        return f"invalid cron {expr!r}: {_cron_detail(fields, str(exc))}"
    except StopIteration:
        return f"cron {expr!r} never fires"
    return None


# (name, lowest, highest, names) of the 5 fields, as cronsim reads them (day-of-week 7 is Sunday too)
CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    ("day-of-week", 0, 7, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)


def _cron_detail(fields: list[str], refusal: str) -> str:
    """What cronsim's "Bad minute" means for these fields: the value, item or range at fault and
    the field's range ("minute 61 is out of range (0-59)")."""
    for index, (name, lo, hi, names) in enumerate(CRON_FIELDS):
        if refusal != f"Bad {name}":
            continue
        problem = _cron_field_problem(fields[index], name, lo, hi, names)
        if problem:
            return problem
        if name == "day-of-month" and fields[2].isascii() and fields[2].replace(",", "").isdigit():
            return f"day-of-month {fields[2]!r} never occurs in month {fields[3]!r}"
        return f"the {name} field {fields[index]!r} is not valid ({lo}-{hi})"
    return refusal[:1].lower() + refusal[1:]  # "wrong number of fields", …


def _cron_field_problem(text: str, name: str, lo: int, hi: int, names: tuple[str, ...]) -> str | None:
    span = f"{lo}-{hi}" + (f" or {names[0]}-{names[-1]}" if names else "")
    for item in text.split(","):
        if not item:
            return f"the {name} field {text!r} has an empty item"
        if item.upper() in ("L", "LW"):
            continue
        if "#" in item:  # the nth weekday of the month: 5#2
            item, _, nth = item.partition("#")
            if not (nth.isascii() and nth.isdigit() and 1 <= int(nth) <= 5):
                return f"in the {name} {item}#{nth}, the week of the month is 1-5, not {nth!r}"
        elif item[-1:].upper() in ("L", "W") and item[:-1].isascii() and item[:-1].isdigit():
            item = item[:-1]  # the last / nearest weekday: 5L, 15W
        body, slash, step = item.partition("/")
        if slash and not (step.isascii() and step.isdigit()):
            return f"the {name} step {step!r} in {item!r} is not a number"
        if slash and int(step) < 1:
            return f"the {name} step in {item!r} is 0: a step is at least 1"
        if body == "*":
            continue
        ends = body.split("-")
        if len(ends) > 2:
            return f"{item!r} is not a {name} value or range ({span})"
        values = []
        for end in ends:
            upper = end.upper()
            if upper in names:
                values.append(names.index(upper) + (1 if name == "month" else 0))
                continue
            if not (end.isascii() and end.isdigit()):
                return f"{end!r} is not a {name} ({span})"
            if not lo <= int(end) <= hi:
                return f"{name} {int(end)} is out of range ({span})"
            values.append(int(end))
        if len(values) == 2 and values[0] > values[1]:
            return f"the {name} range {body!r} runs backwards"
    return None


UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_WORDS = {
    "second": "s", "seconds": "s", "sec": "s", "min": "m", "minute": "m", "minutes": "m",
    "hour": "h", "hours": "h", "day": "d", "days": "d", "week": "w", "weeks": "w",
}  # fmt: skip
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class Every:
    """A parsed ``every``: an interval in seconds (with an optional time of day), or a cron."""

    seconds: int | None = None
    at: time | None = None
    cron: str = ""


def parse_time(text: str) -> time:
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})(?::00)?\s*", str(text or ""))
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValidationError(f"{text!r} is not a time of day (HH:MM, 00:00 to 23:59)", code="bad_time")
    return time(int(match[1]), int(match[2]))


def parse_every(text: str, at: str = "") -> Every:
    """``"30m"``, ``"1d"`` (with ``at="09:00"``), ``"90s"``, ``"2h"``, ``"every 30 minutes"``,
    ``"hour"``, ``"daily at 09:00"``, ``"every Monday 00:00"`` (→ the cron ``0 0 * * 1``)."""
    raw = (text or "").strip().lower()
    words = re.sub(r"^every\s+", "", raw)
    if words.startswith("daily"):
        words = "1d" + words[5:]
    match_at = re.fullmatch(r"(.*?)\s+at\s+(\d{1,2}:\d{2})", words)
    if match_at:
        words, at = match_at[1], at or match_at[2]
    for i, day in enumerate(WEEKDAYS):
        found = re.fullmatch(rf"{day}s?(?:\s+(\d{{1,2}}:\d{{2}}))?", words)
        if found:
            when = parse_time(found[1] or at or "00:00")
            return Every(cron=f"{when.minute} {when.hour} * * {(i + 1) % 7}")
    match = re.fullmatch(r"(\d*)\s*([a-z]+)", words)
    unit = match and (match[2] if match[2] in UNITS else _WORDS.get(match[2]))
    if not match or not unit:
        raise ValidationError(
            f'cannot read every = {text!r}: say e.g. 30s, 30m, 2h, 1d (with at = "09:00"), '
            '"every Monday 00:00"',
            code="bad_every",
        )
    n = int(match[1] or 1)
    seconds = n * UNITS[unit]
    if seconds < 1:
        raise ValidationError("an interval is at least 1 second", code="bad_every")
    when = parse_time(at) if at else None  # type: ignore[assignment]
    if when is not None and seconds % 86400:
        raise ValidationError(
            f'at = {at!r} needs an interval of whole days (every = "1d", "7d"…), not {text!r}',
            code="bad_every",
        )
    return Every(seconds=seconds, at=when)


def format_every(seconds: int) -> str:
    """The compact form of an interval: 30m, 2h, 1d, 90s."""
    for unit in ("w", "d", "h", "m"):
        if seconds % UNITS[unit] == 0:
            return f"{seconds // UNITS[unit]}{unit}"
    return f"{seconds}s"


MAX_SECONDS = 3650 * 86400  # an interval or a catch-up window: ten years at most
MAX_JITTER = 7 * 86400
AT_YEARS = (1970, 9000)  # a one-off time, and its jitter, stay far from datetime's limits


def validate_schedule(s: Schedule) -> dict[str, list[str]]:
    """What is wrong with a trigger's definition, by field (empty: nothing). The one check the
    admin form, the API and the config import share."""
    problems: dict[str, list[str]] = {}
    tz = zone_problem(s.timezone)
    if tz:
        problems["timezone"] = [tz]
    if s.kind == Schedule.Kind.CRON:
        bad = cron_problem(s.cron)
        if bad:
            problems["cron"] = [bad]
    elif s.kind == Schedule.Kind.INTERVAL:
        if not s.every_seconds or s.every_seconds < 1:
            problems["every_seconds"] = ["an interval needs its length (at least 1 second)"]
        elif s.every_seconds > MAX_SECONDS:
            problems["every_seconds"] = [f"an interval is at most {MAX_SECONDS // 86400} days"]
        elif s.at_time is not None and s.every_seconds % 86400:
            problems["at_time"] = ["a time of day needs an interval of whole days (1d, 7d…)"]
    elif s.kind == Schedule.Kind.AT:
        if s.at_datetime is None:
            problems["at_datetime"] = ["a one-off trigger needs its date and time"]
        elif not AT_YEARS[0] <= s.at_datetime.year <= AT_YEARS[1]:
            problems["at_datetime"] = [
                f"a one-off time lies between the years {AT_YEARS[0]} and {AT_YEARS[1]}"
            ]
    else:
        problems["kind"] = [f"unknown kind {s.kind!r} (one of {', '.join(Schedule.Kind.values)})"]
    # Bounded so every time computed from them stays a datetime (a larger one overflowed).
    if (s.jitter_seconds or 0) > MAX_JITTER:
        problems["jitter_seconds"] = [f"a jitter is at most {MAX_JITTER // 86400} days"]
    if (s.catch_up_window_seconds or 0) > MAX_SECONDS:
        problems["catch_up_window_seconds"] = [f"a catch-up window is at most {MAX_SECONDS // 86400} days"]
    if not re.fullmatch(r"[-a-zA-Z0-9_]+", s.name or ""):
        problems["name"] = ["a name of letters, digits, - and _"]
    return problems


def _on_day(d: date, at: time, tz: zoneinfo.ZoneInfo) -> datetime:
    """``at`` on local day ``d`` as cron would fire it (a time in the spring-forward gap: when the
    gap ends; in the fall-back repeat: the first)."""
    start = datetime.combine(d, time(0, 0), tz) - timedelta(minutes=1)
    return next(CronSim(f"{at.minute} {at.hour} * * *", start))


def iter_after(s: Schedule, after: datetime) -> Iterator[datetime]:
    """The trigger's due times strictly after ``after``, ascending, aware (in its zone)."""
    tz = zone(s.timezone)
    if s.kind == Schedule.Kind.CRON:
        yield from CronSim(s.cron, after.astimezone(tz))
    elif s.kind == Schedule.Kind.AT:
        if s.at_datetime is not None and s.at_datetime > after:
            yield s.at_datetime.astimezone(tz)
    elif s.every_seconds:
        anchor = s.anchor_at or after
        if s.at_time is None:
            step = timedelta(seconds=s.every_seconds)
            k = max(0, int((after - anchor) // step))
            t = anchor + k * step
            while True:
                if t > after:
                    yield t.astimezone(tz)
                t += step
        days = s.every_seconds // 86400
        first = anchor.astimezone(tz).date()
        k = max(0, (after.astimezone(tz).date() - first).days // days - 1)
        while True:
            t = _on_day(first + timedelta(days=k * days), s.at_time, tz)
            if t > after and t >= anchor:
                yield t
            k += 1


def next_after(s: Schedule, after: datetime) -> datetime | None:
    try:
        return next(iter_after(s, after))
    except (StopIteration, CronSimError, ValueError, zoneinfo.ZoneInfoNotFoundError):
        return None


def preview(s: Schedule, n: int = 10, after: datetime | None = None) -> list[datetime]:
    """The next ``n`` due times (in the trigger's zone)."""
    out: list[datetime] = []
    try:
        for t in iter_after(s, after or timezone.now()):
            out.append(t)
            if len(out) >= n:
                break
    except (CronSimError, ValueError, zoneinfo.ZoneInfoNotFoundError):
        return []
    return out


def jitter(s: Schedule, due: datetime) -> timedelta:
    """A stable offset in [0, jitter_seconds] for this trigger and due time (every process
    computes the same one)."""
    if not s.jitter_seconds:
        return timedelta(0)
    digest = hashlib.blake2b(f"{s.pk}:{due.timestamp()}".encode(), digest_size=4).digest()
    return timedelta(milliseconds=int.from_bytes(digest) % (s.jitter_seconds * 1000 + 1))


def plan_next(s: Schedule, now: datetime | None = None) -> None:
    """Set ``next_due_at`` / ``fire_at`` from the definition (on save: a changed definition
    replans; an unchanged one keeps its pending due time so a missed one is still seen)."""
    now = now or timezone.now()
    if validate_schedule(s):
        s.next_due_at = s.fire_at = None
        return
    keep = s.next_due_at
    if keep is not None and s.pk is not None:
        old = Schedule.objects.filter(pk=s.pk).values(*DEFINITION).first()
        if old is not None and all(old[f] == getattr(s, f) for f in DEFINITION):
            return
    s.next_due_at = next_after(s, now)
    s.fire_at = s.next_due_at + jitter(s, s.next_due_at) if s.next_due_at else None


DEFINITION = ("kind", "cron", "every_seconds", "at_time", "at_datetime", "timezone", "anchor_at")


# --- words --------------------------------------------------------------------------------------


def describe(s: Schedule) -> str:
    """A human sentence: "At 09:00, Monday through Friday", "Every 30 minutes", "Every day at 09:00"."""
    if s.kind == Schedule.Kind.CRON:
        return describe_cron(s.cron)
    if s.kind == Schedule.Kind.AT:
        if s.at_datetime is None:
            return "Once (no time set)"
        return f"Once, at {s.at_datetime.astimezone(zone(s.timezone)):%Y-%m-%d %H:%M %Z}"
    if not s.every_seconds:
        return "Every … (no interval set)"
    seconds = s.every_seconds
    if s.at_time is not None:
        days = seconds // 86400
        span = "day" if days == 1 else ("week" if days == 7 else f"{days} days")
        return f"Every {span} at {s.at_time:%H:%M}"
    for unit, name in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds % unit == 0:
            n = seconds // unit
            return f"Every {name}" if n == 1 else f"Every {n} {name}s"
    return f"Every {seconds} seconds"  # pragma: no cover - the loop ends at 1


def describe_cron(expr: str) -> str:
    from cron_descriptor import ExpressionDescriptor, Options  # type: ignore[import-untyped]

    options = Options()
    options.use_24hour_time_format = True
    options.verbose = False
    try:
        return str(ExpressionDescriptor(expr, options).get_description())
    except Exception:  # cron-descriptor raises its own family; the sentence is optional
        return expr


def expression(s: Schedule) -> str:
    """The definition as written: the cron, "every 30m", "every 1d at 09:00", "at …"."""
    if s.kind == Schedule.Kind.CRON:
        return s.cron
    if s.kind == Schedule.Kind.AT:
        return f"at {s.at_datetime.astimezone(zone(s.timezone)):%Y-%m-%d %H:%M}" if s.at_datetime else "at —"
    text = f"every {format_every(s.every_seconds or 0)}"
    return text + (f" at {s.at_time:%H:%M}" if s.at_time else "")


# --- firing -------------------------------------------------------------------------------------


@dataclass
class FireReport:
    fired: int = 0
    caught_up: int = 0
    missed: int = 0
    skipped: int = 0
    buffered: int = 0
    failed: int = 0
    lost_race: int = 0
    late_ms: list[float] = field(default_factory=list)


def _misfire() -> timedelta:
    return timedelta(seconds=settings.AGENTFLOW_SCHEDULE_MISFIRE_SECONDS)


def fire_due(now: datetime | None = None) -> FireReport:
    """One pass: every active trigger whose ``fire_at`` has passed, fired once per due time.

    All of them in one transaction (claims, fire rows, one ``enqueue_many``): 100 triggers due
    at the same minute are queued within ~0.1 s instead of one commit each. Should the batch
    fail (a fire row already written, a job refused meanwhile), nothing of it stays and each
    trigger is fired on its own."""
    now = now or timezone.now()
    report = FireReport()
    due = list(Schedule.objects.due(now).select_related("job").order_by("fire_at", "pk")[:BATCH])
    if not due:
        return report
    try:
        _fire_batch(due, now, report)
        return report
    except (IntegrityError, ValidationError) as exc:
        log.warning("schedules: the batch of %s was refused (%s); firing one by one", len(due), exc)
        report = FireReport()
    for s in due:
        s.refresh_from_db()
        try:
            fire_one(s, now, report)
        except Exception:  # one broken trigger must not stop the others
            log.exception("schedule %s: the fire failed", s.label)
    return report


@dataclass
class _Plan:
    due: datetime
    upcoming: datetime | None
    fire_time: datetime | None
    target: datetime | None
    caught: bool
    missed: list[datetime]


def _plan(s: Schedule, now: datetime) -> _Plan | None:
    due = s.next_due_at
    if due is None:
        return None
    passed, upcoming = _walk(s, due, now)
    grace = _misfire() + timedelta(seconds=s.jitter_seconds)
    on_time = [t for t in passed if now - t <= grace]
    target: datetime | None = on_time[-1] if on_time else None
    caught = False
    if target is None and s.catch_up == Schedule.CatchUp.ONCE:
        window = timedelta(seconds=s.catch_up_window_seconds)
        inside = [t for t in passed if now - t <= window]
        target, caught = (inside[-1], True) if inside else (None, False)
    # Several on-time due times in one pass (a 1 s interval and a slow tick): the newest fires,
    # the others are recorded as missed.
    missed = [t for t in passed if t != target]
    fire_time = upcoming + jitter(s, upcoming) if upcoming else None
    return _Plan(due, upcoming, fire_time, target, caught, missed)


def _claim(s: Schedule, plan: _Plan, now: datetime) -> bool:
    """The conditional UPDATE: only the process that moves ``next_due_at`` on fires this due time."""
    claimed = Schedule.objects.filter(pk=s.pk, next_due_at=plan.due).update(
        next_due_at=plan.upcoming, fire_at=plan.fire_time, last_fire_at=now
    )
    if claimed:
        s.next_due_at, s.fire_at, s.last_fire_at = plan.upcoming, plan.fire_time, now
    return bool(claimed)


def _fire_row(s: Schedule, plan: _Plan, now: datetime) -> ScheduleFire | None:
    if plan.target is None:
        return None
    outcome = ScheduleFire.Outcome.CAUGHT_UP if plan.caught else ScheduleFire.Outcome.FIRED
    return ScheduleFire(trigger=s, due_at=plan.target, fired_at=now, outcome=outcome)


def _fire_batch(due: list[Schedule], now: datetime, report: FireReport) -> None:
    from scheduler import queue
    from scheduler.models import Run

    cancels: list[tuple[Schedule, ScheduleFire, list[Any]]] = []
    with transaction.atomic():
        fires: list[tuple[Schedule, ScheduleFire]] = []
        rows: list[ScheduleFire] = []
        for s in due:
            plan = _plan(s, now)
            if plan is None:
                continue
            if not _claim(s, plan, now):
                report.lost_race += 1
                continue
            rows += _missed_rows(s, plan.missed, now, plan.caught)
            report.missed += len(plan.missed)
            fire = _fire_row(s, plan, now)
            if fire is not None:
                fires.append((s, fire))
        ScheduleFire.objects.bulk_create(rows + [f for _, f in fires])
        watched = [s.pk for s, _ in fires if s.overlap != Schedule.Overlap.ALLOW]
        active: dict[int, list[Any]] = {}
        if watched:
            for run in (
                Run.objects.filter(schedule_fires__trigger_id__in=watched, status__in=Run.NOT_FINAL)
                .annotate(trigger_pk=F("schedule_fires__trigger_id"))
                .order_by("id")
            ):
                active.setdefault(run.trigger_pk, []).append(run)
        to_queue: list[tuple[Schedule, ScheduleFire]] = []
        for s, fire in fires:
            runs = active.get(s.pk, [])
            if runs and s.overlap == Schedule.Overlap.CANCEL:
                fire.detail = "cancelled " + ", ".join(f"run {r.pk}" for r in runs)
                fire.save(update_fields=["detail"])
                cancels.append((s, fire, runs))
            elif runs:
                _hold_back(s, fire, runs, report)
            else:
                to_queue.append((s, fire))
        if to_queue:
            specs = [
                {
                    "job": s.job,
                    "input": _input(s, f),
                    "dedupe_key": _dedupe_key(s, f),
                    "triggered_by": s.label,
                }
                for s, f in to_queue
            ]
            made = queue.enqueue_many(specs, trigger=Run.Trigger.SCHEDULE)
            for (s, fire), run in zip(to_queue, made, strict=True):  # type: ignore[assignment]
                fire.run, s.last_run = run, run
                report.late_ms.append((run.queued_at - fire.due_at).total_seconds() * 1000)
                if fire.outcome == ScheduleFire.Outcome.CAUGHT_UP:
                    report.caught_up += 1
                else:
                    report.fired += 1
            ScheduleFire.objects.bulk_update([f for _, f in to_queue], ["run"])
            Schedule.objects.bulk_update([s for s, _ in to_queue], ["last_run"])
    for s, fire, runs in cancels:
        _cancel_then_queue(s, fire, runs, report)


def _unfinished(s: Schedule) -> list[Any]:
    from scheduler.models import Run

    return list(
        Run.objects.filter(schedule_fires__trigger=s, status__in=Run.NOT_FINAL).distinct().order_by("id")
    )


def _walk(s: Schedule, due: datetime, now: datetime) -> tuple[list[datetime], datetime | None]:
    """The due times from ``due`` up to ``now`` (those passed) and the first one after ``now``."""
    passed = [due]
    upcoming = None
    for i, t in enumerate(iter_after(s, due)):
        if t > now:
            upcoming = t
            break
        passed.append(t)
        if i > SCAN_MAX:
            upcoming = next_after(s, now)
            break
    return passed, upcoming


def fire_one(s: Schedule, now: datetime, report: FireReport | None = None) -> ScheduleFire | None:
    """Fire one trigger's pending due time(s) in its own transaction; None when another
    process claimed them first (or nothing was to run)."""
    report = report or FireReport()
    plan = _plan(s, now)
    if plan is None:
        return None
    cancel: list[Any] = []
    with transaction.atomic():
        if not _claim(s, plan, now):
            report.lost_race += 1
            return None
        try:
            with transaction.atomic():
                ScheduleFire.objects.bulk_create(_missed_rows(s, plan.missed, now, plan.caught))
                fire = _fire_row(s, plan, now)
                if fire is not None:
                    fire.save()
        except IntegrityError:  # a fire row of this due time exists: fired elsewhere already
            report.lost_race += 1
            return None
        report.missed += len(plan.missed)
        if fire is None:
            return None
        cancel = _apply_overlap(s, fire, report)
    if cancel:
        _cancel_then_queue(s, fire, cancel, report)
    elif fire.run_id is not None:
        report.late_ms.append((fire.run.queued_at - fire.due_at).total_seconds() * 1000)  # type: ignore[union-attr]
    return fire


def _missed_rows(s: Schedule, missed: Sequence[datetime], now: datetime, caught: bool) -> list[ScheduleFire]:
    if not missed:
        return []
    why = "AgentFlow was not firing at that time"
    policy = (
        "the newest inside the catch-up window ran" if caught else f"catch-up: {s.get_catch_up_display()}"
    )
    rows = [
        ScheduleFire(
            trigger=s, due_at=t, fired_at=now, outcome=ScheduleFire.Outcome.MISSED, detail=f"{why}; {policy}"
        )
        for t in missed[-MISSED_RECORD_MAX:]
    ]
    if len(missed) > MISSED_RECORD_MAX:
        rows[0].detail += f" ({len(missed) - MISSED_RECORD_MAX} earlier missed due times not listed)"
    return rows


def _dedupe_key(s: Schedule, fire: ScheduleFire) -> str:
    return f"schedule:{s.pk}:{fire.due_at.timestamp():.0f}"


def _input(s: Schedule, fire: ScheduleFire) -> dict[str, Any]:
    return {
        "due_at": fire.due_at.astimezone(zone(s.timezone)).isoformat(),
        "trigger": s.name,
        "schedule": expression(s),
        "timezone": s.timezone,
        "fire": fire.outcome,
    }


def _queue(s: Schedule, fire: ScheduleFire, report: FireReport) -> None:
    from scheduler import queue
    from scheduler.models import Run

    try:
        run = queue.enqueue(
            s.job,
            trigger=Run.Trigger.SCHEDULE,
            triggered_by=s.label,
            input=_input(s, fire),
            dedupe_key=_dedupe_key(s, fire),
        )
    except ValidationError as exc:
        fire.outcome, fire.detail = ScheduleFire.Outcome.FAILED, "; ".join(exc.messages)
        fire.save(update_fields=["outcome", "detail"])
        report.failed += 1
        return
    fire.run = run
    fire.save(update_fields=["run"])
    Schedule.objects.filter(pk=s.pk).update(last_run=run)
    s.last_run = run
    if fire.outcome == ScheduleFire.Outcome.CAUGHT_UP:
        report.caught_up += 1
    else:
        report.fired += 1


def _hold_back(s: Schedule, fire: ScheduleFire, active: list[Any], report: FireReport) -> None:
    """A run of the trigger is unfinished: skip (``skip``) or buffer one (``buffer``)."""
    if s.overlap == Schedule.Overlap.BUFFER:
        waiting = s.fires.filter(outcome=ScheduleFire.Outcome.BUFFERED, run__isnull=True).exclude(pk=fire.pk)
        if waiting.exists():
            fire.outcome = ScheduleFire.Outcome.SKIPPED
            fire.detail = f"run {active[0].pk} is still {active[0].status} and one fire is already buffered"
            report.skipped += 1
        else:
            fire.outcome = ScheduleFire.Outcome.BUFFERED
            fire.detail = f"waits for run {active[0].pk}"
            report.buffered += 1
    else:
        fire.outcome = ScheduleFire.Outcome.SKIPPED
        fire.detail = f"run {active[0].pk} is still {active[0].status}"
        report.skipped += 1
    fire.save(update_fields=["outcome", "detail"])


def _apply_overlap(s: Schedule, fire: ScheduleFire, report: FireReport) -> list[Any]:
    """Queue the fire's run by the overlap policy; returns the runs to cancel first (``cancel``)."""
    active = [] if s.overlap == Schedule.Overlap.ALLOW else _unfinished(s)
    if active and s.overlap == Schedule.Overlap.CANCEL:
        fire.detail = "cancelled " + ", ".join(f"run {r.pk}" for r in active)
        fire.save(update_fields=["detail"])
        return active
    if active:
        _hold_back(s, fire, active, report)
        return []
    _queue(s, fire, report)
    return []


def _cancel_then_queue(s: Schedule, fire: ScheduleFire, runs: list[Any], report: FireReport) -> None:
    from scheduler import audit, controls

    actor = audit.Actor.system(label=f"schedule {s.label}")
    for run in runs:
        with contextlib.suppress(ValidationError):  # finished meanwhile
            controls.cancel_run(
                actor, run, reason=f"overlap policy: a new fire due {fire.due_at.isoformat()}"
            )
    with transaction.atomic():
        _queue(s, fire, report)


# --- after a run: buffered fire, failure count, pause ---------------------------------------------


def on_run_finished(sender: Any, run: Any, **kwargs: Any) -> None:
    """``scheduler.signals.run_finished``: a run a schedule made has ended."""
    from scheduler.models import Run

    if run.trigger != Run.Trigger.SCHEDULE:
        return
    fire = ScheduleFire.objects.filter(run_id=run.pk).select_related("trigger", "trigger__job").first()
    if fire is None:
        return
    s = fire.trigger
    failed = run.status in (Run.Status.FAILED, Run.Status.LOST)
    if run.status == Run.Status.SUCCEEDED:
        Schedule.objects.filter(pk=s.pk).update(consecutive_failures=0)
    elif failed:
        Schedule.objects.filter(pk=s.pk).update(consecutive_failures=F("consecutive_failures") + 1)
        s.refresh_from_db(fields=["consecutive_failures", "paused_at", "pause_after_failures"])
        n = s.pause_after_failures
        if n and s.consecutive_failures >= n and s.paused_at is None:
            reason = (
                f"paused after {s.consecutive_failures} consecutive failed runs "
                f"(the last: run {run.pk}, {run.error_class or run.status}: {(run.error or '')[:200]})"
            )
            Schedule.objects.filter(pk=s.pk, paused_at__isnull=True).update(
                paused_at=timezone.now(), paused_reason=reason
            )
            log.warning("schedule %s: %s", s.label, reason)
    buffered = (
        s.fires.filter(outcome=ScheduleFire.Outcome.BUFFERED, run__isnull=True).order_by("due_at").first()
    )
    if buffered is not None and not _unfinished(s):
        with transaction.atomic():
            buffered.detail += f"; started after run {run.pk} ended"
            buffered.save(update_fields=["detail"])
            _queue(s, buffered, FireReport())


def connect() -> None:
    from scheduler import signals

    signals.run_finished.connect(on_run_finished, dispatch_uid="scheduler-schedule-run-finished")


# --- controls (audited) ---------------------------------------------------------------------------


def _target(s: Schedule) -> Any:
    from scheduler.audit import Target

    return Target("schedule", str(s.pk), s.label)


def set_enabled(actor: Any, s: Schedule, enabled: bool, reason: str = "") -> Schedule:
    """Enable (also lifts a pause after failures and plans from now) or disable a trigger."""
    from scheduler import audit

    with audit.control(
        "schedule.enable" if enabled else "schedule.disable", actor, _target(s), reason=reason
    ) as ctl:
        s.refresh_from_db()
        if s.enabled == enabled and (not enabled or s.paused_at is None):
            # as it is: no replan (an enabled trigger keeps its pending due time)
            ctl.note(f"already {'enabled' if enabled else 'disabled'}")
            return s
        s.enabled = enabled
        if enabled:
            was_paused = s.paused_at is not None
            s.paused_at, s.paused_reason, s.consecutive_failures = None, "", 0
            s.next_due_at = None  # replan from now: what passed while disabled is not caught up
            ctl.note("enabled" + (" (the pause after failures lifted)" if was_paused else ""))
        s.save()
        if enabled:
            ctl.note(
                f"enabled; next due {s.next_due_at:%Y-%m-%d %H:%M:%S %Z}"
                if s.next_due_at
                else "enabled; no due time ahead"
            )
    return s


def fire_now(actor: Any, s: Schedule, reason: str = "") -> ScheduleFire:
    """Fire the trigger once now, by hand (recorded ``manual``; its schedule is unchanged)."""
    from scheduler import audit

    with audit.control("schedule.fire_now", actor, _target(s), reason=reason) as ctl:
        with transaction.atomic():
            fire = ScheduleFire.objects.create(
                trigger=s,
                due_at=timezone.now(),
                outcome=ScheduleFire.Outcome.MANUAL,
                detail=f"by {actor.label}",
            )
            report = FireReport()
            _queue(s, fire, report)
        if fire.outcome == ScheduleFire.Outcome.FAILED:
            ctl.fail(fire.detail)
        else:
            ctl.note(f"run {fire.run_id}")
    return fire


def set_paused(actor: Any, s: Schedule, paused: bool, reason: str = "") -> Schedule:
    """Pause a trigger by hand (it stays enabled; nothing fires until resumed) or resume it
    (lifts any pause, also one after failures, and plans from now: what passed is not caught up)."""
    from scheduler import audit

    with audit.control(
        "schedule.pause" if paused else "schedule.resume", actor, _target(s), reason=reason
    ) as ctl:
        s.refresh_from_db()
        if paused and s.paused_at is not None:
            ctl.note(f"already paused ({s.paused_reason})")
        elif paused:
            s.paused_at = timezone.now()
            s.paused_reason = f"paused by {actor.label}" + (f": {reason}" if reason else "")
            s.save()
            ctl.note("paused")
        elif s.paused_at is None:
            ctl.note("not paused")
        else:
            s.paused_at, s.paused_reason, s.consecutive_failures = None, "", 0
            s.next_due_at = None  # replan from now
            s.save()
            ctl.note(
                f"resumed; next due {s.next_due_at:%Y-%m-%d %H:%M:%S %Z}" if s.next_due_at else "resumed"
            )
    return s


# --- writes of the API (audited), in the config file's words ----------------------------------------

# What a trigger is written with: its name, the definition (cron; every, optionally with at; or
# at alone, a one-off date and time), its zone and its policies; ``enabled`` and ``paused`` go
# through set_enabled / set_paused. The words are automation.toml's, read by the same parser.
WRITE_FIELDS = (
    "name",
    "cron",
    "every",
    "at",
    "timezone",
    "overlap",
    "catch_up",
    "catch_up_window",
    "jitter",
    "pause_after_failures",
)
DEFINITION_WORDS = ("cron", "every", "at")
# A model field (or the parser's word) → the word the caller wrote, so an error names it.
_WORD = {
    "trigger": "name",
    "kind": "cron",
    "every_seconds": "every",
    "at_time": "at",
    "at_datetime": "at",
    "catch_up_window_seconds": "catch_up_window",
    "jitter_seconds": "jitter",
}


def invalid(problems: Iterable[tuple[str, str]]) -> ValidationError:
    """One ValidationError (code ``invalid_schedule``) listing ``field: problem; …``."""
    text = "; ".join(f"{_WORD.get(f, f)}: {m}" for f, m in problems)
    return ValidationError(text, code="invalid_schedule")


def parse_fields(part: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A definition in the config file's words (``cron`` / ``every`` + ``at`` / ``at``,
    ``timezone``, the policies) as model fields, or :func:`invalid` saying what is wrong."""
    if not any(k in part for k in DEFINITION_WORDS):
        raise invalid([("cron", "give cron, every or at (a one-off date and time)")])
    definition, problems = _definition(part, name)
    if problems or definition is None:
        raise invalid(problems)
    return definition.fields


def check(s: Schedule, *, exclude: Sequence[str] = ()) -> None:
    """The model's validation (:func:`validate_schedule`, which ``clean`` runs, then the field
    checks) with its messages in the caller's words: the definition's own first, so a too long
    interval says so and not only the database's integer range."""
    problems = validate_schedule(s)
    if problems:
        raise invalid((f, m) for f, ms in problems.items() for m in ms)
    try:
        s.full_clean(exclude=list(exclude))
    except ValidationError as exc:
        raise invalid((f, m) for f, ms in exc.message_dict.items() for m in ms) from None


def _free_name(job: Any) -> str:
    taken = set(Schedule.objects.filter(job=job).values_list("name", flat=True))
    if "schedule" not in taken:
        return "schedule"
    return next(f"schedule-{n}" for n in range(2, len(taken) + 3) if f"schedule-{n}" not in taken)


def _checked_save(s: Schedule) -> None:
    """:func:`check`, the name free in its job (said so, not as the constraint's words), save."""
    clash = invalid([("name", f"job {s.job.name!r} already has a trigger named {s.name!r}")])
    if Schedule.objects.filter(job_id=s.job_id, name=s.name).exclude(pk=s.pk).exists():
        raise clash
    check(s)
    try:
        with transaction.atomic():
            s.save()
    except IntegrityError:  # created meanwhile
        raise clash from None


def _clear_definition(s: Schedule) -> None:
    s.cron, s.every_seconds, s.at_time, s.at_datetime = "", None, None, None


def create_schedule(actor: Any, job: Any, body: Mapping[str, Any]) -> Schedule:
    """A new trigger of ``job`` from :data:`WRITE_FIELDS` (and ``enabled``), validated as the
    admin and the import validate it; the name defaults to the job's first free ``schedule[-N]``."""
    from scheduler import audit

    name = str(body["name"]) if body.get("name") is not None else _free_name(job)
    target = audit.Target("schedule", "", f"{job.name}:{name}")
    with audit.control("schedule.create", actor, target) as ctl:
        fields = parse_fields({k: v for k, v in body.items() if k not in ("name", "enabled")}, name)
        s = Schedule(job=job, **fields)
        if "enabled" in body:
            s.enabled = bool(body["enabled"])
        _checked_save(s)
        ctl.note(
            f"schedule {s.pk}: {expression(s)} ({s.timezone}); next due {_when(s.next_due_at, s.timezone)}"
        )
    return s


def change_schedule(actor: Any, s: Schedule, body: Mapping[str, Any]) -> Schedule:
    """Change a trigger's name, definition, zone or policies (:data:`WRITE_FIELDS`): the fields
    given replace those; a definition is given whole (``cron``, or ``every`` with its ``at``, or
    ``at``). A changed definition plans from now."""
    from scheduler import audit

    with audit.control("schedule.change", actor, _target(s)) as ctl:
        s.refresh_from_db()
        part = {k: v for k, v in _entry(s).items() if k not in ("trigger", "schedule_enabled")}
        new_definition = any(k in body for k in DEFINITION_WORDS)
        if new_definition:
            for word in DEFINITION_WORDS:
                part.pop(word, None)
        part.update((k, v) for k, v in body.items() if k != "name")
        fields = parse_fields(part, str(body["name"]) if "name" in body else s.name)
        before = {k: getattr(s, k) for k in (*DEFINITION, *fields)}
        if new_definition:
            _clear_definition(s)
        for k, v in fields.items():
            setattr(s, k, v)
        _checked_save(s)
        diff = [f"{k} {before[k]!r} → {getattr(s, k)!r}" for k in before if before[k] != getattr(s, k)]
        ctl.note("; ".join(diff) if diff else "nothing changed")
    return s


def delete_schedule(actor: Any, s: Schedule, reason: str = "") -> None:
    """Delete a trigger and its fire history (the runs it made stay)."""
    from scheduler import audit

    with audit.control("schedule.delete", actor, _target(s), reason=reason) as ctl:
        ctl.note(f"{expression(s)} ({s.timezone}); {s.fires.count()} fire(s) recorded")
        s.delete()


# --- the wake-up ahead -----------------------------------------------------------------------------


def arm(now: datetime | None = None) -> datetime | None:
    """Send one ``fire_schedules`` message due at the earliest ``fire_at`` within the next
    ``AGENTFLOW_SCHEDULE_TICK_SECONDS`` × 3 (one per ETA: a Redis key); returns that time."""
    if not settings.AGENTFLOW_SCHEDULE_ARM:
        return None
    now = now or timezone.now()
    horizon = now + timedelta(seconds=settings.AGENTFLOW_SCHEDULE_TICK_SECONDS * 3)
    upcoming = (
        Schedule.objects.active()
        .filter(fire_at__gt=now, fire_at__lte=horizon)
        .order_by("fire_at")
        .values_list("fire_at", flat=True)
        .first()
    )
    if upcoming is None:
        return None
    from agentflow.lib import redis as redis_lib
    from scheduler import tasks

    stamp = f"{upcoming.timestamp():.3f}"
    try:
        fresh = redis_lib.get_redis().set(redis_lib.key("schedules", "armed", stamp), "1", nx=True, ex=600)
    except Exception:
        log.warning("schedules: Redis unreachable, the next fire waits for beat", exc_info=True)
        return None
    if fresh:
        try:
            tasks.fire_schedules.apply_async(
                eta=upcoming,
                expires=upcoming + timedelta(seconds=60),
                queue=f"{settings.REDIS_PREFIX}.urgent",
            )
        except Exception:
            log.warning("schedules: could not send the wake-up (broker down?)", exc_info=True)
            return None
    return upcoming


# --- status and automation as code -------------------------------------------------------------------


def _when(t: datetime | None, tz: str) -> str:
    return f"{t.astimezone(zone(tz)):%Y-%m-%d %H:%M %Z}" if t else "—"


def status_rows() -> list[dict[str, str]]:
    rows = []
    for s in Schedule.objects.filter(enabled=True).select_related("job", "last_run").order_by("next_due_at"):
        last = ScheduleFire.objects.filter(trigger=s).exclude(outcome=ScheduleFire.Outcome.MISSED).first()
        rows.append(
            {
                "job": s.job.name,
                "trigger": s.name,
                "schedule": f"{expression(s)} ({s.timezone})",
                "next": "paused" if s.paused_at else _when(s.next_due_at, s.timezone),
                "last": (
                    f"{_when(last.due_at, s.timezone)} {last.outcome}"
                    + (f" run {last.run_id} {last.run.status}" if last.run_id and last.run else "")
                )
                if last
                else "never",
            }
        )
    return rows


CONFIG_KEY = "schedule.jobs"
POLICY_FIELDS = ("overlap", "catch_up", "catch_up_window", "jitter", "pause_after_failures")


def export_entries() -> list[dict[str, Any]]:
    """One entry per job's first schedule (``name`` = the job); a job with several schedules
    exports its others as ``schedules = [...]`` tables."""
    out: list[dict[str, Any]] = []
    for _job_id, group in _by_job():
        first, rest = group[0], group[1:]
        entry = {"name": first.job.name, **_entry(first)}
        if rest:
            entry["schedules"] = [{"trigger": s.name, **_entry(s)} for s in rest]
        out.append(entry)
    return out


def _by_job() -> list[tuple[int, list[Schedule]]]:
    groups: dict[int, list[Schedule]] = {}
    for s in Schedule.objects.select_related("job").order_by("job__name", "pk"):
        groups.setdefault(s.job_id, []).append(s)
    return list(groups.items())


def _entry(s: Schedule) -> dict[str, Any]:
    e: dict[str, Any] = {}
    if s.kind == Schedule.Kind.CRON:
        e["cron"] = s.cron
    elif s.kind == Schedule.Kind.INTERVAL:
        e["every"] = format_every(s.every_seconds or 0)
        if s.at_time:
            e["at"] = f"{s.at_time:%H:%M}"
    else:
        e["at"] = (
            s.at_datetime.astimezone(zone(s.timezone)).replace(tzinfo=None).isoformat()
            if s.at_datetime
            else ""
        )
    e["timezone"] = s.timezone
    if s.name != "schedule":
        e["trigger"] = s.name
    e["overlap"] = s.overlap
    e["catch_up"] = s.catch_up
    # 0 as a number: "0s" is no duration the reader takes (an interval is at least 1 second)
    e["catch_up_window"] = format_every(s.catch_up_window_seconds) if s.catch_up_window_seconds else 0
    if s.jitter_seconds:
        e["jitter"] = format_every(s.jitter_seconds)
    if s.pause_after_failures:
        e["pause_after_failures"] = s.pause_after_failures
    if not s.enabled:
        e["schedule_enabled"] = False
    return e


@dataclass
class Definition:
    """A schedule as the config describes it, validated (no job yet)."""

    trigger: str
    fields: dict[str, Any]


def parse_entry(entry: Mapping[str, Any]) -> tuple[list[Definition], list[tuple[str, str]]]:
    """The schedule(s) of one ``[[automation.schedule.jobs]]`` entry and the (field, problem)
    pairs found; an entry without ``cron`` / ``every`` / ``at`` has none."""
    defs: list[Definition] = []
    problems: list[tuple[str, str]] = []
    parts = [("", entry)] + [
        (f"schedules[{i}].", sub)
        for i, sub in enumerate(entry.get("schedules") or [])
        if isinstance(sub, Mapping)
    ]
    for prefix, part in parts:
        if not any(k in part for k in ("cron", "every", "at")):
            if prefix:
                problems.append((prefix.rstrip("."), "a schedule needs cron, every or at"))
            continue
        default_name = "schedule" if not prefix else f"schedule-{len(defs) + 1}"
        d, bad = _definition(part, str(part.get("trigger") or default_name))
        problems.extend((prefix + f, m) for f, m in bad)
        if d is not None:
            defs.append(d)
    return defs, problems


def _seconds(value: Any, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    every = parse_every(str(value))
    if every.seconds is None or every.at is not None:
        raise ValidationError(f"{what} is a duration such as 30s, 10m, 1h")
    return every.seconds


def _definition(part: Mapping[str, Any], trigger: str) -> tuple[Definition | None, list[tuple[str, str]]]:
    bad: list[tuple[str, str]] = []
    tz = str(part.get("timezone") or "UTC")
    f: dict[str, Any] = {"timezone": tz, "name": trigger}
    if (msg := zone_problem(tz)) is not None:
        bad.append(("timezone", msg))
    given = [k for k in ("cron", "every") if k in part]
    if len(given) > 1:
        bad.append(("cron", "give cron or every, not both"))
    if "cron" in part:
        f.update(kind=Schedule.Kind.CRON, cron=str(part["cron"]).strip())
        if (msg := cron_problem(f["cron"])) is not None:
            bad.append(("cron", msg))
        if "at" in part:
            bad.append(("at", "at goes with every (or alone, for a one-off date and time), not with cron"))
    elif "every" in part:
        try:
            every = parse_every(str(part["every"]), str(part.get("at") or ""))
        except ValidationError as exc:
            bad.append(("every", "; ".join(exc.messages)))
        else:
            if every.cron:
                f.update(kind=Schedule.Kind.CRON, cron=every.cron)
            else:
                f.update(kind=Schedule.Kind.INTERVAL, every_seconds=every.seconds, at_time=every.at)
    else:  # at alone: a one-off date and time, local to the zone
        try:
            when = datetime.fromisoformat(str(part["at"]))
        except ValueError:
            bad.append(("at", f"{part['at']!r} is not a date and time (2026-12-24T18:00)"))
        else:
            if when.tzinfo is None and not bad:
                when = when.replace(tzinfo=zone(tz))
            f.update(kind=Schedule.Kind.AT, at_datetime=when)
    if "overlap" in part:
        if part["overlap"] not in Schedule.Overlap.values:
            bad.append(
                (
                    "overlap",
                    f"unknown overlap {part['overlap']!r} (one of {', '.join(Schedule.Overlap.values)})",
                )
            )
        else:
            f["overlap"] = part["overlap"]
    if "catch_up" in part:
        if part["catch_up"] not in Schedule.CatchUp.values:
            bad.append(
                (
                    "catch_up",
                    f"unknown catch_up {part['catch_up']!r} (one of {', '.join(Schedule.CatchUp.values)})",
                )
            )
        else:
            f["catch_up"] = part["catch_up"]
    for key, attr in (("catch_up_window", "catch_up_window_seconds"), ("jitter", "jitter_seconds")):
        if key in part:
            try:
                f[attr] = _seconds(part[key], key)
            except ValidationError as exc:
                bad.append((key, "; ".join(exc.messages)))
    if "pause_after_failures" in part:
        n = part["pause_after_failures"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            bad.append(("pause_after_failures", "a whole number, 0 for never"))
        else:
            f["pause_after_failures"] = n
    if "schedule_enabled" in part:
        f["enabled"] = bool(part["schedule_enabled"])
    if not re.fullmatch(r"[-a-zA-Z0-9_]+", trigger):
        bad.append(("trigger", "a name of letters, digits, - and _"))
    return (None if bad else Definition(trigger, f)), bad


def _describe_fields(f: Mapping[str, Any]) -> str:
    probe = Schedule(**{k: v for k, v in f.items() if k != "name"})
    return f"{expression(probe)} ({f.get('timezone', 'UTC')})"


def plan_config(entries: Sequence[Mapping[str, Any]], ctx: Any) -> list[Any]:
    from scheduler.automation import Change

    changes: list[Change] = []
    seen: set[str] = set()
    existing = {(s.job.name, s.name): s for s in Schedule.objects.select_related("job")}
    for i, entry in enumerate(entries):
        name = str(entry.get("name") or "")
        defs, problems = parse_entry(entry)
        for fld, msg in problems:
            ctx.error(CONFIG_KEY, i, fld, msg)
        if problems or not name:
            continue
        if defs and ctx.job_names and name not in ctx.job_names:
            ctx.error(CONFIG_KEY, i, "name", f"no job named {name!r} (declare it in this file or create it)")
            continue
        for d in defs:
            key = (name, d.trigger)
            seen.add(f"{name}:{d.trigger}")
            old = existing.get(key)
            label = f"{name}:{d.trigger}"
            if old is None:
                changes.append(Change("create", "schedule", label, _describe_fields(d.fields)))
                continue
            diff = [
                f"{k} {getattr(old, k)!r} → {v!r}"
                for k, v in d.fields.items()
                if k != "name" and getattr(old, k) != v
            ]
            if diff:
                changes.append(Change("change", "schedule", label, "; ".join(diff)))
        if ctx.prune:
            for (job, trig), old in existing.items():
                if job == name and f"{job}:{trig}" not in seen:
                    changes.append(Change("remove", "schedule", f"{job}:{trig}", expression(old)))
    if ctx.prune:
        names = {str(e.get("name") or "") for e in entries}
        for (job, trig), old in existing.items():
            if job not in names:
                changes.append(Change("remove", "schedule", f"{job}:{trig}", expression(old)))
    return changes


def apply_config(entries: Sequence[Mapping[str, Any]], ctx: Any) -> None:
    from scheduler.models import Job

    keep: set[int] = set()
    for entry in entries:
        name = str(entry.get("name") or "")
        defs, problems = parse_entry(entry)
        job = Job.objects.filter(name=name).first()
        if problems or job is None:
            continue
        for d in defs:
            s = Schedule.objects.filter(job=job, name=d.trigger).first() or Schedule(job=job, name=d.trigger)
            for k, v in d.fields.items():
                setattr(s, k, v)
            s.full_clean()
            s.save()
            keep.add(s.pk)
    if ctx.prune:
        names = {str(e.get("name") or "") for e in entries}
        Schedule.objects.exclude(pk__in=keep).filter(job__name__in=names).delete()
        Schedule.objects.exclude(job__name__in=names).delete()


def register() -> None:
    """The status section and the config section (``SchedulerConfig.ready()``)."""
    from scheduler import automation

    automation.register_status(
        automation.StatusSection(
            key="schedules",
            title="Scheduled jobs",
            order=10,
            columns=(
                ("job", "Job"),
                ("trigger", "Trigger"),
                ("schedule", "Schedule"),
                ("next", "Next run"),
                ("last", "Last run"),
            ),
            rows=status_rows,
            empty="No enabled schedule.",
        )
    )
    automation.register_config(
        automation.ConfigSection(
            name="schedules",
            key=CONFIG_KEY,
            order=20,
            export=export_entries,
            plan=plan_config,
            apply=apply_config,
            fields=frozenset(
                {"cron", "every", "at", "timezone", "trigger", "schedules", "schedule_enabled"}
                | set(POLICY_FIELDS)
            ),
        )
    )
