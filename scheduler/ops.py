"""Writes of the ops API and commands that are not queue controls: submitting a run and
creating a job. Like :mod:`scheduler.controls`, each runs inside ``audit.control`` (the role is
checked, one audit row is written, refused, failed or done)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone

from . import audit, queue
from .audit import Actor, Target
from .models import Job, Run

AGENT_PROMPT = "agent.prompt"  # the kind fleet registers (fleet/agent_runs.py)
JOB_FIELDS = (
    "name",
    "kind",
    "params",
    "prompt_template",
    "priority",
    "timeout",
    "max_attempts",
    "on_error",
    "on_error_job",
    "concurrency_limit",
    "enabled",
    "tags",
)


def trigger_of(actor: Actor) -> str:
    return Run.Trigger.API_TOKEN if actor.label.startswith("api token") else Run.Trigger.USER


def submit(
    actor: Actor,
    *,
    job: str | None = None,
    kind: str | None = None,
    params: dict[str, Any] | None = None,
    input: Any = None,
    prompt: str | None = None,
    priority: str | None = None,
    timeout: int | None = None,
    run_after: datetime | None = None,
    dedupe_key: str = "",
) -> tuple[Run, bool]:
    """Queue a run as ``actor`` (operator). Returns (run, created): ``created`` is False when
    ``dedupe_key`` is held by an unfinished run, which is returned as it is."""
    label = f"job {job}" if job else f"{kind} run"
    target = Target("job" if job else "run", job or "", label)
    # atomic: the run and its audit row commit together (a busy database refusing the row must
    # not leave a run the caller was told failed, and would queue again)
    with audit.control("run.enqueue", actor, target, atomic=True) as ctl:
        before = timezone.now()
        # No savepoint of its own: an error undoes the whole control's transaction anyway, and
        # enqueue keeps its own around the insert for a dedupe key taken meanwhile.
        run = queue.enqueue(
            job,
            kind=None if job else kind,
            params=params,
            input=input,
            prompt=prompt,
            priority=priority,
            run_after=run_after,
            dedupe_key=dedupe_key,
            trigger=trigger_of(actor),
            triggered_by=actor.label,
            timeout_seconds=timeout,
        )
        created = not (dedupe_key and run.queued_at < before)
        ctl.note(
            f"run {run.pk} {run.status}" + ("" if created else f" (existing, dedupe key {dedupe_key!r})")
        )
    return run, created


def submit_many(actor: Actor, items: Sequence[Mapping[str, Any]]) -> list[tuple[Run, bool]]:
    """Queue several runs as ``actor`` (operator) in one transaction with one audit row. Each
    item holds :func:`submit`'s keyword arguments; a bad one refuses the batch, naming its index
    (:func:`scheduler.queue.enqueue_many`). Returns (run, created) per item, as ``submit``."""
    target = Target("batch", "", f"{len(items)} run(s)")
    specs = [
        {
            ("timeout_seconds" if k == "timeout" else k): v
            for k, v in item.items()
            if (k != "kind" or not item.get("job")) and k != "triggered_by"  # the actor's, never the caller's
        }
        for item in items
    ]
    with audit.control("run.enqueue_many", actor, target, atomic=True) as ctl:
        before = timezone.now()
        runs = queue.enqueue_many(specs, trigger=trigger_of(actor), triggered_by=actor.label)
        seen: set[int] = set()
        results = []
        for run in runs:  # a key repeated in the batch: the first item created the run
            results.append((run, run.queued_at >= before and run.pk not in seen))
            seen.add(run.pk)
        new = [run for run, created in results if created]
        existing = len({run.pk for run, created in results if not created})
        parts = [f"{len(new)} run(s) queued" + (f" (first {new[0].pk}, last {new[-1].pk})" if new else "")]
        if existing:
            parts.append(f"{existing} existing (dedupe key held)")
        ctl.note("; ".join(parts))
    return results


def create_job(actor: Actor, fields: dict[str, Any]) -> Job:
    """A new job from API fields (``timeout`` is ``timeout_seconds``; ``on_error_job`` a name),
    validated as the admin validates it (``Job.full_clean``: the action checks the params)."""
    name = str(fields.get("name") or "")
    with audit.control("job.create", actor, Target("job", name, f"job {name}")) as ctl:
        values = {k: v for k, v in fields.items() if k not in ("timeout", "on_error_job")}
        if "timeout" in fields:
            values["timeout_seconds"] = fields["timeout"]
        job = Job(**values)
        if fields.get("on_error_job"):
            target = Job.objects.filter(name=fields["on_error_job"]).first()
            if target is None:
                raise ValidationError(f"no job named {fields['on_error_job']!r}", code="unknown_job")
            job.on_error_job = target
        try:
            job.full_clean()
        except ValidationError as exc:
            messages = [
                f"{field}: {m}"
                for field, ms in getattr(exc, "message_dict", {"": exc.messages}).items()
                for m in ms
            ]
            raise ValidationError("; ".join(messages), code="invalid_job") from None
        job.save()
        ctl.note(f"job {job.name} ({job.kind}) created")
    return job
