"""The emergency stop: stop everything (or one gateway, agent, priority queue or provider) at once,
persistently, until a person releases it.

Engaging (:func:`engage`), in this order:

1. the stop is a row, committed first (the database decides when Redis cannot answer), then
   mirrored to a Redis hash that every worker reads before it starts a run (:func:`enter`);
   from then on intake parks new runs in scope (``queue.enqueue``) and the claim skips them;
2. the fence: sends that passed the check just before the mirror was written are waited for
   (at most AGENTFLOW_STOP_FENCE_SECONDS), so ``engaged_at`` is the instant after which nothing
   in scope reaches a gateway;
3. waiting runs in scope are parked, held by the stop (``Run.stop``);
4. the stop hooks run (registered by the apps above the engine, ARCHITECTURE.md rule 6): fleet
   aborts every in-flight run in scope on its gateway (``chat.abort`` per runId,
   ``sessions.abort {clearQueued}`` for every active session in scope) and switches the
   gateway's own cron off, remembering what it was; the executor (a later issue) kills commands;
5. the in-flight runs are settled as aborted, held by the stop;
6. the state is saved on the row: which runs it parked and aborted, what the hooks changed,
   each step's duration;
7. people are told (scheduler.notify) and open pages show the banner (a live event).

Releasing (:func:`release`) restores what the hooks changed (the gateway's cron exactly as it was)
and replays nothing: the runs it holds wait for an operator's :func:`requeue` or cancel.

The five monitoring batches (kind ``batch``) are not stopped: they keep the dashboard truthful
during a stop and never prompt an agent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from agentflow.lib import eventlog
from agentflow.lib.redis import get_redis, key, write_pipeline

from . import actions, audit, errors, live, notify, queue, scopes
from .actions import Finished
from .audit import Actor, Target
from .models import Attempt, EmergencyStop, Priority, QueuePause, Run

log = logging.getLogger("agentflow.stops")

Scope = EmergencyStop.Scope
EXEMPT_KINDS = ("batch",)
SYNCED = "_synced"  # the mirror's sentinel field: absent = Redis lost it, ask the database
BANNER = "_banner"  # the pages' banner rows (JSON)


# --- what a stop covers --------------------------------------------------------------------------


def _column(scope: str) -> str:
    return {
        Scope.GATEWAY: "gateway",
        Scope.AGENT: "agent",
        Scope.PRIORITY: "priority",
        Scope.PROVIDER: "provider",
    }[Scope(scope)]


def values_of(stop: EmergencyStop) -> list[str]:
    """The strings a covered run carries in the stop's column (a gateway's name and its id)."""
    if stop.scope == Scope.GLOBAL:
        return []
    return scopes.aliases(stop.scope, stop.value)


def stop_q(stops: Iterable[EmergencyStop]) -> Q | None:
    """The runs the stops cover, as a filter (None: no stop)."""
    q: Q | None = None
    for stop in stops:
        if stop.scope == Scope.GLOBAL:
            part = Q(pk__isnull=False)
        else:
            part = Q(**{f"{_column(stop.scope)}__in": values_of(stop)})
        q = part if q is None else q | part
    if q is None:
        return None
    return q & ~Q(kind__in=EXEMPT_KINDS)


def covers(stop: EmergencyStop, run: Run) -> bool:
    if run.kind in EXEMPT_KINDS:
        return False
    if stop.scope == Scope.GLOBAL:
        return True
    return str(getattr(run, _column(stop.scope))) in values_of(stop)


def covering(run: Run, stops: Iterable[EmergencyStop] | None = None) -> EmergencyStop | None:
    """The first engaged stop that covers ``run`` (database)."""
    for stop in EmergencyStop.objects.engaged() if stops is None else stops:
        if covers(stop, run):
            return stop
    return None


def engaged() -> list[EmergencyStop]:
    return list(EmergencyStop.objects.engaged().order_by("engaged_at", "id"))


# --- the Redis mirror and the fence --------------------------------------------------------------


def mirror_key() -> str:
    return key("stops")


def sending_key() -> str:
    return key("stops", "sending")


def _fields_of(stop: EmergencyStop) -> list[str]:
    if stop.scope == Scope.GLOBAL:
        return ["global:"]
    return [f"{stop.scope}:{value}" for value in values_of(stop)]


def _fields_for(run: Run) -> list[str]:
    return [
        "global:",
        f"gateway:{run.gateway}",
        f"agent:{run.agent}",
        f"priority:{run.priority}",
        f"provider:{run.provider}",
    ]


def sync_mirror(rows: list[EmergencyStop] | None = None) -> int:
    """Rewrite the mirror from the database (engage, release, and every tick: a Redis that
    restarted empty is refilled); ``rows``: the engaged stops, when just read. Returns how many."""
    rows = engaged() if rows is None else rows
    mapping: dict[Any, Any] = {
        SYNCED: str(int(time.time())),
        BANNER: json.dumps([_banner_row(s) for s in rows]),
    }
    for stop in rows:
        for name in _fields_of(stop):
            mapping.setdefault(name, str(stop.pk))
    pipe = get_redis().pipeline(transaction=True)
    pipe.delete(mirror_key())
    pipe.hset(mirror_key(), mapping=mapping)
    pipe.execute()
    return len(rows)


def _banner_row(stop: EmergencyStop) -> dict[str, Any]:
    return {
        "id": stop.pk,
        "label": stop.scope_label,
        "reason": stop.reason,
        "who": stop.who,
        "since": stop.engaged_at.isoformat(),
        "automatic": stop.automatic,
    }


def announce() -> None:
    """Tell every open page which stops are engaged (the banner rows, drawn without a request)."""
    try:
        live.STOP_CHANGED.send(stops=[_banner_row(s) for s in engaged()])
    except Exception:
        log.warning("stop banner: the live event was not sent", exc_info=True)


def banner() -> list[dict[str, Any]]:
    """What every page's banner shows of the engaged stops, from the mirror (no database query in
    the common case: pages keep their query budgets); from the database when Redis lost it."""
    try:
        raw = get_redis().hget(mirror_key(), BANNER)
    except Exception:
        raw = None
    if raw is None:
        found = engaged()
        rows = [_banner_row(s) for s in found]
        with contextlib.suppress(Exception):
            sync_mirror(found)
    else:
        rows = json.loads(raw)
    for row in rows:
        row["since"] = datetime.fromisoformat(row["since"])
    return rows


# KEYS: mirror, sending, the automation log's stream. ARGV: member ("" for intake: nothing
# registered), now, the log line to append when clear ("" for none), the stream's approximate
# length cap, then the run's fields. -1: the mirror is not there (the database decides); a
# stop's id: it covers the run; 0: clear (the send is registered, the line appended).
_ENTER = """
if redis.call('HEXISTS', KEYS[1], '_synced') == 0 then return -1 end
for i = 5, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v then return tonumber(v) end
end
if ARGV[1] ~= '' then redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1]) end
if ARGV[3] ~= '' then redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'data', ARGV[3]) end
return 0
"""

# KEYS: mirror, sending. ARGV: member, then the run's fields. The covering stop's id, or 0.
_LEAVE = """
redis.call('ZREM', KEYS[2], ARGV[1])
for i = 2, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v then return tonumber(v) end
end
return 0
"""

_scripts: dict[str, Any] = {}


def _script(name: str, body: str) -> Any:
    client = get_redis()
    cached = _scripts.get(name)
    if cached is None or cached[0] is not client:
        cached = (client, client.register_script(body))
        _scripts[name] = cached
    return cached[1]


def enter(run: Run, member: str, started: tuple[str, Mapping[str, Any]] | None = None) -> int | None:
    """Before a worker starts ``run``: the id of the engaged stop that covers it (then it must not
    start), or None (it may; ``member`` is registered as sending until :func:`leave`). Redis down
    or its mirror lost: the database decides (and the mirror is rewritten when Redis answers).
    ``started``: the automation log's line ``(event, fields)`` for a start that may go ahead,
    appended in the same round trip (or by eventlog.emit when the database decided)."""
    decided, logged = _check(run, member, eventlog.line(*started) if started is not None else "")
    if decided is None and started is not None and not logged:
        eventlog.emit(started[0], **started[1])  # the database decided (lost too while Redis is away)
    return decided


def _check(run: Run, member: str, line: str) -> tuple[int | None, bool]:
    """:func:`enter`'s decision, and whether the stop check's script appended ``line``."""
    if run.kind in EXEMPT_KINDS:
        return None, False
    try:
        found = int(
            _script("enter", _ENTER)(
                keys=[mirror_key(), sending_key(), eventlog.stream_key()],
                args=[member, time.time(), line, settings.AGENTFLOW_EVENT_LOG_MAX, *_fields_for(run)],
            )
        )
    except Exception:
        log.warning("stop check: Redis did not answer, the database decides", exc_info=True)
        stop = covering(run)
        return (stop.pk if stop is not None else None), False
    if found == 0:
        return None, bool(line)
    return _decide(run, member, found), False


def _decide(run: Run, member: str, found: int) -> int | None:
    """:func:`enter` when the mirror named a stop or was missing."""
    if found > 0 and EmergencyStop.objects.engaged().filter(pk=found).exists():
        return found
    # No mirror (Redis restarted empty), or a stale one (a stop the database does not have
    # engaged: a restored database, another install's keys): the database decides.
    stop = covering(run)
    try:
        sync_mirror()
    except Exception:
        log.warning("stop mirror: could not rewrite it", exc_info=True)
    if stop is None and member:
        with contextlib.suppress(Exception):
            get_redis().zadd(sending_key(), {member: time.time()})
    return stop.pk if stop is not None else None


def intake(run: Run) -> int | None:
    """The engaged stop that covers a run being queued (it is then recorded parked), or None."""
    return enter(run, "")


def leave(run: Run, member: str) -> int | None:
    """After the start returned: unregister the send; the id of a stop engaged meanwhile that
    covers the run (its start must then be undone: the caller aborts it), or None."""
    if run.kind in EXEMPT_KINDS:
        return None
    try:
        found = int(
            _script("leave", _LEAVE)(keys=[mirror_key(), sending_key()], args=[member, *_fields_for(run)])
        )
    except Exception:
        log.warning("stop check after start: Redis did not answer, the database decides", exc_info=True)
        stop = covering(run)
        return stop.pk if stop is not None else None
    return found or None


def leave_later(run: Run, member: str) -> None:
    """:func:`leave` for a start that sent nothing and whose answer nobody needs (the action
    finished at once): the send is unregistered in the open ``redis.batched()`` block's round
    trip (or now, outside one). Never raises: a member left behind only makes the next fence
    wait for it (at most AGENTFLOW_STOP_FENCE_SECONDS; the fence drops members an hour old)."""
    if run.kind in EXEMPT_KINDS:
        return
    try:
        pipe, execute = write_pipeline()
        pipe.zrem(sending_key(), member)  # _LEAVE's first line, without the answer nobody reads
        if execute:
            pipe.execute()
    except Exception:
        log.warning("could not unregister run %s's start (Redis down?)", run.pk, exc_info=True)


def _wait_for_sends(since: float, deadline: float) -> int:
    """Wait until no send registered before ``since`` is still in progress (or the deadline).
    Returns how many were still in progress at the deadline."""
    client = get_redis()
    while True:
        left = client.zcount(sending_key(), "-inf", since)
        if not left or time.monotonic() >= deadline:
            if left:  # a worker killed mid-send leaves its member: drop what is that old
                client.zremrangebyscore(sending_key(), "-inf", since - 3600)
            return int(left)
        time.sleep(0.005)


# --- hooks -----------------------------------------------------------------------------------------


@dataclass
class HookResult:
    """What a hook did: ``state`` is saved on the stop (handed back to its release), ``notes``
    are shown to the operator, ``aborted``: the runs it aborted on their gateway."""

    state: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StopHook:
    """``engage(stop, in_flight)`` gets the running runs in scope with their running attempts;
    ``release(stop, state)`` gets what its engage saved and the stops still engaged."""

    name: str
    engage: Callable[[EmergencyStop, Sequence[tuple[Run, Attempt]]], HookResult]
    release: Callable[[EmergencyStop, Mapping[str, Any], Sequence[EmergencyStop]], HookResult] | None = None


_HOOKS: dict[str, StopHook] = {}


def register_hook(hook: StopHook) -> StopHook | None:
    previous = _HOOKS.get(hook.name)
    _HOOKS[hook.name] = hook
    return previous


def unregister_hook(name: str) -> None:
    _HOOKS.pop(name, None)


def hooks() -> list[StopHook]:
    return list(_HOOKS.values())


# --- engage ----------------------------------------------------------------------------------------


def _validate(scope: str, value: str) -> tuple[str, str]:
    if scope in ("all", ""):
        scope = Scope.GLOBAL
    if scope not in Scope.values:
        raise ValidationError(f"unknown scope {scope!r} (one of {', '.join(Scope.values)})", code="bad_scope")
    value = (value or "").strip()
    if scope == Scope.GLOBAL:
        return scope, ""
    if not value:
        raise ValidationError(f"a {scope} stop needs its value (which {scope})", code="bad_scope")
    if scope == Scope.PRIORITY and value not in Priority.values:
        raise ValidationError(
            f"unknown priority {value!r} (one of {', '.join(Priority.values)})", code="bad_priority"
        )
    return scope, value[:100]


def _target(scope: str, value: str) -> Target:
    label = "everything" if scope == Scope.GLOBAL else f"{scope} {value}"
    return Target("stop", f"{scope}:{value}" if value else scope, label)


class _Steps:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._t = time.perf_counter()

    def done(self, step: str, note: str = "") -> None:
        now = time.perf_counter()
        self.rows.append({"step": step, "ms": round((now - self._t) * 1000, 2), "note": note})
        self._t = now


def engage(
    actor: Actor, scope: str = Scope.GLOBAL, value: str = "", reason: str = "", *, automatic: str = ""
) -> EmergencyStop:
    """Engage a stop (the steps in the module's docstring). The same scope already engaged: that
    stop is returned and nothing else happens. Needs the admin role; audited."""
    requested = timezone.now()
    with audit.control("stop.engage", actor, _target(scope, value), needs="administer", reason=reason) as ctl:
        scope, value = _validate(scope, value)
        if not reason.strip():
            raise ValidationError("an emergency stop needs a reason", code="no_reason")
        existing = EmergencyStop.objects.engaged().filter(scope=scope, value=value).first()
        if existing is not None:
            ctl.note(f"stop {existing.pk} already engaged for {existing.scope_label}")
            return existing
        steps = _Steps()
        stop = EmergencyStop.objects.create(
            scope=scope,
            value=value,
            reason=reason.strip(),
            who=actor.label[:200],
            automatic=automatic[:60],
            requested_at=requested,
            engaged_at=requested,
        )
        notes: list[str] = []
        since = time.time()
        try:
            sync_mirror()
            announce()  # every open page shows the banner now, not after the steps
            steps.done("intake", "recorded and mirrored: intake parks, workers refuse new starts")
            left = _wait_for_sends(since, time.monotonic() + settings.AGENTFLOW_STOP_FENCE_SECONDS)
            steps.done("fence", f"{left} send(s) still in progress: aborted when they return" if left else "")
        except Exception as exc:
            notes.append(
                f"Redis did not answer ({type(exc).__name__}): workers read the stop from the database"
            )
            steps.done("intake", notes[-1])
        stop.engaged_at = timezone.now()
        covered = stop_q([stop])
        assert covered is not None
        with transaction.atomic():
            # (a run another stop holds stays its: released first, it is then that stop's to decide)
            Run.objects.waiting().filter(covered, stop__isnull=True).update(
                status=Run.Status.PARKED, stop=stop
            )
        parked_ids = list(
            Run.objects.filter(stop=stop, status=Run.Status.PARKED).values_list("pk", flat=True)
        )
        steps.done("park", f"{len(parked_ids)} waiting run(s) parked")
        in_flight = _in_flight(covered)
        saved: dict[str, Any] = {}
        for hook in hooks():
            try:
                result = hook.engage(stop, in_flight)
            except Exception as exc:
                log.exception("stop %s: hook %s failed", stop.pk, hook.name)
                result = HookResult(notes=[f"{hook.name}: failed ({type(exc).__name__}: {exc})"])
            saved[hook.name] = result.state
            notes.extend(result.notes)
            steps.done(f"hook:{hook.name}", "; ".join(result.notes))
        aborted_ids = _abort(stop, in_flight)
        steps.done("abort", f"{len(aborted_ids)} running run(s) aborted")
        EmergencyStop.objects.filter(pk=stop.pk).update(
            engaged_at=stop.engaged_at,
            parked_ids=parked_ids,
            aborted_ids=aborted_ids,
            saved_state=saved,
            steps=steps.rows,  # each note is on the step that made it
            completed_at=timezone.now(),
        )
        stop.refresh_from_db()
        notify.send(
            notify.Event(
                kind="stop.engaged",
                subject=f"Emergency stop engaged: {stop.scope_label}",
                text=(
                    f"{stop.who} stopped {stop.scope_label}: {stop.reason}\n"
                    f"{len(aborted_ids)} running run(s) aborted, {len(parked_ids)} parked."
                    + "".join(f"\n- {n}" for n in notes)
                ),
                level="critical",
                thread=f"stop:{stop.pk}",
                link=f"/stops/{stop.pk}/",
                data={"stop": stop.pk, "scope": stop.scope, "value": stop.value, "automatic": stop.automatic},
            )
        )
        ctl.note(
            f"stop {stop.pk}: {len(aborted_ids)} aborted, {len(parked_ids)} parked"
            + "".join(f"; {n}" for n in notes)
        )
    log.warning(
        "emergency stop %s engaged by %s for %s: %s", stop.pk, stop.who, stop.scope_label, stop.reason
    )
    return stop


def _in_flight(covered: Q) -> list[tuple[Run, Attempt]]:
    runs = {r.pk: r for r in Run.objects.in_flight().filter(covered)}
    if not runs:
        return []
    attempts = Attempt.objects.filter(run_id__in=list(runs), status=Attempt.Status.RUNNING).order_by("number")
    latest = {a.run_id: a for a in attempts}
    return [(runs[pk], latest[pk]) for pk in runs if pk in latest]


def _abort(stop: EmergencyStop, in_flight: Sequence[tuple[Run, Attempt]]) -> list[int]:
    """Settle the in-flight runs as aborted (first terminal wins: a run whose aborted event the
    listener already recorded keeps it) and hold them by the stop."""
    why = f"emergency stop {stop.pk} ({stop.scope_label}): {stop.reason}"[:2000]
    for _run, attempt in in_flight:
        queue.complete_attempt(attempt.pk, Finished("aborted", errors.ABORTED, why))
    ids = [run.pk for run, _ in in_flight]
    Run.objects.filter(pk__in=ids, status=Run.Status.ABORTED).update(stop=stop)
    return list(Run.objects.filter(pk__in=ids, stop=stop).values_list("pk", flat=True))


def abort_started(run: Run, attempt: Attempt, stop_id: int) -> None:
    """A start that returned after a stop engaged (the fence's deadline passed): undo it on its
    gateway through the action's cancel, and settle it aborted, held by that stop."""
    stop = EmergencyStop.objects.filter(pk=stop_id).first()
    if stop is None:
        return
    spec = actions.find_action(run.kind)
    if spec is not None and spec.cancel is not None:
        try:
            spec.cancel(
                actions.AttemptContext(
                    run=run, attempt=attempt, prompt=run.prompt, params=run.params, input=run.input
                )
            )
        except Exception:
            log.exception("stop %s: could not abort run %s after its late start", stop_id, run.pk)
    _abort(stop, [(run, attempt)])
    EmergencyStop.objects.filter(pk=stop_id).update(aborted_ids=list({*stop.aborted_ids, run.pk}))


def park_claimed(run: Run, attempt: Attempt, stop_id: int) -> None:
    """A worker claimed ``run`` but a stop covers it: nothing was sent; the attempt is recorded as
    cancelled (not counted) and the run parked, held by the stop."""
    now = timezone.now()
    with transaction.atomic():
        Attempt.objects.filter(pk=attempt.pk, status=Attempt.Status.RUNNING).update(
            status=Attempt.Status.ABORTED,
            error_class=errors.ABORTED,
            error=f"not started: emergency stop {stop_id} is engaged",
            finished_at=now,
            in_worker=False,
        )
        Run.objects.filter(pk=run.pk, status=Run.Status.RUNNING).update(
            status=Run.Status.PARKED, stop_id=stop_id, next_attempt_at=None
        )


# --- the tick's part -----------------------------------------------------------------------------


def sweep() -> int:
    """Park the waiting runs an engaged stop covers that slipped past it (queued in the instant
    it engaged), and refill the mirror. Returns how many were parked."""
    rows = engaged()
    try:
        sync_mirror()
    except Exception:
        log.warning("stop mirror: Redis did not answer", exc_info=True)
    parked = 0
    for stop in rows:
        covered = stop_q([stop])
        assert covered is not None
        with transaction.atomic():
            ids = list(
                Run.objects.waiting().filter(covered).exclude(stop=stop).values_list("pk", flat=True)[:1000]
            )
            if ids:
                parked += Run.objects.filter(pk__in=ids, status__in=Run.WAITING).update(
                    status=Run.Status.PARKED, stop=stop
                )
                EmergencyStop.objects.filter(pk=stop.pk).update(parked_ids=list({*stop.parked_ids, *ids}))
    return parked


# --- release and requeue -------------------------------------------------------------------------


def release(
    actor: Actor,
    *,
    stop_id: int | None = None,
    scope: str | None = None,
    value: str = "",
    reason: str = "",
) -> list[EmergencyStop]:
    """Release one stop (by id), or the engaged stop of a scope (``scope="all"``: every engaged
    stop). The hooks restore what they changed; the runs the stop holds stay held for
    :func:`requeue` (nothing is replayed automatically). Needs the admin role; audited."""
    return release_and_requeue(
        actor, stop_id=stop_id, scope=scope, value=value, reason=reason, then_requeue=False
    )[0]


def release_and_requeue(
    actor: Actor,
    *,
    stop_id: int | None = None,
    scope: str | None = None,
    value: str = "",
    reason: str = "",
    then_requeue: bool = True,
) -> tuple[list[EmergencyStop], Requeued]:
    """:func:`release`, and the runs the released stops hold requeued at once (the operator's
    one decision for both): as soon as the workers may start again, before the hooks' gateway
    calls (restoring a gateway's cron takes about a second). The requeue is audited as its own
    ``stop.requeue`` row. Returns the stops and what :func:`requeue` did, summed (nothing with
    ``then_requeue=False``: that is :func:`release`)."""
    if stop_id is not None:
        target = Target("stop", str(stop_id), f"stop {stop_id}")
    else:
        target = Target("stop", "all" if scope == "all" else f"{scope}:{value}", scope or "")
    with audit.control("stop.release", actor, target, needs="administer", reason=reason) as ctl:
        if not reason.strip():
            raise ValidationError("releasing an emergency stop needs a reason", code="no_reason")
        rows = EmergencyStop.objects.engaged()
        if stop_id is not None:
            rows = rows.filter(pk=stop_id)
        elif scope != "all":
            scope_, value_ = _validate(scope or "", value)
            rows = rows.filter(scope=scope_, value=value_)
        chosen = list(rows)
        if not chosen:
            raise ValidationError("no such engaged emergency stop", code="not_engaged")
        notes: list[str] = []
        now = timezone.now()
        released = []
        for stop in chosen:
            changed = EmergencyStop.objects.filter(pk=stop.pk, released_at__isnull=True).update(
                released_at=now, released_by=actor.label[:200], release_reason=reason.strip()
            )
            if changed:
                stop.released_at = now
                released.append(stop)
        # Workers may start again now (the mirror first), not after the hooks' gateway calls.
        try:
            sync_mirror()
        except Exception:
            notes.append("Redis did not answer: workers read the release from the database")
        total = Requeued()
        if then_requeue:
            for stop in released:
                done = requeue(actor, "all", stop=stop, reason=reason)
                total.requeued += done.requeued
                total.skipped += done.skipped
                notes.append(f"stop {stop.pk}: {done.requeued} held run(s) requeued")
        still = engaged()
        for stop in released:
            for hook in hooks():
                if hook.release is None:
                    continue
                try:
                    result = hook.release(stop, stop.saved_state.get(hook.name) or {}, still)
                except Exception as exc:
                    log.exception("stop %s: hook %s release failed", stop.pk, hook.name)
                    result = HookResult(notes=[f"{hook.name}: failed ({type(exc).__name__}: {exc})"])
                notes.extend(result.notes)
                if result.state:
                    saved = {**stop.saved_state, f"{hook.name}:release": result.state}
                    EmergencyStop.objects.filter(pk=stop.pk).update(saved_state=saved)
            held = Run.objects.filter(stop=stop).count()
            waiting = (
                f"{held} run(s) wait for an operator to requeue or cancel them."
                if held
                else "No run waits for a decision."
            )
            notify.send(
                notify.Event(
                    kind="stop.released",
                    subject=f"Emergency stop released: {stop.scope_label}",
                    text=(
                        f"{actor.label} released stop {stop.pk} ({stop.scope_label}): {reason.strip()}\n"
                        + waiting
                        + "".join(f"\n- {n}" for n in notes)
                    ),
                    level="warning",
                    thread=f"stop:{stop.pk}",
                    link=f"/stops/{stop.pk}/",
                    data={"stop": stop.pk, "held_runs": held},
                )
            )
        transaction.on_commit(announce)
        ctl.note(f"released {', '.join(str(s.pk) for s in chosen)}" + "".join(f"; {n}" for n in notes))
    for stop in chosen:
        stop.refresh_from_db()
    return chosen, total


def held_runs(stop: EmergencyStop | None = None) -> QuerySet[Run]:
    """Runs a released stop still holds: parked or aborted, waiting for an operator's decision."""
    qs = Run.objects.filter(stop__isnull=False, stop__released_at__isnull=False)
    if stop is not None:
        qs = qs.filter(stop=stop)
    return qs.order_by("id")


@dataclass
class Requeued:
    requeued: int = 0
    cancelled: int = 0
    skipped: list[str] = field(default_factory=list)


def requeue(
    actor: Actor,
    runs: str | Sequence[int] = "all",
    *,
    cancel: bool = False,
    stop: EmergencyStop | None = None,
    reason: str = "",
) -> Requeued:
    """Decide for the runs released stops hold (``"all"``, or a list of ids; ``stop``: only its
    runs): requeue them (parked → queued in their first order, aborted → a new attempt), or
    ``cancel`` them (parked → cancelled; aborted ones stay aborted). A run still covered by an
    engaged stop is skipped with the reason. Needs the admin role; audited."""
    from . import controls

    action = "stop.cancel_held" if cancel else "stop.requeue"
    label = "all held runs" if runs == "all" else f"{len(runs)} run(s)"
    with audit.control(action, actor, Target("runs", "", label), needs="administer", reason=reason) as ctl:
        chosen = held_runs(stop)
        if runs != "all":
            if isinstance(runs, str) or not all(isinstance(i, int) for i in runs):
                raise ValidationError('runs must be "all" or a list of run ids', code="bad_runs")
            wanted = set(runs)
            chosen = chosen.filter(pk__in=wanted)
            missing = wanted - set(chosen.values_list("pk", flat=True))
        else:
            missing = set()
        out = Requeued(skipped=[f"run {pk}: not held by a released stop" for pk in sorted(missing)])
        still = engaged()
        now = timezone.now()
        dispatch: dict[str, int] = {}
        if not cancel and not still and not QueuePause.objects.exists():
            # The common case in two statements: every parked run back to queued, in its first
            # order (selection goes by id), and every aborted one queued for a new attempt (as
            # controls.retry_run does). A dedupe key another run took meanwhile refuses the second
            # statement: those runs then go one by one below, each with its reason.
            counts: Counter[str] = Counter()
            for statuses, fields in (
                ((Run.Status.PARKED,), {}),
                (controls.RETRYABLE, controls.retried_fields(actor)),
            ):
                group = chosen.filter(status__in=statuses)
                priorities = Counter(group.values_list("priority", flat=True))
                try:
                    with transaction.atomic():
                        out.requeued += Run.objects.filter(pk__in=group.values("pk")).update(
                            **fields, status=Run.Status.QUEUED, stop=None
                        )
                except IntegrityError:
                    continue
                counts += priorities
            for priority, n in counts.items():
                transaction.on_commit(partial(queue.wake_many, priority, n))
            chosen = chosen.exclude(status=Run.Status.QUEUED)
        for run in chosen:
            other = covering(run, still)
            if other is not None and not cancel:
                out.skipped.append(f"run {run.pk}: stop {other.pk} ({other.scope_label}) is still engaged")
                continue
            with transaction.atomic():
                if cancel:
                    if run.status == Run.Status.PARKED:
                        Run.objects.filter(pk=run.pk, status=Run.Status.PARKED).update(
                            status=Run.Status.CANCELLED,
                            finished_at=now,
                            error=f"cancelled by {actor.label} after emergency stop {run.stop_id}",
                            stop=None,
                        )
                        run.refresh_from_db()
                        queue.finished(run)
                    else:
                        Run.objects.filter(pk=run.pk).update(stop=None)
                    out.cancelled += 1
                    continue
                if run.status == Run.Status.PARKED:
                    paused = queue.covered_by_pause(run)
                    Run.objects.filter(pk=run.pk, status=Run.Status.PARKED).update(
                        status=Run.Status.PARKED if paused else Run.Status.QUEUED, stop=None
                    )
                    if not paused:
                        dispatch[run.priority] = dispatch.get(run.priority, 0) + 1
                    out.requeued += 1
                elif run.status in controls.RETRYABLE:
                    try:
                        controls._retry(actor, run)
                    except ValidationError as exc:
                        out.skipped.append(exc.messages[0])  # it names the run
                        continue
                    Run.objects.filter(pk=run.pk).update(stop=None)
                    out.requeued += 1
                else:
                    Run.objects.filter(pk=run.pk).update(stop=None)
                    out.skipped.append(f"run {run.pk} is {run.status}: nothing to requeue")
        for priority, n in dispatch.items():
            transaction.on_commit(partial(queue.wake_many, priority, n))
        ctl.note(
            (f"{out.cancelled} cancelled" if cancel else f"{out.requeued} requeued")
            + (f", {len(out.skipped)} skipped" if out.skipped else "")
        )
    return out


def status() -> dict[str, Any]:
    """The engaged stops and what released stops still hold (the API's control/status)."""
    return {
        "engaged": [as_json(s) for s in engaged()],
        "held_runs": held_runs().count(),
        "recently_released": [
            as_json(s)
            for s in EmergencyStop.objects.released().filter(
                released_at__gte=timezone.now() - timedelta(days=1)
            )[:20]
        ],
    }


def as_json(stop: EmergencyStop) -> dict[str, Any]:
    return {
        "id": stop.pk,
        "scope": stop.scope,
        "value": stop.value,
        "label": stop.scope_label,
        "reason": stop.reason,
        "who": stop.who,
        "automatic": stop.automatic,
        "engaged": stop.is_engaged,
        "requested_at": stop.requested_at.isoformat(),
        "engaged_at": stop.engaged_at.isoformat(),
        "completed_at": stop.completed_at.isoformat() if stop.completed_at else None,
        "engage_ms": stop.engage_ms,
        "released_at": stop.released_at.isoformat() if stop.released_at else None,
        "released_by": stop.released_by,
        "release_reason": stop.release_reason,
        "parked": len(stop.parked_ids or []),
        "aborted": len(stop.aborted_ids or []),
        "held_runs": Run.objects.filter(stop=stop).count(),
        "steps": stop.steps,
    }
