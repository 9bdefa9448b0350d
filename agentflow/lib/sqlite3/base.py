"""Django's SQLite backend, with one change: a write transaction first takes an ``flock`` on
``<database>-writer.lock``, and gives it back when it commits or rolls back.

Why: SQLite lets one writer in at a time, and a connection that finds the write lock taken
sleeps in SQLite's busy handler for 1, 2, 5, 10 … ms before it looks again. Two queue workers
each hold the lock for about 0.6 ms per run and spend about as long outside it, so the sleeping
one kept missing the gaps: two workers drained no faster than one (bench/README, "Issue 9: a
shorter write lock, handed over"). Waiting on the file lock instead, polled every 20–500 µs,
the next writer starts within a fraction of a millisecond of the commit.

The lock is advisory and only orders the connections that take it: SQLite's own locking still
decides what is safe (a write outside a transaction, or from another program, goes through
SQLite's busy handler as before). The wait is bounded by the connection's ``timeout`` option
(``OPTIONS["timeout"]``, 20 s by default here); past it the transaction fails with "database is
locked", as SQLite would, which ``agentflow.lib.dbbusy`` treats as a busy database. A process
that dies while holding the lock frees it (the kernel closes its descriptor). ``OPTIONS
["writer_lock"] = False`` (``AGENTFLOW_SQLITE_WRITER_LOCK=false``) turns it off; in-memory
databases never take it.
"""

from __future__ import annotations

import fcntl
import os
import time
from typing import Any

from django.db import OperationalError
from django.db.backends.sqlite3 import base

FIRST_PAUSE = 0.00002
LONGEST_PAUSE = 0.0005


class DatabaseWrapper(base.DatabaseWrapper):
    writer_lock_path: str | None = None
    writer_lock_timeout: float = 5.0
    _writer_fd: int | None = None
    _writer_pid = 0
    _writer_held = False

    def get_connection_params(self) -> dict[str, Any]:
        params = dict(self.settings_dict["OPTIONS"])
        enabled = bool(params.pop("writer_lock", True))
        self.writer_lock_timeout = float(params.get("timeout", 5.0))
        name = str(self.settings_dict["NAME"])
        in_memory = self.is_in_memory_db() or name.startswith("file:")
        self.writer_lock_path = f"{name}-writer.lock" if enabled and not in_memory else None
        saved = self.settings_dict["OPTIONS"]
        self.settings_dict["OPTIONS"] = params  # Django's own reading, without our key
        try:
            return super().get_connection_params()
        finally:
            self.settings_dict["OPTIONS"] = saved

    def _start_transaction_under_autocommit(self) -> None:
        self._take_writer_lock()
        try:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]  # not in django-stubs
        except BaseException:
            self._release_writer_lock()
            raise

    def _commit(self) -> None:
        try:
            super()._commit()  # type: ignore[misc]  # not in django-stubs
        finally:
            self._release_writer_lock()

    def _rollback(self) -> None:
        try:
            super()._rollback()  # type: ignore[misc]  # not in django-stubs
        finally:
            self._release_writer_lock()

    def _set_autocommit(self, autocommit: bool) -> None:
        super()._set_autocommit(autocommit)  # type: ignore[misc]  # not in django-stubs
        if autocommit:
            self._release_writer_lock()  # never held past its transaction (only ever early)

    def _close(self) -> None:
        try:
            super()._close()  # type: ignore[misc]  # not in django-stubs
        finally:
            self._release_writer_lock()
            if self._writer_fd is not None and self._writer_pid == os.getpid():
                os.close(self._writer_fd)
                self._writer_fd = None

    def _take_writer_lock(self) -> None:
        if self.writer_lock_path is None or self._writer_held:
            return
        if self._writer_fd is None or self._writer_pid != os.getpid():
            # A forked child opens its own: one shared descriptor would be one shared lock.
            self._writer_fd = os.open(self.writer_lock_path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            self._writer_pid = os.getpid()
        deadline = time.monotonic() + self.writer_lock_timeout
        pause = FIRST_PAUSE
        while True:
            try:
                fcntl.flock(self._writer_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise OperationalError(
                        f"database is locked: another writer held {self.writer_lock_path} "
                        f"for more than {self.writer_lock_timeout:g} s"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, LONGEST_PAUSE)
        self._writer_held = True

    def _release_writer_lock(self) -> None:
        if self._writer_held and self._writer_fd is not None and self._writer_pid == os.getpid():
            self._writer_held = False
            fcntl.flock(self._writer_fd, fcntl.LOCK_UN)
