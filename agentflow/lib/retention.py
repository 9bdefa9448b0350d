"""Bounded deletes: remove expired rows in batches of a fixed size, one short transaction each.

So on SQLite no single write holds the database lock for long and readers (WAL) keep
working, and on PostgreSQL no long row locks. No domain knowledge: the apps say what to delete
(the fleet's history retention plan lives in ``fleet.retention``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.db.models import Field, Model


@dataclass
class DeleteStats:
    """What the bounded deletes cost: how many batches and the longest write-lock hold."""

    batches: int = 0
    max_batch_ms: float = 0.0


def delete_before(
    model: type[Model],
    field: str,
    cutoff: datetime,
    *,
    batch_size: int,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
    stats: DeleteStats | None = None,
) -> int:
    """Delete rows of ``model`` with ``field < cutoff``, ``batch_size`` rows per transaction."""
    if batch_size < 1:
        # LIMIT 0 would never finish a batch loop and a negative LIMIT means "no limit" on SQLite.
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    qs = model._default_manager.filter(**{f"{field}__lt": cutoff})
    if dry_run:
        return qs.count()
    table = model._meta.db_table
    model_field = model._meta.get_field(field)
    pk_field = model._meta.pk
    # The raw SQL below needs real columns: a reverse relation or a column-less field has none.
    if not isinstance(model_field, Field) or model_field.column is None:
        raise ValueError(f"{model.__name__}.{field} is not a column")
    if pk_field is None or pk_field.column is None:
        raise ValueError(f"{model.__name__} has no primary-key column")
    column = model_field.column
    # Raw SQL gets the value in the column's storage format, as the ORM would pass it (on SQLite a
    # naive UTC string; an aware datetime's "+00:00" suffix made a row exactly at the cutoff "older").
    db_cutoff = model_field.get_db_prep_value(cutoff, connection)
    pk = pk_field.column
    qn = connection.ops.quote_name
    # Walk the time index in pk-batches: the subquery picks the next batch_size ids through the
    # index, the outer DELETE removes exactly those. Raw SQL: the ORM has no DELETE ... LIMIT.
    # Identifiers come from model metadata; values are query parameters.
    sql = (
        f"DELETE FROM {qn(table)} WHERE {qn(pk)} IN "  # noqa: S608
        f"(SELECT {qn(pk)} FROM {qn(table)} WHERE {qn(column)} < %s LIMIT %s)"
    )
    total = 0
    with _checkpoint_between_batches() as checkpoint:
        while True:
            started = time.perf_counter()
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql, [db_cutoff, batch_size])
                deleted = cursor.rowcount
            elapsed = (time.perf_counter() - started) * 1000  # time holding the write lock
            checkpoint()
            if stats is not None:
                stats.batches += 1
                stats.max_batch_ms = max(stats.max_batch_ms, elapsed)
            total += deleted
            if progress and deleted:
                progress(total)
            if deleted < batch_size:
                return total


@contextmanager
def _checkpoint_between_batches() -> Iterator[Callable[[], None]]:
    """On SQLite, move WAL checkpoints out of the delete transactions.

    An automatic checkpoint runs inside the COMMIT that crosses the WAL threshold, so one batch
    in a few would hold the write lock several times longer. Instead: no auto-checkpoint while
    cleaning, and a PASSIVE checkpoint (which never blocks readers or writers) after each batch.
    """
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        # Inside a caller's transaction the batches are savepoints and SQLite refuses a
        # checkpoint ("database table is locked"): nothing to move out of the way.
        yield lambda: None
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_autocheckpoint")
        previous = int(cursor.fetchone()[0])
        cursor.execute("PRAGMA wal_autocheckpoint=0")

    def checkpoint() -> None:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")

    try:
        yield checkpoint
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA wal_autocheckpoint={previous}")
