"""agentflow.lib.rawsql: the hot path's statements store and read exactly what the ORM would
(UUIDs, aware datetimes, booleans, JSON, foreign keys), on SQLite and PostgreSQL alike."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from agentflow.lib import rawsql
from scheduler.models import Attempt, Run

pytestmark = pytest.mark.django_db


def _run(**fields):
    return Run.objects.create(kind="noop", **fields)


def test_insert_stores_what_the_orm_reads_back():
    run = _run()
    started = timezone.now() - timedelta(seconds=3)
    attempt = Attempt(id=uuid.uuid4(), run=run, number=1, worker="w@host", started_at=started)
    rawsql.insert(attempt)
    assert attempt._state.adding is False
    stored = Attempt.objects.get(pk=attempt.pk)
    assert (stored.run_id, stored.number, stored.worker, stored.started_at) == (run.pk, 1, "w@host", started)
    assert (stored.status, stored.in_worker, stored.finished_at, stored.error) == ("running", True, None, "")


def test_update_adapts_values_and_conditions_through_the_fields():
    run = _run()
    attempt = Attempt.objects.create(run=run, number=1)
    finished = timezone.now()
    values = {"status": "failed", "error": "boom", "finished_at": finished, "in_worker": False}
    assert rawsql.update(Attempt, values, id=attempt.pk, status="running") == 1
    assert rawsql.update(Attempt, values, id=attempt.pk, status="running") == 0  # the condition holds
    assert rawsql.update(Attempt, values, id=uuid.uuid4(), status="failed") == 0
    stored = Attempt.objects.get(pk=attempt.pk)
    assert (stored.status, stored.error, stored.finished_at, stored.in_worker) == (
        "failed",
        "boom",
        finished,
        False,
    )

    usage = {"input_tokens": 3, "cost": 0.25, "nested": {"k": [1, "two"]}}
    assert rawsql.update(Run, {"usage": usage, "result": "ok", "attempts": 2}, id=run.pk) == 1
    run.refresh_from_db()
    assert (run.usage, run.result, run.attempts) == (usage, "ok", 2)


def test_from_row_equals_the_orm_instance():
    run = _run(usage={"total_tokens": 7}, input={"a": [1, 2]}, run_after=timezone.now())
    with connection.cursor() as cursor:
        table = connection.ops.quote_name(Run._meta.db_table)
        cursor.execute(f"SELECT {rawsql.columns(Run)} FROM {table} WHERE id = %s", [run.pk])
        built = rawsql.from_row(Run, cursor.fetchone())
    loaded = Run.objects.get(pk=run.pk)
    for field in Run._meta.concrete_fields:
        assert getattr(built, field.attname) == getattr(loaded, field.attname), field.name
    assert built._state.adding is False and built._state.db == connection.alias
    # a saved instance: updating it through the ORM writes the same row
    built.result = "changed"
    with transaction.atomic():
        built.save(update_fields=["result"])
    assert Run.objects.get(pk=run.pk).result == "changed"
