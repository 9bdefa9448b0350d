"""agentflow.lib.sqlite3: a write transaction holds ``<database>-writer.lock`` from BEGIN to its
commit or rollback; the next writer (another thread, another process) starts as soon as it is
given back; a holder that does not give it back within the timeout gets "database is locked"
(a busy database to agentflow.lib.dbbusy), never a hang; the lock is only advisory."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time

import pytest
from django.db import OperationalError, connection, connections, transaction

from agentflow.lib.dbbusy import is_busy
from scheduler.models import Alert

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "sqlite", reason="the writer lock is SQLite's backend"),
]


def _held_elsewhere(path: str) -> bool:
    """Whether another descriptor (as another process would) can take the lock now."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def test_a_transaction_holds_the_lock_until_it_commits_or_rolls_back():
    with transaction.atomic():
        Alert.objects.create(source="t", message="one")
        path = connection.writer_lock_path
        assert path and path.endswith("-writer.lock")
        assert _held_elsewhere(path)
        with transaction.atomic():  # a savepoint: still the one transaction
            Alert.objects.create(source="t", message="two")
        assert _held_elsewhere(path)
    assert not _held_elsewhere(path)

    with pytest.raises(ZeroDivisionError), transaction.atomic():
        Alert.objects.create(source="t", message="rolled back")
        assert _held_elsewhere(path)
        1 / 0  # noqa: B018
    assert not _held_elsewhere(path)
    assert Alert.objects.filter(source="t").count() == 2
    Alert.objects.create(source="t", message="autocommit: no lock taken")
    assert not _held_elsewhere(path)


def test_the_next_writer_starts_once_the_holder_commits():
    entered = threading.Event()
    waited: list[float] = []

    def second_writer() -> None:
        try:
            entered.wait(5)
            started = time.monotonic()
            with transaction.atomic():
                waited.append(time.monotonic() - started)
                Alert.objects.create(source="t", message="second")
        finally:
            connections.close_all()

    thread = threading.Thread(target=second_writer)
    with transaction.atomic():
        Alert.objects.create(source="t", message="first")
        thread.start()
        entered.set()
        time.sleep(0.3)
        assert not waited  # still waiting for the lock
    thread.join(10)
    assert waited and 0.2 < waited[0] < 2.0
    assert list(Alert.objects.filter(source="t").order_by("id").values_list("message", flat=True)) == [
        "first",
        "second",
    ]


def test_a_holder_past_the_timeout_makes_the_next_writer_fail_as_a_busy_database():
    with transaction.atomic():  # open the connection and learn the path
        path = connection.writer_lock_path
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)",
            path,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        saved, connection.writer_lock_timeout = connection.writer_lock_timeout, 0.3
        started = time.monotonic()
        with pytest.raises(OperationalError) as raised, transaction.atomic():
            Alert.objects.create(source="t", message="never")
        assert 0.3 <= time.monotonic() - started < 2
        assert is_busy(raised.value) and path in str(raised.value)
        # autocommit writes do not take it: the lock is advisory, SQLite's own lock still rules
        Alert.objects.create(source="t", message="autocommit")
    finally:
        connection.writer_lock_timeout = saved
        holder.kill()
        holder.wait()
    with transaction.atomic():  # the holder died: the kernel gave the lock back
        Alert.objects.create(source="t", message="after")
    assert Alert.objects.filter(source="t").count() == 2
