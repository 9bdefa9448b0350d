"""BATCH-004 history cleanup through the runner and ``manage.py cleanup_history``: counts, dry
runs, bounded batches, and a failure that operators cannot miss (run error, alert, mail)."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core import mail
from django.core.management import call_command
from django.utils import timezone

from agentflow.lib.locks import lock
from fleet import batches
from fleet.models import ChatHistory, ConfigHistory
from scheduler import runner
from scheduler.live import ALERTS_GROUP
from scheduler.models import Alert, BatchRun
from tests.support.factories import make_batch_run, make_chat, make_config, make_gateway
from tests.support.live import Listener

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


@pytest.fixture
def history(db):
    """Config rows 40 and 10 days old, chat rows 9 and 2 days old, and a 10-day-old batch run."""
    gateway = make_gateway("alpha")
    now = timezone.now()
    for days in [40, 40, 40, 10]:
        make_config(gateway, created_at=now - timedelta(days=days))
    for days in [9, 9, 9, 9, 9, 2]:
        make_chat(gateway, timestamp=now - timedelta(days=days))
    make_batch_run("BATCH-001", started_at=now - timedelta(days=10))
    return gateway


@pytest.fixture
def admins(settings):
    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    mail.outbox = []
    return settings.ADMINS


def command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("cleanup_history", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_cleanup_batch_deletes_old_history_and_records_its_counts(redis_prefix, history):
    run = runner.run(batches.HISTORY_CLEANUP, None, batches.cleanup_history, lock_ttl=3600)
    assert run.status == "ok"
    assert (run.counts["config"], run.counts["chat"], run.counts["batch_runs"]) == (3, 5, 1)
    assert run.counts["dry_run"] is False
    assert ConfigHistory.objects.count() == 1 and ChatHistory.objects.count() == 1
    assert list(BatchRun.objects.all()) == [run]


def test_the_command_prints_the_counts_and_a_dry_run_deletes_nothing(redis_prefix, history):
    out, _ = command("--config-days", "30", "--chat-days", "7", "--dry-run", "--batch-size", "2")
    assert out.startswith("Cleanup would delete: config=3, chat=5 (retention: config 30 days, chat 7 days; ")
    assert (ConfigHistory.objects.count(), ChatHistory.objects.count()) == (4, 6)
    run = BatchRun.objects.get(batch=batches.HISTORY_CLEANUP)
    assert run.counts["dry_run"] is True and run.status == "ok"


def test_the_command_deletes_in_batches_with_its_own_retention(redis_prefix, history):
    out, _ = command("--config-days", "5", "--chat-days", "1", "--batch-size", "2")
    assert out.startswith("Cleanup deleted: config=4, chat=6 (retention: config 5 days, chat 1 days; ")
    assert ConfigHistory.objects.count() == ChatHistory.objects.count() == 0
    run = BatchRun.objects.get(batch=batches.HISTORY_CLEANUP)
    # config 2+2+0, chat 2+2+2+0, health samples 0: several small transactions, not one big one
    assert run.counts["batches"] == 3 + 4 + 1


def test_a_failed_cleanup_records_an_error_raises_an_alert_and_mails_the_admins(
    redis_prefix, history, admins, monkeypatch
):
    def broken(**options):
        raise RuntimeError("database is locked")

    monkeypatch.setattr("fleet.retention.cleanup_history", broken)
    listener = Listener(ALERTS_GROUP)
    try:
        run = runner.run(batches.HISTORY_CLEANUP, None, batches.cleanup_history, lock_ttl=3600)
        pushed = listener.receive()
    finally:
        listener.close()

    assert run.status == "error"
    assert run.error == "RuntimeError: database is locked"
    alert = Alert.objects.open().get()
    assert (alert.source, alert.level) == ("BATCH-004", "error")
    assert alert.message == "History cleanup failed: RuntimeError: database is locked"
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["ops@example.com"]
    assert "AgentFlow: history cleanup failed" in mail.outbox[0].subject
    assert "RuntimeError: database is locked" in mail.outbox[0].body
    assert "Traceback" in mail.outbox[0].body
    assert pushed["kind"] == "alert.raised"
    assert ConfigHistory.objects.count() == 4  # nothing was lost


def test_the_command_reports_a_failure_and_exits_non_zero(redis_prefix, history, admins):
    with pytest.raises(SystemExit) as exit_info:
        command("--batch-size", "-1")  # refused instead of an endless (or unbounded) delete loop
    assert exit_info.value.code == 1
    run = BatchRun.objects.get(batch=batches.HISTORY_CLEANUP)
    assert run.status == "error" and "batch_size must be at least 1" in run.error
    assert Alert.objects.open().filter(source="BATCH-004").count() == 1
    assert len(mail.outbox) == 1
    assert ConfigHistory.objects.count() == 4


def test_a_failure_to_mail_never_hides_the_alert(redis_prefix, history, admins, monkeypatch):
    monkeypatch.setattr("fleet.retention.cleanup_history", lambda **o: 1 / 0)
    monkeypatch.setattr("scheduler.runner.mail_admins", lambda *a, **k: 1 / 0)
    run = runner.run(batches.HISTORY_CLEANUP, None, batches.cleanup_history, lock_ttl=3600)
    assert run.status == "error" and run.error.startswith("ZeroDivisionError")
    assert Alert.objects.open().count() == 1


def test_the_cleanup_never_overlaps_itself(redis_prefix, history):
    err = io.StringIO()
    with lock(batches.HISTORY_CLEANUP, "global", 3600), pytest.raises(SystemExit):
        call_command("cleanup_history", stdout=io.StringIO(), stderr=err)
    assert err.getvalue().strip() == "Cleanup skipped: previous run still holds the lock"
    run = BatchRun.objects.get(batch=batches.HISTORY_CLEANUP)
    assert run.status == "skipped"
    assert ConfigHistory.objects.count() == 4
