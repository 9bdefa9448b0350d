"""What happens with a run's result (issue 11 §4): a job's result actions, delivered and retried.

1. :func:`on_run_finished` (``signals.run_finished``, on commit): for a run of a job, every
   enabled ``ResultAction`` of the job whose ``when`` matches (``success``: succeeded;
   ``failure``: failed or lost) gets one ``ResultDelivery`` (unique per run × action: a second
   signal adds nothing), and one Celery task each (``scheduler.tasks.deliver_result``).
2. :func:`attempt` (the task): claim with a conditional UPDATE (pending and due →
   ``next_attempt_at`` a lease ahead; proceed only if one row changed), then by kind:

   - ``channel``: a ``job.result`` notification to that one channel (``notify.DIRECT``): the
     notification machinery sends it, retries it and logs it (``notification_delivery``);
   - ``github_comment``: ``POST {AGENTFLOW_GITHUB_API_URL}/repos/{full_name}/issues/{n}/comments``
     with ``AGENTFLOW_GITHUB_TOKEN``; the repository and the number come from the run's input
     (the webhook payload: ``repository.full_name`` and ``pull_request.number`` /
     ``issue.number`` / ``number``, also under ``payload`` or ``body``). A run without them is
     ``skipped`` with the reason;
   - ``run_job``: enqueue the target job with ``{"result", "error", "status", "job",
     "from_run", "depth"}`` as input (dedupe key = the delivery: a retry queues nothing twice);
     a chain deeper than ``MAX_DEPTH`` is skipped (A → B → A would never end).
3. Done → ``sent``; a failure a retry can help → ``pending`` at ``now + backoff`` (the
   notifications' full jitter) with a countdown message; else, or after
   AGENTFLOW_RESULT_MAX_ATTEMPTS, ``failed``. Every attempt is one line of ``history``, one log
   line and one automation-log event. :func:`redispatch_due` (the tick) resends lost messages.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from agentflow.lib import eventlog, http

from . import notify
from .notifications import delivery as notification_delivery
from .notifications.senders import retryable
from .result_models import ResultAction, ResultDelivery

log = logging.getLogger("agentflow.results")

MAX_DEPTH = 5
COMMENT_MAX_CHARS = 60_000  # GitHub refuses a comment body over 65,536 characters
REDISPATCH_MAX = 100
SUCCESS = ("succeeded",)
FAILURE = ("failed", "lost")


class Failed(Exception):
    def __init__(self, message: str, *, status: int | None = None, retry: bool = True) -> None:
        super().__init__(message)
        self.message, self.status, self.retry = message, status, retry


class Skipped(Exception):
    """Nothing to do for this run (no PR to comment on, a chain too deep)."""


# --- 1. recording ----------------------------------------------------------------------------------


def when_of(status: str) -> str | None:
    if status in SUCCESS:
        return ResultAction.When.SUCCESS
    if status in FAILURE:
        return ResultAction.When.FAILURE
    return None


def on_run_finished(sender: object, run: Any, **kwargs: object) -> None:
    """The engine's signal: record and dispatch the run's result deliveries (never raises)."""
    try:
        record(run)
    except Exception:
        log.exception("run %s: its result actions could not be recorded", run.pk)


def record(run: Any) -> list[ResultDelivery]:
    when = when_of(run.status)
    if run.job_id is None or when is None or run.kind == "batch":
        return []
    actions = list(
        ResultAction.objects.filter(job_id=run.job_id, when=when, enabled=True).select_related(
            "channel", "target_job"
        )
    )
    made = []
    for action in actions:
        try:
            with transaction.atomic():
                made.append(
                    ResultDelivery.objects.create(
                        run=run, action=action, kind=action.kind, when=when, target=action.target_label[:300]
                    )
                )
        except IntegrityError:
            continue  # already recorded for this run (a repeated signal)
    for row in made:
        transaction.on_commit(partial(dispatch, str(row.pk)))
    return made


def dispatch(delivery_id: str, countdown: float | None = None) -> bool:
    from .tasks import deliver_result  # tasks imports this module

    try:
        if countdown is None:
            deliver_result.delay(delivery_id)
        else:
            deliver_result.apply_async((delivery_id,), countdown=countdown)
    except Exception:
        log.warning("could not queue result delivery %s (broker down?): the tick retries it", delivery_id)
        return False
    return True


# --- 2. one attempt ----------------------------------------------------------------------------------


def attempt(delivery_id: Any, now: datetime | None = None) -> float | None:
    """One attempt if the delivery is pending and due; the seconds to the retry it scheduled, or None."""
    now = now or timezone.now()
    lease = timedelta(seconds=notification_delivery.lease_seconds())
    if not ResultDelivery.objects.filter(
        pk=delivery_id, status=ResultDelivery.Status.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=now + lease):
        return None
    row = ResultDelivery.objects.select_related("run", "action__channel", "action__target_job").get(
        pk=delivery_id
    )
    number = row.attempts + 1
    try:
        note, status = _perform(row)
    except Skipped as exc:
        return _save(row, now, number, ResultDelivery.Status.SKIPPED, None, str(exc), "")
    except Failed as exc:
        error, status, retry = exc.message, exc.status, exc.retry
    except Exception as exc:  # a bug: recorded and retried like a failure
        log.exception("result delivery %s failed", row.pk)
        error, status, retry = f"{type(exc).__name__}: {exc}"[:300], None, True
    else:
        return _save(row, now, number, ResultDelivery.Status.SENT, status, note, "")
    error = http.scrub(error, [settings.AGENTFLOW_GITHUB_TOKEN])
    if not retry or number >= settings.AGENTFLOW_RESULT_MAX_ATTEMPTS:
        return _save(row, now, number, ResultDelivery.Status.FAILED, status, "", error)
    wait = notification_delivery.backoff_seconds(number)
    return _save(row, now, number, ResultDelivery.Status.PENDING, status, "", error, wait=wait)


def _perform(row: ResultDelivery) -> tuple[str, int | None]:
    if row.action is None:
        raise Skipped("the result action was deleted")
    if row.kind == ResultAction.Kind.CHANNEL:
        return _to_channel(row), None
    if row.kind == ResultAction.Kind.GITHUB_COMMENT:
        return _github_comment(row)
    if row.kind == ResultAction.Kind.RUN_JOB:
        return _run_job(row), None
    raise Failed(f"unknown result action kind {row.kind!r}", retry=False)


def _subject(run: Any) -> str:
    verb = "succeeded" if run.status in SUCCESS else run.status
    return f"{run.job_name}: run {run.pk} {verb}"


def _reply(run: Any) -> str:
    return run.result if run.status in SUCCESS else (run.error or f"the run {run.status}")


def _to_channel(row: ResultDelivery) -> str:
    channel = row.action.channel if row.action else None
    if channel is None:
        raise Skipped("the channel was deleted")
    if row.notification_delivery_id is None:
        run = row.run
        event = notify.Event(
            kind="job.result",
            subject=_subject(run),
            text=_reply(run)[:3500],
            level="info" if run.status in SUCCESS else "error",
            link=f"/runs/{run.pk}/",
            channel=channel.pk,
            data={"run_id": run.pk, "job": run.job_name, "status": run.status},
        )
        notification = notification_delivery.record(event)
        handed = notification.deliveries.first()
        if handed is None:
            raise Failed("the channel took no delivery", retry=False)
        ResultDelivery.objects.filter(pk=row.pk).update(notification_delivery=handed)
    return f"handed to channel {channel.name} (the notification delivery retries and logs it)"


def github_target(value: Any) -> tuple[str, int] | None:
    """(``owner/name``, PR or issue number) from a webhook payload in a run's input, or None."""
    candidates = [value]
    if isinstance(value, Mapping):
        candidates += [value.get(k) for k in ("payload", "body", "data")]
    for item in candidates:
        if isinstance(item, str):
            try:
                item = json.loads(item)
            except ValueError:
                continue
        if not isinstance(item, Mapping):
            continue
        repo = item.get("repository")
        full_name = repo.get("full_name") if isinstance(repo, Mapping) else None
        number = None
        for holder in ("pull_request", "issue"):
            inner = item.get(holder)
            if isinstance(inner, Mapping) and isinstance(inner.get("number"), int):
                number = inner["number"]
                break
        if number is None and isinstance(item.get("number"), int):
            number = item["number"]
        if isinstance(full_name, str) and full_name.count("/") == 1 and number:
            return full_name, int(number)
    return None


def _github_comment(row: ResultDelivery) -> tuple[str, int | None]:
    run = row.run
    target = github_target(run.input)
    if target is None:
        raise Skipped("the run's input names no GitHub repository and PR or issue number")
    token = settings.AGENTFLOW_GITHUB_TOKEN
    if not token:
        raise Failed("AGENTFLOW_GITHUB_TOKEN is not set", retry=False)
    full_name, number = target
    link = f"/runs/{run.pk}/"
    if settings.AGENTFLOW_PUBLIC_URL:
        link = settings.AGENTFLOW_PUBLIC_URL.rstrip("/") + link
    footer = f"<sub>AgentFlow: run [{run.pk}]({link}) of job `{run.job_name}`</sub>"
    body = f"{_reply(run)[:COMMENT_MAX_CHARS]}\n\n{footer}"
    url = f"{settings.AGENTFLOW_GITHUB_API_URL.rstrip('/')}/repos/{full_name}/issues/{number}/comments"
    try:
        answer = http.request(
            "POST",
            url,
            body=json.dumps({"body": body}).encode(),
            headers={
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
            },
            timeout=settings.AGENTFLOW_GITHUB_TIMEOUT_SECONDS,
            secrets=[token],
        )
    except http.HttpError as exc:
        raise Failed(str(exc)) from None
    if not answer.ok:
        detail = answer.text(200)
        raise Failed(
            f"POST {full_name}#{number} comments: HTTP {answer.status} ({detail})",
            status=answer.status,
            retry=retryable(answer.status),
        )
    return f"commented on {full_name}#{number}", answer.status


def _run_job(row: ResultDelivery) -> str:
    from . import queue  # queue imports signals, which this module's receiver is connected to

    run = row.run
    target = row.action.target_job if row.action else None
    if target is None:
        raise Skipped("the target job was deleted")
    depth = (run.input.get("depth", 0) if isinstance(run.input, Mapping) else 0) + 1
    if not isinstance(depth, int) or depth > MAX_DEPTH:
        raise Skipped(f"a chain of result actions deeper than {MAX_DEPTH} runs is not followed")
    payload = {
        "result": run.result,
        "error": run.error,
        "status": run.status,
        "job": run.job_name,
        "from_run": run.pk,
        "depth": depth,
    }
    try:
        started = queue.enqueue(
            target,
            input=payload,
            trigger="system",
            triggered_by=f"result of run {run.pk}",
            dedupe_key=f"result:{row.pk}",
        )
    except ValidationError as exc:
        raise Failed("; ".join(exc.messages), retry=False) from None
    ResultDelivery.objects.filter(pk=row.pk).update(started_run=started)
    return f"queued run {started.pk} of job {target.name}"


def _save(
    row: ResultDelivery,
    now: datetime,
    number: int,
    status: str,
    response_status: int | None,
    note: str,
    error: str,
    wait: float | None = None,
) -> float | None:
    line = {
        "n": number,
        "at": now.isoformat(),
        "status": response_status,
        "result": status if status != ResultDelivery.Status.PENDING else "retry",
        "note": note[:300],
        "error": error[:300],
    }
    ResultDelivery.objects.filter(pk=row.pk).update(
        status=status,
        attempts=number,
        next_attempt_at=now + timedelta(seconds=wait) if wait is not None else None,
        response_status=response_status,
        note=note[:2000],
        error=error[:2000],
        history=[*(row.history or []), line][-20:],
        sent_at=now if status == ResultDelivery.Status.SENT else None,
    )
    event = "result.retry" if wait is not None else f"result.{status}"
    eventlog.emit(
        event,
        run_id=row.run_id,
        job=row.run.job_name,
        action=row.kind,
        target=row.target,
        attempt=number,
        note=note[:200],
        error=error[:200],
    )
    log.info(
        "run %s result action %s (%s): %s %s", row.run_id, row.kind, row.target, line["result"], note or error
    )
    return wait


def deliver(delivery_id: Any) -> None:
    """The task's body: one attempt, then a countdown message for the retry it scheduled."""
    wait = attempt(delivery_id)
    if wait is not None:
        dispatch(str(delivery_id), countdown=wait)


def redispatch_due(now: datetime) -> int:
    """The tick's pass: a fresh message for each delivery due for a while (a lost message)."""
    cutoff = now - timedelta(seconds=settings.AGENTFLOW_REDISPATCH_AFTER_SECONDS)
    due = list(
        ResultDelivery.objects.due(cutoff)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:REDISPATCH_MAX]
    )
    sent = 0
    for pk in due:
        if not dispatch(str(pk)):
            break
        sent += 1
    return sent


def on_run_finished_log(sender: object, run: Any, **kwargs: object) -> None:
    """The automation log's ``run.finished`` line (batch runs are the batch page's)."""
    if run.kind == "batch":
        return
    eventlog.emit(
        "run.finished",
        run_id=run.pk,
        job=run.job_name or run.kind,
        status=run.status,
        error_class=run.error_class,
        error=(run.error or "")[:200],
        attempts=run.attempts,
        trigger=run.trigger,
    )


def connect() -> None:
    from . import signals

    signals.run_finished.connect(on_run_finished_log, dispatch_uid="scheduler-run-log")
    signals.run_finished.connect(on_run_finished, dispatch_uid="scheduler-result-actions")
