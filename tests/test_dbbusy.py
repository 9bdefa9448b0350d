"""agentflow.lib.dbbusy: which database errors are load (retried) and which are bugs (raised)."""

from __future__ import annotations

import pytest
from django.db import OperationalError

from agentflow.lib.dbbusy import is_busy, retry_busy


def test_busy_errors_are_told_apart_from_bugs():
    assert is_busy(OperationalError("database is locked"))
    assert is_busy(OperationalError("could not serialize access due to concurrent update"))
    assert not is_busy(OperationalError("no such table: scheduler_run"))
    assert not is_busy(ValueError("database is locked"))


def test_retry_busy_tries_again_while_busy_and_raises_anything_else_at_once():
    calls = []

    def twice_locked():
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("database is locked")
        return "done"

    assert retry_busy(twice_locked, first_pause=0) == "done" and len(calls) == 3

    def broken():
        calls.append(2)
        raise OperationalError("no such column: x")

    calls.clear()
    with pytest.raises(OperationalError, match="no such column"):
        retry_busy(broken, first_pause=0)
    assert calls == [2]

    def always_locked():
        raise OperationalError("database is locked")

    with pytest.raises(OperationalError, match="locked"):
        retry_busy(always_locked, tries=3, first_pause=0)
