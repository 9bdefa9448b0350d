"""A database too busy to answer in time (SQLite's single writer "database is locked" after its
busy timeout, a PostgreSQL serialization failure): not a bug, worth another try.

``is_busy`` tells such an error apart; ``retry_busy`` runs a short write again a few times
with a growing pause, for the bookkeeping writes that must not be dropped (a worker recording
that its attempt left it), and re-raises anything else at once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from django.db import OperationalError

T = TypeVar("T")

_BUSY_MARKERS = ("database is locked", "database table is locked", "could not serialize access")


def is_busy(exception: BaseException) -> bool:
    """The database refused for load (a lock wait ran out), not for a bug: worth a retry."""
    return isinstance(exception, OperationalError) and any(m in str(exception) for m in _BUSY_MARKERS)


def retry_busy(fn: Callable[[], T], tries: int = 5, first_pause: float = 0.05) -> T:
    """``fn()``, again after 50, 100, 200, 400 ms while the database is busy; the last error
    is raised when every try was refused."""
    for attempt in range(tries):
        try:
            return fn()
        except OperationalError as exc:
            if not is_busy(exc) or attempt == tries - 1:
                raise
            time.sleep(first_pause * 2**attempt)
    raise AssertionError("unreachable")
