"""scheduler.schedules / manage.py setup_schedules: the five batch schedules in django-celery-beat,
created idempotently; operators' edits survive, --reset restores the defaults."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from scheduler import registry
from scheduler.schedules import TASK, ensure_schedules

pytestmark = pytest.mark.django_db

EXPECTED = {
    "BATCH-001 Session polling": 10,
    "BATCH-002 Config polling": 30,
    "BATCH-003 Chat polling": 5,
    "BATCH-005 Health check": 60,
}


def test_it_creates_the_five_batch_schedules():
    results = ensure_schedules()
    assert [created for _, created in results] == [True] * 5
    tasks = {t.name: t for t in PeriodicTask.objects.all()}
    assert set(tasks) == {*EXPECTED, "BATCH-004 History cleanup"}
    for name, every in EXPECTED.items():
        assert tasks[name].interval.every == every
        assert tasks[name].interval.period == IntervalSchedule.SECONDS
        assert tasks[name].crontab is None
    cleanup = tasks["BATCH-004 History cleanup"]
    assert cleanup.interval is None
    assert (cleanup.crontab.minute, cleanup.crontab.hour, str(cleanup.crontab.timezone)) == ("0", "3", "UTC")
    for spec in registry.batches():
        task = tasks[spec.task_name]
        assert task.task == TASK
        assert json.loads(task.args) == [spec.id]
        assert task.enabled


def test_a_second_call_creates_nothing():
    ensure_schedules()
    counts = (PeriodicTask.objects.count(), IntervalSchedule.objects.count())
    assert [created for _, created in ensure_schedules()] == [False] * 5
    assert (PeriodicTask.objects.count(), IntervalSchedule.objects.count()) == counts


def test_an_operators_changes_survive_a_second_call():
    ensure_schedules()
    task = PeriodicTask.objects.get(name="BATCH-001 Session polling")
    task.interval = IntervalSchedule.objects.create(every=45, period=IntervalSchedule.SECONDS)
    task.save()
    PeriodicTask.objects.filter(name="BATCH-003 Chat polling").update(enabled=False)

    ensure_schedules()

    assert PeriodicTask.objects.get(name="BATCH-001 Session polling").interval.every == 45
    assert PeriodicTask.objects.get(name="BATCH-003 Chat polling").enabled is False


def test_reset_restores_the_defaults():
    ensure_schedules()
    task = PeriodicTask.objects.get(name="BATCH-001 Session polling")
    task.interval = IntervalSchedule.objects.create(every=45, period=IntervalSchedule.SECONDS)
    task.save()
    PeriodicTask.objects.filter(name="BATCH-003 Chat polling").update(enabled=False)

    results = ensure_schedules(reset=True)

    assert [created for _, created in results] == [False] * 5
    assert PeriodicTask.objects.get(name="BATCH-001 Session polling").interval.every == 10
    assert PeriodicTask.objects.get(name="BATCH-003 Chat polling").enabled is True
    assert PeriodicTask.objects.count() == 5


def test_the_command_reports_what_it_did():
    out = io.StringIO()
    call_command("setup_schedules", stdout=out)
    assert out.getvalue().splitlines() == [f"{spec.task_name}: created" for spec in registry.batches()]

    out = io.StringIO()
    call_command("setup_schedules", stdout=out)
    assert out.getvalue().splitlines() == [f"{spec.task_name}: exists" for spec in registry.batches()]

    out = io.StringIO()
    call_command("setup_schedules", "--reset", stdout=out)
    assert out.getvalue().splitlines() == [f"{spec.task_name}: reset" for spec in registry.batches()]
    assert PeriodicTask.objects.count() == 5
