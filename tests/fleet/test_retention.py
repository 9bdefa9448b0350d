"""agentflow.lib.retention (BATCH-004's domain half): exactly the rows past retention are deleted, in
bounded batches; a dry run counts and deletes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agentflow.lib import retention as lib_retention
from fleet import retention
from fleet.models import ChatHistory, ConfigHistory, HealthSample
from tests.support.factories import make_chat, make_config, make_gateway, make_health_sample

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 3, 0, 0, tzinfo=UTC)


@pytest.fixture
def gateway():
    return make_gateway()


def run(**options):
    defaults = {"config_days": 30, "chat_days": 7, "batch_size": 1000, "now": NOW}
    return retention.cleanup_history(**{**defaults, **options})


def test_it_deletes_exactly_the_rows_past_retention_and_keeps_the_boundary(gateway):
    second = timedelta(seconds=1)
    keep_config = [
        make_config(gateway, created_at=NOW - timedelta(days=30)),  # the boundary
        make_config(gateway, created_at=NOW - timedelta(days=30) + second),
        make_config(gateway, created_at=NOW),
    ]
    old_config = [
        make_config(gateway, created_at=NOW - timedelta(days=30) - second),
        make_config(gateway, created_at=NOW - timedelta(days=400)),
    ]
    keep_chat = [
        make_chat(gateway, timestamp=NOW - timedelta(days=7)),  # the boundary
        make_chat(
            gateway, timestamp=NOW - timedelta(days=6), created_at=NOW - timedelta(days=90)
        ),  # by timestamp, not created_at
    ]
    old_chat = [
        make_chat(gateway, timestamp=NOW - timedelta(days=7) - second),
        make_chat(gateway, timestamp=NOW - timedelta(days=8)),
    ]

    result = run()

    assert (result.config, result.chat) == (2, 2)
    assert set(ConfigHistory.objects.all()) == set(keep_config)
    assert set(ChatHistory.objects.all()) == set(keep_chat)
    assert not ConfigHistory.objects.filter(pk__in=[r.pk for r in old_config]).exists()
    assert not ChatHistory.objects.filter(pk__in=[r.pk for r in old_chat]).exists()


def test_retention_is_configurable(gateway):
    make_config(gateway, created_at=NOW - timedelta(days=3))
    make_chat(gateway, timestamp=NOW - timedelta(days=2))
    assert (run(config_days=30, chat_days=7).config, run().chat) == (0, 0)
    result = run(config_days=2, chat_days=1)
    assert (result.config, result.chat) == (1, 1)


def test_it_deletes_in_batches_of_the_given_size(gateway):
    for _ in range(7):
        make_config(gateway, created_at=NOW - timedelta(days=40))
    for _ in range(4):
        make_chat(gateway, timestamp=NOW - timedelta(days=10))
    calls = []

    result = run(batch_size=3, progress=lambda table, n: calls.append((table, n)))

    assert (result.config, result.chat) == (7, 4)
    # config 3+3+1, chat 3+1, health samples one empty batch
    assert result.batches == 3 + 2 + 1
    assert result.max_batch_ms > 0
    assert calls == [("config", 3), ("config", 6), ("config", 7), ("chat", 3), ("chat", 4)]
    assert ConfigHistory.objects.count() == ChatHistory.objects.count() == 0


def test_an_exact_multiple_of_the_batch_size_needs_one_more_empty_batch(gateway):
    for _ in range(4):
        make_config(gateway, created_at=NOW - timedelta(days=40))
    stats = lib_retention.DeleteStats()
    deleted = lib_retention.delete_before(
        ConfigHistory, "created_at", NOW - timedelta(days=30), batch_size=2, stats=stats
    )
    assert (deleted, stats.batches) == (4, 3)


def test_a_dry_run_counts_and_deletes_nothing(gateway):
    make_config(gateway, created_at=NOW - timedelta(days=31))
    make_config(gateway, created_at=NOW - timedelta(days=1))
    make_chat(gateway, timestamp=NOW - timedelta(days=8))
    make_health_sample(gateway, connected=True, checked_at=NOW - timedelta(days=2))

    result = run(dry_run=True)

    assert (result.config, result.chat, result.other) == (1, 1, 1)
    assert result.batches == 0
    assert (ConfigHistory.objects.count(), ChatHistory.objects.count(), HealthSample.objects.count()) == (
        2,
        1,
        1,
    )


def test_old_health_samples_go_after_a_day(gateway):
    recent = make_health_sample(gateway, connected=True, checked_at=NOW - timedelta(hours=23))
    make_health_sample(gateway, connected=False, checked_at=NOW - timedelta(hours=25))
    assert run().other == 1
    assert list(HealthSample.objects.all()) == [recent]


def test_it_works_with_nothing_to_delete(db):
    result = run()
    assert (result.config, result.chat, result.other) == (0, 0, 0)


@pytest.mark.parametrize("batch_size", [0, -1])
def test_a_batch_size_below_one_is_refused(gateway, batch_size):
    make_config(gateway, created_at=NOW - timedelta(days=40))
    make_config(gateway, created_at=NOW - timedelta(days=1))
    with pytest.raises(ValueError, match="batch_size"):
        run(batch_size=batch_size)
    assert ConfigHistory.objects.count() == 2


def test_negative_retention_is_refused_rather_than_deleting_fresh_history(gateway):
    make_config(gateway, created_at=NOW)
    make_chat(gateway, timestamp=NOW)
    with pytest.raises(ValueError, match="days"):
        run(config_days=-1)
    with pytest.raises(ValueError, match="days"):
        run(chat_days=-1)
    assert ConfigHistory.objects.count() == ChatHistory.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_each_batch_commits_on_its_own(gateway):
    """The production path (autocommit): short transactions, SQLite's WAL auto-checkpoint restored."""
    from django.db import connection

    for _ in range(5):
        make_config(gateway, created_at=NOW - timedelta(days=40))
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_autocheckpoint")
            before = cursor.fetchone()[0]

    result = run(batch_size=2)

    assert (result.config, result.batches) == (5, 3 + 1 + 1)
    assert not ConfigHistory.objects.exists()
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_autocheckpoint")
            assert cursor.fetchone()[0] == before
