"""The execution queue: enqueue, claim, start, complete. The database is the queue of record;
Celery only carries wake-ups (scheduler.tasks.dispatch), one Celery queue per priority.

Selection (scheduler/README.md, "Selection policy"), inside one serialised transaction:

1. ``urgent`` first, always.
2. Otherwise a fixed wheel, the smooth weighted round-robin of high 4 : normal 2 : low 1,
   ``H N H L H N H``, read from a position kept in Redis: the first class on the wheel from
   there that has an eligible run is served and the position moves past it. Classes with
   nothing to start are skipped, so high gets two picks per normal pick while both wait, and
   low gets one pick in every seven at worst (no starvation).
3. Within a class, the oldest queued run (by id) that no pause covers and no concurrency limit
   (gateway, agent of a gateway, job) holds back.

A claim is ``UPDATE … SET status='running' WHERE id=… AND status='queued'``: it proceeds only
if one row changed, so a duplicate message or a second worker never starts a run twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Exists, Q
from django.template import Context, Engine, TemplateSyntaxError
from django.utils import timezone

from agentflow.lib import eventlog, rawsql
from agentflow.lib.dbbusy import retry_busy
from agentflow.lib.logcontext import bind_run
from agentflow.lib.redis import batched, get_redis, key, write_pipeline

from . import actions, admission, alerts, conditions, errors, live, scopes, signals, stops, workers
from .actions import AttemptContext, Finished, Started
from .models import Alert, Attempt, EmergencyStop, Job, Priority, QueuePause, Run

log = logging.getLogger("agentflow.scheduler")

PRIORITIES = tuple(Priority.values)  # urgent, high, normal, low
WHEEL = ("high", "normal", "high", "low", "high", "normal", "high")  # SWRR of 4:2:1
_TEMPLATES = Engine(autoescape=False)  # no loaders, no tags beyond the built-ins
_PG_CLAIM_LOCK = 7_353_001  # pg_advisory_xact_lock id serialising claims (limits stay exact)


# --- enqueue -------------------------------------------------------------------------------------


def render_prompt(template: str, input: Any) -> str:
    """``template`` rendered with ``{{ input }}`` (Django template language: no code runs)."""
    if not template:
        return ""
    try:
        return _TEMPLATES.from_string(template).render(Context({"input": input}))
    except TemplateSyntaxError as exc:
        raise ValidationError(f"the prompt template does not parse: {exc}", code="bad_template") from None


def _concurrency_keys(params: Mapping[str, Any]) -> dict[str, str]:
    return {name: str(params.get(name) or "")[:100] for name in ("gateway", "agent", "provider")}


SPEC_FIELDS = (
    "job",
    "kind",
    "params",
    "input",
    "prompt",
    "priority",
    "run_after",
    "dedupe_key",
    "timeout_seconds",
    "max_attempts",
)  # fmt: skip  (what one item of enqueue_many may give: enqueue's arguments but the trigger)


def _job(job: Job | str | None, known: dict[str, Job] | None = None) -> Job | None:
    """The job (by name: looked up once per ``known`` cache); unknown or disabled: refused."""
    if isinstance(job, str):
        found = known.get(job) if known is not None else None
        if found is None:
            found = Job.objects.filter(name=job).first()
            if found is None:
                raise ValidationError(f"no job named {job!r}", code="unknown_job")
            if known is not None:
                known[job] = found
        job = found
    if job is not None and not job.enabled:
        raise ValidationError(f"job {job.name!r} is disabled", code="job_disabled")
    return job


def _build(
    job: Job | str | None,
    *,
    kind: str | None,
    params: Mapping[str, Any] | None,
    input: Any,
    prompt: str | None,
    priority: str | None,
    run_after: datetime | None,
    dedupe_key: str,
    trigger: str,
    triggered_by: str,
    timeout_seconds: int | None,
    max_attempts: int | None,
    now: datetime,
    known: dict[str, Job] | None = None,
) -> Run:
    """The run ``enqueue`` would write, validated, not saved (status queued, or scheduled when
    ``run_after`` is ahead). Bad input raises ``ValidationError`` with a message for the caller."""
    job = _job(job, known)
    if job is not None:
        kind = job.kind
        merged = {**(job.params or {}), **(params or {})}
    elif kind is None:
        raise ValidationError("a run needs a job or a kind", code="no_kind")
    else:
        merged = dict(params or {})
    cleaned = actions.validate_params(kind, merged)
    priority = priority or (job.priority if job is not None else Priority.NORMAL)
    if priority not in PRIORITIES:
        raise ValidationError(
            f"unknown priority {priority!r} (one of {', '.join(PRIORITIES)})", code="bad_priority"
        )
    if trigger not in Run.Trigger.values:
        raise ValidationError(f"unknown trigger {trigger!r}", code="bad_trigger")
    timeout = timeout_seconds if timeout_seconds is not None else (job.timeout_seconds if job else 600)
    if not isinstance(timeout, int) or timeout < 1:
        raise ValidationError("timeout must be a whole number of seconds, at least 1", code="bad_timeout")
    if prompt is None:
        prompt = render_prompt(job.prompt_template if job else "", input)
    run = Run(
        job=job,
        job_name=job.name if job else "",
        kind=kind,
        params=cleaned,
        input=input,
        prompt=prompt,
        priority=priority,
        run_after=run_after,
        dedupe_key=dedupe_key[:200],
        trigger=trigger,
        triggered_by=triggered_by[:200],
        timeout_seconds=timeout,
        max_attempts=max_attempts or (job.max_attempts if job else 3),
        queued_at=now,
        **_concurrency_keys(cleaned),
    )
    if run_after is not None and run_after > now:
        run.status = Run.Status.SCHEDULED
    return run


def _hold(run: Run, stop_id: int | None, paused: bool) -> None:
    """Park a run being queued that an emergency stop (held by it) or a pause covers."""
    if stop_id is not None:
        run.status, run.stop_id = Run.Status.PARKED, stop_id  # recorded, held by the stop
    elif paused:
        run.status = Run.Status.PARKED


def enqueue(
    job: Job | str | None = None,
    *,
    kind: str | None = None,
    params: Mapping[str, Any] | None = None,
    input: Any = None,
    prompt: str | None = None,
    priority: str | None = None,
    run_after: datetime | None = None,
    dedupe_key: str = "",
    trigger: str = Run.Trigger.SYSTEM,
    triggered_by: str = "",
    timeout_seconds: int | None = None,
    max_attempts: int | None = None,
) -> Run:
    """Create a run (queued, scheduled when ``run_after`` is ahead, parked under a pause) and
    dispatch it on commit. A ``dedupe_key`` already held by an unfinished run returns that run.
    Bad input raises ``ValidationError`` with a message for the caller; nothing is written."""
    run = _build(
        job,
        kind=kind,
        params=params,
        input=input,
        prompt=prompt,
        priority=priority,
        run_after=run_after,
        dedupe_key=dedupe_key,
        trigger=trigger,
        triggered_by=triggered_by,
        timeout_seconds=timeout_seconds,
        max_attempts=max_attempts,
        now=timezone.now(),
    )
    if dedupe_key:
        existing = Run.objects.filter(dedupe_key=dedupe_key, status__in=Run.NOT_FINAL).first()
        if existing is not None:
            return existing
    stop_id = stops.intake(run)
    _hold(run, stop_id, stop_id is None and covered_by_pause(run))
    try:
        # A savepoint only where an IntegrityError is expected (a dedupe key taken meanwhile):
        # the caller's transaction stays usable to read the run that holds it.
        with transaction.atomic(savepoint=bool(dedupe_key)):
            run.save()
    except IntegrityError:
        existing = Run.objects.filter(dedupe_key=dedupe_key, status__in=Run.NOT_FINAL).first()
        if dedupe_key and existing is not None:
            return existing
        raise
    transaction.on_commit(partial(_log_queued, [run]))  # before the wake-up: the log reads in order
    if run.status == Run.Status.QUEUED:
        priority = run.priority
        transaction.on_commit(lambda: wake_up(priority))
    return run


def _log_queued(runs: Sequence[Run]) -> None:
    """The automation log's ``run.queued`` lines: one per run, or one for a bulk submit."""
    if len(runs) == 1:
        run = runs[0]
        eventlog.emit(
            "run.queued",
            run_id=run.pk,
            job=run.job_name or run.kind,
            status=run.status,
            priority=run.priority,
            trigger=run.trigger,
            triggered_by=run.triggered_by,
        )
    elif runs:
        ids = [r.pk for r in runs]
        jobs = sorted({r.job_name or r.kind for r in runs})
        eventlog.emit(
            "runs.queued",
            count=len(runs),
            first_id=min(ids),
            last_id=max(ids),
            job=jobs[0] if len(jobs) == 1 else None,
            jobs=jobs[:10] if len(jobs) > 1 else None,
            trigger=runs[0].trigger,
            triggered_by=runs[0].triggered_by,
        )


def enqueue_many(
    specs: Sequence[Mapping[str, Any]], *, trigger: str = Run.Trigger.SYSTEM, triggered_by: str = ""
) -> list[Run]:
    """Queue several runs in one transaction: each spec holds :func:`enqueue`'s arguments
    (:data:`SPEC_FIELDS`; the trigger is the batch's, ``triggered_by`` the batch's unless the
    spec names its own: the schedule pass, one label per trigger). Returns one run per spec, in order.

    1. Every spec is validated as ``enqueue`` validates it; the first bad one raises
       ``ValidationError`` naming its index (``item 3: …``, the same code) and nothing is written.
    2. The pauses and engaged emergency stops are read once: a run they cover is parked (held by
       the stop), as ``enqueue`` parks it.
    3. A spec whose dedupe key an unfinished run holds (or an earlier spec of the batch) gets that
       run; the rest are inserted with one ``bulk_create`` (ids returned: PostgreSQL, SQLite ≥ 3.35).
       A concurrent insert of the same key (the unique index refuses the batch) is retried.
    4. On commit, one wake-up per priority with queued runs: a dispatch drains what is eligible
       (AGENTFLOW_DISPATCH_PENDING_MAX), and sends a fresh wake-up while runs are left."""
    now = timezone.now()
    known: dict[str, Job] = {}
    built = []
    for index, spec in enumerate(specs):
        try:
            unknown = sorted(set(spec) - {*SPEC_FIELDS, "triggered_by"})
            if unknown:
                raise ValidationError(
                    f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(SPEC_FIELDS)})",
                    code="bad_field",
                )
            fields: dict[str, Any] = {name: spec.get(name) for name in SPEC_FIELDS}
            fields["dedupe_key"] = fields["dedupe_key"] or ""
            by = str(spec.get("triggered_by") or triggered_by)  # a spec's own (a schedule's label)
            built.append(_build(**fields, trigger=trigger, triggered_by=by, now=now, known=known))
        except ValidationError as exc:
            raise ValidationError(f"item {index}: {'; '.join(exc.messages)}", code=exc.code) from None
    pauses, engaged = list(QueuePause.objects.all()), stops.engaged()
    for run in built:
        stop = stops.covering(run, engaged)
        paused = stop is None and any(pause_covers(p, run) for p in pauses)
        _hold(run, stop.pk if stop is not None else None, paused)
    for attempt in range(3):
        try:
            with transaction.atomic():
                runs = _insert_many(built)
            break
        except IntegrityError:
            if attempt == 2 or not any(run.dedupe_key for run in built):
                raise
            for run in built:
                run.pk = None  # the rolled-back insert's ids are void; its dedupe keys read again
    transaction.on_commit(partial(_log_queued, runs))
    for priority in sorted({r.priority for r in runs if r.status == Run.Status.QUEUED}, key=PRIORITIES.index):
        transaction.on_commit(partial(wake_up, priority))
    return runs


def _insert_many(built: list[Run]) -> list[Run]:
    """:func:`enqueue_many`'s step 3, inside its transaction."""
    keys = {run.dedupe_key for run in built if run.dedupe_key}
    held = {r.dedupe_key: r for r in Run.objects.filter(dedupe_key__in=keys, status__in=Run.NOT_FINAL)}
    runs, new = [], []
    for run in built:
        if run.dedupe_key and run.dedupe_key in held:
            runs.append(held[run.dedupe_key])
            continue
        if run.dedupe_key:
            held[run.dedupe_key] = run
        runs.append(run)
        new.append(run)
    Run.objects.bulk_create(new)
    if any(run.pk is None for run in new):  # a backend that returns no ids from a bulk insert
        raise DatabaseError("bulk_create returned no ids")
    return runs


# --- pauses --------------------------------------------------------------------------------------


def pause_q(pauses: Iterable[QueuePause]) -> Q | None:
    """The runs the pauses cover, as a filter (None: no pause)."""
    q: Q | None = None
    for pause in pauses:
        part = {
            QueuePause.Scope.ALL: Q(pk__isnull=False),
            QueuePause.Scope.PRIORITY: Q(priority=pause.value),
            QueuePause.Scope.GATEWAY: Q(gateway__in=scopes.aliases("gateway", pause.value)),
            QueuePause.Scope.AGENT: Q(agent__in=scopes.aliases("agent", pause.value)),
            QueuePause.Scope.JOB: Q(job_name=pause.value),
        }[QueuePause.Scope(pause.scope)]
        q = part if q is None else q | part
    return q


def pause_covers(pause: QueuePause, run: Run) -> bool:
    return {
        QueuePause.Scope.ALL: True,
        QueuePause.Scope.PRIORITY: run.priority == pause.value,
        QueuePause.Scope.GATEWAY: run.gateway in scopes.aliases("gateway", pause.value),
        QueuePause.Scope.AGENT: run.agent in scopes.aliases("agent", pause.value),
        QueuePause.Scope.JOB: run.job_name == pause.value,
    }[QueuePause.Scope(pause.scope)]


def covered_by_pause(run: Run) -> bool:
    return any(pause_covers(p, run) for p in QueuePause.objects.all())


# --- concurrency limits ----------------------------------------------------------------------------


@dataclass
class Usage:
    """Runs in flight per gateway, per (gateway, agent) and per job, with the jobs' limits."""

    gateway: Counter[str] = field(default_factory=Counter)
    agent: Counter[tuple[str, str]] = field(default_factory=Counter)
    job: Counter[int] = field(default_factory=Counter)
    job_limit: dict[int, int] = field(default_factory=dict)

    @classmethod
    def now(cls) -> Usage:
        usage = cls()
        rows = Run.objects.in_flight().values_list("gateway", "agent", "job_id", "job__concurrency_limit")
        for gateway, agent, job_id, limit in rows:
            if gateway:
                usage.gateway[gateway] += 1
            if agent:
                usage.agent[(gateway, agent)] += 1
            if job_id is not None:
                usage.job[job_id] += 1
                if limit:
                    usage.job_limit[job_id] = limit
        return usage

    def saturated_q(self) -> Q | None:
        """The queued runs a limit holds back now (None: none)."""
        parts = []
        full_gateways = [g for g, n in self.gateway.items() if n >= settings.AGENTFLOW_GATEWAY_CONCURRENCY]
        if full_gateways:
            parts.append(Q(gateway__in=full_gateways))
        for (gateway, agent), n in self.agent.items():
            if n >= settings.AGENTFLOW_AGENT_CONCURRENCY:
                parts.append(Q(gateway=gateway, agent=agent))
        full_jobs = [j for j, limit in self.job_limit.items() if self.job[j] >= limit]
        if full_jobs:
            parts.append(Q(job_id__in=full_jobs))
        if not parts:
            return None
        q = parts[0]
        for part in parts[1:]:
            q |= part
        return q


# --- claim ---------------------------------------------------------------------------------------


def _wheel_key() -> str:
    return key("queue", "wheel")


def _starved_key() -> str:
    return key("queue", "starved")


def eligible(*, flag_starved: bool = False, scope: Q | None = None) -> Any:
    """Queued runs no pause covers and no limit holds back (two small queries to build it).
    ``flag_starved``: when a limit holds runs back, ask the next completion for a wake-up.
    ``scope``: only these runs (a wake-up for one key's slot)."""
    qs = Run.objects.ready()
    if scope is not None:
        qs = qs.filter(scope)
    paused = pause_q(QueuePause.objects.all())
    if paused is not None:
        qs = qs.exclude(paused)
    stopped = stops.stop_q(stops.engaged())
    if stopped is not None:
        qs = qs.exclude(stopped)
    saturated = Usage.now().saturated_q()
    if saturated is not None:
        qs = qs.exclude(saturated)
        if flag_starved:
            get_redis().set(_starved_key(), "1", ex=3600)
    held = admission.held_q()  # keys waiting for the rate limiter or a breaker (admission.py)
    if held is not None:
        qs = qs.exclude(held)
    return qs


OPTIMISTIC_TRIES = 5


def _limited(run: Run) -> bool:
    """Whether a concurrency limit applies to the run (then it is claimed under the lock)."""
    return bool(run.gateway or run.agent or (run.job is not None and run.job.concurrency_limit))


def _pick(redis: Any, *, locked: bool, scope: Q | None = None) -> tuple[Run | None, int | None, Any] | None:
    """The run the policy starts next (None: it was claimed meanwhile, choose again), the wheel
    position after it and the eligible runs' queryset; None when nothing is eligible."""
    ready = eligible(flag_starved=True, scope=scope)
    position = int(redis.get(_wheel_key()) or 0) % len(WHEEL)
    order = _serving_order(position)
    if locked:
        first = _first_ids(ready)
        for priority, next_position in order:
            if priority not in first:
                continue
            qs = Run.objects.select_related("job").filter(pk=first[priority], status=Run.Status.QUEUED)
            # Not SKIP LOCKED: a fast claim (outside the advisory lock) may be taking this row; wait
            # for it (one short transaction), then the status is read again: None, choose again.
            qs = qs.select_for_update(of=("self",))
            return qs.first(), next_position, ready
        return None
    heads = _heads(ready)
    for priority, next_position in order:
        if priority in heads:
            return heads[priority], next_position, ready
    return None


def _heads(eligible: Any) -> dict[str, Run]:
    """The oldest eligible run of each priority that has one, rows and jobs in one query (the
    optimistic path: ``_take``'s conditional UPDATE re-checks the status)."""
    subqueries = [eligible.filter(priority=p).order_by("id").values("id")[:1] for p in PRIORITIES]
    q = Q(pk__in=subqueries[0])
    for subquery in subqueries[1:]:
        q |= Q(pk__in=subquery)
    return {run.priority: run for run in Run.objects.select_related("job").filter(q).order_by()}


def _first_ids(eligible: Any) -> dict[str, int]:
    """The oldest eligible run's id of each priority that has one, in one query: a scalar
    subquery per priority, each an index lookup (``run_ready``), whatever the backlog."""
    parts, params = [], []
    for priority in PRIORITIES:
        sql, values = (
            eligible.filter(priority=priority).order_by("id").values("id")[:1].query.sql_with_params()
        )
        parts.append(f"({sql})")
        params.extend(values)
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(parts), params)
        row = cursor.fetchone()
    return {p: v for p, v in zip(PRIORITIES, row, strict=True) if v is not None}


def _take(
    candidate: Run, worker: str, next_position: int | None, ready: Any, redis: Any
) -> tuple[Run, Attempt] | None:
    """The conditional UPDATE and the Attempt row, in one short transaction. A run that is not
    urgent is claimed only while no eligible urgent run waits (NOT EXISTS in the same UPDATE):
    an urgent run committed between the choice and the claim is never overtaken."""
    now = timezone.now()
    claim = Run.objects.filter(pk=candidate.pk, status=Run.Status.QUEUED)
    if candidate.started_at is None:  # never claimed, so no Attempt yet (see _attempt_number)
        claim = claim.filter(started_at__isnull=True)
    if candidate.priority != Priority.URGENT:
        urgent = ready.filter(priority=Priority.URGENT).order_by().values("pk")
        claim = claim.exclude(Exists(urgent))
    with transaction.atomic():
        changed = claim.update(
            status=Run.Status.RUNNING, started_at=candidate.started_at or now, next_attempt_at=None
        )
        if changed != 1:
            return None
        admitted = admission.admit(candidate)
        if isinstance(admitted, admission.Refusal):
            _wait_for_admission(candidate, admitted, now)
            return None
        if admitted.hold:
            _pace_next(candidate, admitted, now)
        number = _attempt_number(candidate)
        attempt = Attempt.objects.create(
            id=uuid.uuid4(), run=candidate, number=number, worker=worker, started_at=now
        )
    if next_position is not None:
        redis.set(_wheel_key(), next_position)
    candidate.status = Run.Status.RUNNING
    candidate.started_at = candidate.started_at or now
    return candidate, attempt


def _attempt_number(run: Run) -> int:
    """The number of the attempt being created. A run whose first claim this is (``started_at``
    unset: it is set by the first claim and never cleared, and the claim's UPDATE required it
    unset) has no Attempt yet, so it is 1 without a COUNT; a retried run counts its attempts."""
    if run.started_at is None:
        return 1
    return Attempt.objects.filter(run_id=run.pk).count() + 1


def _logged(run: Run, attempt: object = None) -> Any:
    """Every line logged inside carries the run's id, job, attempt, gateway and agent."""
    return bind_run(
        run_id=run.pk,
        job=run.job_name or run.kind,
        attempt=str(attempt) if attempt is not None else None,
        gateway=run.gateway or None,
        agent=run.agent or None,
    )


def _wait_for_admission(run: Run, refusal: admission.Refusal, now: datetime) -> None:
    """The claimed run may not start yet (rate limit, breaker): back to scheduled for the wait,
    no Attempt, no error (inside _take's transaction). The key is held meanwhile, and a wake-up
    is sent for the end of the wait (on commit)."""
    until = now + timedelta(seconds=refusal.wait_seconds)
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.SCHEDULED, run_after=until, next_attempt_at=until, started_at=run.started_at
    )
    with _logged(run):
        log.info(
            "run %s waits %.2fs (%s %s)", run.pk, refusal.wait_seconds, refusal.reason, refusal.hold or "-"
        )
    try:
        admission.hold(refusal.hold, until.timestamp() - admission.HOLD_MARGIN)
    except Exception:
        log.warning("could not hold %s", refusal.hold, exc_info=True)
    transaction.on_commit(lambda: send_wake(run.pk, refusal.wait_seconds, member=refusal.hold))
    transaction.on_commit(lambda: conditions.on_rate_limit_wait(run, refusal.wait_seconds, refusal.reason))


def _pace_next(run: Run, admitted: admission.Admitted, now: datetime) -> None:
    """The run took its key's slot and more runs of the key wait: hold them until the next slot
    and send a wake-up for it (on commit), before the run's action starts. The pace then never
    depends on how long a start takes (a ``chat.send`` to a busy gateway), nor on the next
    completion: every slot wakes the next one (inside _take's transaction)."""
    waiting = admission.member_q(admitted.hold)
    if waiting is None or not Run.objects.ready().filter(waiting).exclude(pk=run.pk).exists():
        return  # nothing waits: a run queued later is admitted, or refused and woken, by itself
    until = now + timedelta(seconds=admitted.next_seconds)
    try:
        admission.hold(admitted.hold, until.timestamp() - admission.HOLD_MARGIN)
    except Exception:
        log.warning("could not hold %s", admitted.hold, exc_info=True)
    at = until.timestamp()
    transaction.on_commit(lambda: send_wake(None, admitted.next_seconds, at=at, member=admitted.hold))


def _serving_order(position: int) -> list[tuple[str, int | None]]:
    """``(priority, wheel position after serving it)`` in the order the policy serves them from
    wheel ``position``: urgent first (it leaves the wheel where it is), then every other priority
    at its first turn on the wheel."""
    order: list[tuple[str, int | None]] = [(Priority.URGENT.value, None)]
    for i in range(len(WHEEL)):
        priority = WHEEL[(position + i) % len(WHEEL)]
        if all(priority != served for served, _ in order):
            order.append((priority, (position + i + 1) % len(WHEEL)))
    return order


_FAST_CLAIM_SQL: dict[str, str] = {}


def _fast_claim_sql() -> str:
    """One statement that chooses and claims (the common case, see :func:`_fast_claim`): the
    oldest queued run of the first priority in the policy's order that has one (a COALESCE of
    per-priority scalar subqueries, each an index lookup on ``run_ready``, evaluated in order),
    claimed only if no pause exists and no limit or admission applies to it. Built once."""
    vendor = connection.vendor
    if vendor not in _FAST_CLAIM_SQL:
        run, job, pause = Run._meta.db_table, Job._meta.db_table, QueuePause._meta.db_table
        stop = EmergencyStop._meta.db_table
        columns = rawsql.columns(Run)
        # PostgreSQL: a head another claimer is taking (row locked) is skipped for the next run of
        # its class, as parallel queue workers do: without it both choose the same head, one
        # UPDATE changes nothing and that claimer falls to the general path. Not for urgent: an
        # urgent head is never skipped for a lower class (the UPDATE then waits for the row and
        # changes nothing if it was taken: the general path). Skipping a head of another class
        # only reorders picks made at the same instant (see claim_next). SQLite's claim runs
        # under BEGIN IMMEDIATE (one writer): its heads are never being taken meanwhile.
        skip = " FOR UPDATE SKIP LOCKED" if vendor == "postgresql" else ""
        # Table and column names from the models; every value is a parameter.
        heads = [
            f"(SELECT h.id FROM {run} h WHERE h.status = 'queued' AND h.priority = %s "  # noqa: S608
            f"ORDER BY h.id LIMIT 1{skip if i else ''})"
            for i in range(len(PRIORITIES))  # in serving order: the first is always urgent's
        ]
        _FAST_CLAIM_SQL[vendor] = (
            f"UPDATE {run} SET status = 'running', started_at = %s, next_attempt_at = NULL "  # noqa: S608
            f"WHERE id = COALESCE({', '.join(heads)}) "
            "AND status = 'queued' AND started_at IS NULL "
            "AND gateway = '' AND agent = '' AND provider = '' "
            f"AND (job_id IS NULL OR NOT EXISTS (SELECT 1 FROM {job} j WHERE j.id = {run}.job_id "
            "AND j.concurrency_limit IS NOT NULL AND j.concurrency_limit <> 0)) "
            f"AND NOT EXISTS (SELECT 1 FROM {pause}) "
            f"AND NOT EXISTS (SELECT 1 FROM {stop} WHERE released_at IS NULL) "
            f"RETURNING {columns}"
        )
    return _FAST_CLAIM_SQL[vendor]


def _fast_claim(worker: str, redis: Any) -> tuple[Run, Attempt] | None:
    """The common case in one statement and one Redis round trip: no pause, no hold, and the
    run the policy chooses is a first claim that no limit and no admission applies to (a noop,
    a job without a concurrency limit). It chooses exactly what :func:`_pick` would (no pause
    and no hold means ``eligible`` only leaves out runs a limit applies to, which this claim
    refuses), and the claim is the same conditional UPDATE, so a run is never started twice
    and a queued urgent run is never overtaken. None: anything else (nothing queued, a pause,
    a hold, a limited or retried head, a lost race): the general path decides."""
    order = _fast_order(redis)
    if order is None:
        return None
    with transaction.atomic():
        claimed = _fast_take(worker, order)
    _advance_wheel(redis, order, claimed)
    return claimed


def _fast_order(redis: Any) -> list[tuple[str, int | None]] | None:
    """The serving order a one-statement claim follows (the wheel position read from Redis), or
    None when it may not be used (a hold exists, or the database has no UPDATE … RETURNING)."""
    if not connection.features.can_return_columns_from_insert:  # no UPDATE … RETURNING
        return None
    pipe = redis.pipeline(transaction=False)
    pipe.get(_wheel_key())
    pipe.exists(admission.held_key())
    raw_position, holds = pipe.execute()
    if holds:
        return None
    return _serving_order(int(raw_position or 0) % len(WHEEL))


def _fast_take(worker: str, order: list[tuple[str, int | None]]) -> tuple[Run, Attempt] | None:
    """The one-statement claim and its Attempt, inside the caller's transaction."""
    now = timezone.now()
    params: list[Any] = [connection.ops.adapt_datetimefield_value(now), *(p for p, _ in order)]
    with connection.cursor() as cursor:  # compiled once (rawsql: the write lock is held meanwhile)
        cursor.execute(_fast_claim_sql(), params)
        row = cursor.fetchone()
    if row is None:
        return None
    run = rawsql.from_row(Run, row)
    attempt = Attempt(id=uuid.uuid4(), run=run, number=1, worker=worker, started_at=now)
    rawsql.insert(attempt)
    return run, attempt


def _advance_wheel(
    redis: Any, order: list[tuple[str, int | None]], claimed: tuple[Run, Attempt] | None
) -> None:
    """After a committed claim: the wheel moves past the class served (not after urgent)."""
    if claimed is None:
        return
    next_position = dict(order)[claimed[0].priority]
    if next_position is not None:
        pipe, execute = write_pipeline()  # inside redis.batched(): with the completion's writes
        pipe.set(_wheel_key(), next_position)
        if execute:
            pipe.execute()


def claim_next(worker: str, scope: Q | None = None) -> tuple[Run, Attempt] | None:
    """Choose and claim the next run to start (the selection policy above), or None.

    1. Optimistic: choose without holding the write lock; a run no limit applies to is claimed
       with the conditional UPDATE (+ its Attempt) in a short transaction. Lost the race (the
       UPDATE changed nothing)? Choose again, a few times.
    2. A run a limit applies to (gateway, agent, job limit) is chosen and claimed again inside
       one transaction that serialises claimers (BEGIN IMMEDIATE on SQLite, the settings'
       transaction_mode; an advisory transaction lock and row locks on PostgreSQL), so the
       in-flight counts it is checked against cannot change under it: limits are exact.
    3. When a limit held runs back, a flag in Redis asks the next completion for a dispatch.

    The wheel position is read and written per claim: exact for one claimer at a time, within
    a pick or two of it when several workers claim at the same instant. ``scope``: choose only
    among these runs (a wake-up for one key's slot, scheduler/tasks.py ``wake``).
    """
    redis = get_redis()
    claimed = _fast_claim(worker, redis) if scope is None else None  # a scoped wake: limited runs
    if claimed is not None:
        return claimed
    for _ in range(OPTIMISTIC_TRIES):
        picked = _pick(redis, locked=False, scope=scope)
        if picked is None:
            return None
        candidate, next_position, ready = picked
        if candidate is None:
            continue
        if _limited(candidate):
            break
        claimed = _take(candidate, worker, next_position, ready, redis)
        if claimed is not None:
            return claimed
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_PG_CLAIM_LOCK])
        # Under the lock no other general-path claim runs, but a fast claim can take the chosen
        # head meanwhile (candidate None), and _take answers None when admission made the run
        # wait (its key is held now): choose again among the others, a few times. Returning None
        # while a run is eligible would leave it to the tick (its wake-up is spent).
        for _ in range(OPTIMISTIC_TRIES):
            picked = _pick(redis, locked=True, scope=scope)
            if picked is None:
                return None
            candidate, next_position, ready = picked
            if candidate is None:
                continue
            claimed = _take(candidate, worker, next_position, ready, redis)
            if claimed is not None:
                return claimed
        return None


def start_next(worker: str | None = None, scope: Q | None = None) -> Run | None:
    """Claim the next run and start its action outside the claim's transaction.

    ``Finished`` completes the attempt at once; ``Started`` leaves the run running (the worker
    is free: the work's owner calls :func:`complete_attempt`). An exception from the action is
    a ``system`` failure of the attempt, never of the worker."""
    worker = worker or workers.this_worker()
    claimed = claim_next(worker, scope)
    if claimed is None:
        return None
    run, attempt = claimed
    with _logged(run, attempt.pk):
        return _start(run, attempt, worker)[0]


def start_runs(deadline: float, worker: str | None = None) -> tuple[int, bool]:
    """Start runs one after another (as :func:`start_next` does, each claim through the policy)
    until none is eligible or ``time.monotonic()`` passes ``deadline``. Returns how many started
    and whether the deadline ended it (runs may be left: the caller sends a fresh wake-up).

    A run whose action finishes at once is completed in the same transaction as the next run's
    one-statement claim (:func:`_fast_take`, while the deadline is ahead): one commit per run
    instead of two (on PostgreSQL a commit waits for the WAL flush). When that claim does not
    apply (nothing it may take: a pause, a hold, a limited head) the general claim follows."""
    worker = worker or workers.this_worker()
    started = 0
    claimed = claim_next(worker)
    while claimed is not None:
        run, attempt = claimed
        started += 1
        with _logged(run, attempt.pk):
            _, claimed = _start(run, attempt, worker, chain=time.monotonic() < deadline)
        if claimed is None:
            if time.monotonic() >= deadline:
                return started, True
            claimed = claim_next(worker)
    return started, False


def _start(
    run: Run, attempt: Attempt, worker: str, *, chain: bool = False
) -> tuple[Run | None, tuple[Run, Attempt] | None]:
    """The action, then its completion (``Finished``); ``chain``: also claim the next run in the
    completion's transaction (see :func:`start_runs`). Returns the run and that claim."""
    spec = actions.find_action(run.kind)
    outcome: Finished | Started
    if spec is None:
        outcome = Finished(
            "failed", errors.SYSTEM, f"no action {run.kind!r} is registered in worker {worker}"
        )
    else:
        member = str(attempt.pk)
        started = (
            None  # a batch's runs are the batch page's (every 5 s for some)
            if run.kind == "batch"
            else (
                "run.started",
                {
                    "run_id": run.pk,
                    "job": run.job_name or run.kind,
                    "attempt": attempt.number,
                    "worker": worker,
                },
            )
        )
        # Every start checks the emergency stop first (and logs run.started in the same round trip).
        stop_id = stops.enter(run, member, started)
        if stop_id is not None:
            stops.park_claimed(run, attempt, stop_id)
            log.info("run %s not started: emergency stop %s is engaged", run.pk, stop_id)
            return None, None
        ctx = AttemptContext(run=run, attempt=attempt, prompt=run.prompt, params=run.params, input=run.input)
        try:
            outcome = spec.start(ctx)
        except Exception as exc:
            log.exception("run %s: action %s raised", run.pk, run.kind)
            outcome = Finished("failed", errors.SYSTEM, f"{type(exc).__name__}: {exc}")
        if isinstance(outcome, Started):
            late = stops.leave(run, member)
            if late is not None:
                # A stop engaged while this start was in progress and its fence gave up waiting.
                attempt.session_key, attempt.external_id = outcome.session_key, outcome.external_id
                stops.abort_started(run, attempt, late)
                return run, None
        else:
            # Finished here: nothing was sent, so a stop engaged meanwhile has nothing to undo.
            # The completion's best-effort Redis writes (this, the log lines, the metrics, the
            # wheel) then share one round trip (redis.batched, below).
            with batched():
                stops.leave_later(run, member)
                settled, claimed = _complete(attempt.pk, outcome, run, claim_for=worker if chain else None)
            return settled or run, claimed
    if isinstance(outcome, Started):
        # No status filter: the result may already have settled the attempt (a fast agent run's
        # terminal event can reach the listener before this line); its session key is kept anyway.
        # Retried while the database is busy: a dropped write left the attempt "inside the
        # worker" with no session key (the reconciler then waited on a live worker for nothing).
        left = Attempt.objects.filter(pk=attempt.pk)
        retry_busy(
            lambda: left.update(
                in_worker=False, session_key=outcome.session_key[:300], external_id=outcome.external_id[:200]
            )
        )
        return run, None
    with batched():
        settled, claimed = _complete(attempt.pk, outcome, run, claim_for=worker if chain else None)
    return settled or run, claimed


# --- completion ----------------------------------------------------------------------------------


def complete_attempt(
    attempt_id: uuid.UUID | str, outcome: Finished, *, known_run: Run | None = None
) -> Run | None:
    """Settle an attempt: the one entry point for whoever learns how it ended (the worker, the
    listener, the reconciler, a cancel).

    Idempotent, first terminal wins: the attempt moves from running with a conditional UPDATE;
    an unknown id, a malformed one, or an attempt already settled returns None and changes
    nothing. If the run left ``running`` meanwhile (cancelled), only the attempt is recorded.

    ``known_run``: the attempt's run as its claim left it (``start_next``, same process): it is
    not read again; its settlement is a conditional UPDATE (``status='running'``) instead, and
    a run that left ``running`` meanwhile is read then (only the attempt is recorded).
    """
    try:
        attempt_uuid = attempt_id if isinstance(attempt_id, uuid.UUID) else uuid.UUID(str(attempt_id))
    except ValueError:
        return None
    return _complete(attempt_uuid, outcome, known_run)[0]


def _complete(
    attempt_uuid: uuid.UUID, outcome: Finished, known_run: Run | None, *, claim_for: str | None = None
) -> tuple[Run | None, tuple[Run, Attempt] | None]:
    """:func:`complete_attempt`; ``claim_for`` (a worker): once the run is settled, the next
    run's one-statement claim for that worker in the same transaction, in a savepoint (a claim
    that fails is rolled back alone: the settlement commits). Returns the run and that claim."""
    redis = get_redis() if claim_for else None
    order = _fast_order(redis) if claim_for else None
    claimed: tuple[Run, Attempt] | None = None
    now = timezone.now()
    error_class = (
        ""
        if outcome.status == "succeeded"
        else errors.normalise(
            outcome.error_class or (errors.ABORTED if outcome.status == "aborted" else None)
        )
    )
    with transaction.atomic():
        settled = {
            "status": outcome.status,
            "error_class": error_class,
            "error": outcome.error,
            "finished_at": now,
            "in_worker": False,
        }
        changed = rawsql.update(Attempt, settled, id=attempt_uuid, status=Attempt.Status.RUNNING)
        if changed != 1:
            return None, None
        if known_run is not None:
            run = known_run
        else:
            run = (
                Run.objects.select_for_update(of=("self",))
                .select_related("job")
                .get(attempt_set__pk=attempt_uuid)
            )
            if run.status != Run.Status.RUNNING:
                return run, None
        with _logged(run, attempt_uuid):
            if not _settle(run, outcome, error_class, now, conditional=known_run is not None):
                return Run.objects.select_related("job").get(pk=run.pk), None  # it left running meanwhile
            # A batch run's runner logs its own one line in the design's wording (scheduler/runner.py).
            level = logging.DEBUG if run.kind == "batch" else logging.INFO
            log.log(
                level, "run %s attempt %s: %s %s", run.pk, attempt_uuid, outcome.status, error_class or ""
            )
        if claim_for and order is not None:
            try:
                with transaction.atomic():
                    claimed = _fast_take(claim_for, order)
            except DatabaseError:
                log.warning(
                    "the claim after run %s failed (the general claim follows)", run.pk, exc_info=True
                )
    if claimed is not None and order is not None:
        _advance_wheel(redis, order, claimed)
    with _logged(run, attempt_uuid):
        admission.record_outcome(run, outcome, error_class)
        conditions.on_outcome(run, outcome, error_class)
    return run, claimed


# What _settle changes (the whole row would be rewritten otherwise).
SETTLED_FIELDS = (
    "error_class", "error", "result", "result_truncated", "usage", "attempts", "status",
    "run_after", "next_attempt_at", "finished_at",
)  # fmt: skip


def _cap(text: str) -> tuple[str, bool]:
    limit = settings.AGENTFLOW_RUN_RESULT_MAX_CHARS
    return (text, False) if len(text) <= limit else (text[:limit], True)


def _settle(
    run: Run, outcome: Finished, error_class: str, now: datetime, *, conditional: bool = False
) -> bool:
    """Apply an attempt's outcome to its running run (inside complete_attempt's transaction).
    ``conditional``: the run was not read under a lock, so it is written only while still
    running; False when it was not (nothing else is done)."""
    run.error_class, run.error = error_class, outcome.error
    run.result, run.result_truncated = _cap(outcome.result or "")
    run.usage = dict(outcome.usage or {})
    if outcome.status == "succeeded":
        run.attempts += 1
        run.status = Run.Status.SUCCEEDED
    elif outcome.status == "aborted":
        run.attempts += 1
        run.status = Run.Status.ABORTED
    else:
        action = errors.policy(error_class)
        if action == errors.WAIT:  # rate limited: wait, not a failed attempt
            run.status = Run.Status.SCHEDULED
            wait = errors.retry_after_for(run, outcome.error, outcome.retry_after)
            run.run_after = run.next_attempt_at = now + timedelta(seconds=wait)
            # woken at the end of the backoff (its key is held until then), not at a tick
            member = admission.backoff_member(run)
            transaction.on_commit(lambda: send_wake(run.pk, wait, member=member))
        elif action == errors.BLOCK:
            run.attempts += 1
            run.status = Run.Status.BLOCKED
        elif action == errors.RETRY and run.attempts + 1 < run.max_attempts:
            run.attempts += 1
            run.status = Run.Status.SCHEDULED
            run.run_after = run.next_attempt_at = now + timedelta(
                seconds=errors.backoff_seconds(run.attempts)
            )
        else:
            run.attempts += 1
            run.status = Run.Status.FAILED
    if run.status in Run.FINAL:
        run.finished_at = now
    if conditional:
        values = {name: getattr(run, name) for name in SETTLED_FIELDS}
        if rawsql.update(Run, values, id=run.pk, status=Run.Status.RUNNING) != 1:
            return False
    else:
        run.save(update_fields=SETTLED_FIELDS)
    if run.status == Run.Status.BLOCKED:
        errors.provider_blocked(run, outcome.error)
    if run.status in Run.FINAL:
        finished(run)
    if run.gateway or run.agent or (run.job_id is not None and run.job and run.job.concurrency_limit):
        # It held a slot under a concurrency limit: offer the slot at once. The starved flag
        # alone races (a claim can take the last free slot without flagging the runs still
        # held back), and agent runs end in the listener, where no dispatch follows otherwise.
        # Coalesced (wake_up): when 50 runs end at once (an emergency stop's aborts) a few
        # waiting messages drain the queue instead of 50 dispatches competing for the CPU.
        transaction.on_commit(lambda: wake_up(Priority.URGENT))
    # A run no limit applies to frees no slot a held-back run waits for: no starved-flag check
    # (it was a Redis round trip after every completion).
    return True


def finished(run: Run) -> None:
    """A run reached a final state: its job's on_error, the signal (on commit)."""
    if run.status in (Run.Status.FAILED, Run.Status.LOST):
        on_error(run)
    alerts.on_run_final(run)
    transaction.on_commit(lambda: signals.run_finished.send(sender=Run, run=run))


def on_error(run: Run) -> None:
    """The job's policy after a final failure: an alert, another job's run, or nothing. A run
    queued by an on-error policy only alerts when it fails (no chains, no loops)."""
    job = run.job
    if job is None or job.on_error == Job.OnError.NOTHING:
        return
    message = f"job {job.name}: run {run.pk} {run.status} after {run.attempts} attempt(s)"
    if run.error_class:
        message += f" ({run.error_class}: {run.error[:300]})"
    chained = run.triggered_by.startswith("on_error of run")
    if job.on_error == Job.OnError.RUN_JOB and job.on_error_job is not None and not chained:
        try:
            enqueue(
                job.on_error_job,
                input={"run": run.pk, "job": job.name, "error_class": run.error_class, "error": run.error},
                trigger=Run.Trigger.SYSTEM,
                triggered_by=f"on_error of run {run.pk}",
            )
            return
        except ValidationError as exc:
            message += f"; its on-error job {job.on_error_job.name} could not be queued: {exc.messages[0]}"
    Alert.objects.create(source=f"job:{job.name}"[:50], message=message)
    live.ALERT_RAISED.send_on_commit()


# --- dispatch messages ---------------------------------------------------------------------------


def queue_name(priority: str) -> str:
    from .tasks import dispatch

    return f"{dispatch.app.conf.task_default_queue}.{priority}"


def send_dispatch(priority: str = Priority.NORMAL, count: int = 1) -> int:
    """Send ``count`` wake-ups to the Celery queue of ``priority``; a broker down is logged
    (the tick re-dispatches what waits). Returns how many were sent."""
    from .tasks import dispatch

    sent = 0
    try:
        for _ in range(count):
            dispatch.apply_async(queue=queue_name(priority))
            sent += 1
    except Exception:
        log.warning("could not send a dispatch message (broker down?)", exc_info=True)
    return sent


def wake_up(priority: str) -> None:
    """A run of ``priority`` was queued: its wake-up. One message per run, unless
    AGENTFLOW_DISPATCH_PENDING_MAX is set and that many already wait in the priority's Celery
    queue: each of them starts, when a worker takes it, every eligible run committed before
    (the dispatch task drains), so this run is among them. Checked on the broker's list after
    the commit; a broker that cannot say gets the message. Eager Celery (tasks run in this
    process) puts nothing on the broker, so whatever its lists hold says nothing then."""
    from .tasks import dispatch

    pending_max = settings.AGENTFLOW_DISPATCH_PENDING_MAX
    eager = bool(dispatch.app.conf.task_always_eager)
    if pending_max > 0 and not eager and settings.CELERY_BROKER_URL == settings.REDIS_URL:
        try:
            if get_redis().llen(queue_name(priority)) >= pending_max:
                return
        except Exception:
            log.debug("could not read the length of %s", queue_name(priority), exc_info=True)
    send_dispatch(priority)


def wake_many(priority: str, count: int) -> int:
    """``count`` runs of ``priority`` were queued at once (a requeue, a promotion): their
    wake-ups. With coalesced wake-ups (AGENTFLOW_DISPATCH_PENDING_MAX > 0) at most that many
    messages, since each dispatch starts runs until none is eligible (one message per run was
    500 broker round trips for a 500-run requeue before the first could start); otherwise one
    per run. Returns how many were sent."""
    pending_max = settings.AGENTFLOW_DISPATCH_PENDING_MAX
    return send_dispatch(priority, min(count, pending_max) if pending_max > 0 else count)


def send_wake(run_id: int | None, countdown: float, *, at: float | None = None, member: str = "") -> None:
    """A wake-up at the end of a wait for admission: of a run (``run_id``) or of a key's next
    slot (``at``, epoch seconds), for the runs of the hold ``member``. The tick is the fallback
    if the broker is down."""
    from .tasks import wake

    kwargs: dict[str, Any] = {"at": at} if at is not None else {}
    if member:
        kwargs["member"] = member
    try:
        wake.apply_async((run_id,), kwargs, countdown=max(0.0, countdown), queue=queue_name(Priority.URGENT))
    except Exception:
        log.warning("could not send a wake-up for run %s (broker down?)", run_id, exc_info=True)


def kick_if_starved() -> None:
    """A run ended while a limit held others back: one wake-up so its slot is used now."""
    try:
        if get_redis().getdel(_starved_key()):
            send_dispatch(Priority.URGENT)
    except Exception:
        log.warning("could not check the starved flag", exc_info=True)
