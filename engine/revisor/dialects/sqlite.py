"""SQLite: an exclusive ``flock`` on a file beside the database; ``busy_timeout``."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

from sqlalchemy.engine import Connection

from revisor.connection import Database
from revisor.dialects.base import LockKey, poll, waiting_phrase
from revisor.errors import BadInput, LockTimeout


class SqliteSupport:
    """An exclusive ``flock`` on a file beside the database, polled until the deadline.

    The kernel drops it when the process dies, so a killed runner never
    leaves a stale lock. In-memory databases need no lock.
    """

    transactional_ddl = True

    def __init__(self, db: Database) -> None:
        path = db.url.database
        self.path = None if not path or path == ":memory:" else f"{path}.revisor-lock"
        self._handle: IO[str] | None = None

    def acquire_lock(
        self,
        conn: Connection,
        *,
        key: LockKey,
        timeout: float | None,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        if self.path is None:
            return
        try:
            handle = Path(self.path).open("a")  # noqa: SIM115 - held for the whole run
        except OSError as exc:
            raise BadInput(
                f"cannot create the lock file {self.path}: {exc.strerror}",
                hint="the directory of the SQLite database must be writable",
            ) from None

        def try_once() -> bool:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                return False
            return True

        def waiting() -> None:
            if on_wait is not None:
                on_wait(waiting_phrase(timeout, f"the lock file {self.path}{self._holder()}"))

        try:
            acquired = poll(try_once, timeout=timeout, on_first_miss=waiting)
        except OSError:
            handle.close()
            raise
        if not acquired:
            handle.close()
            raise LockTimeout(
                f"another migration holds the lock file {self.path}{self._holder()}; "
                f"gave up after {timeout:g}s",
                hint="wait for it to finish, or raise --lock-timeout",
            )
        with contextlib.suppress(OSError):
            # The holder's pid, for the next runner's "held by" (the lock is the flock).
            handle.truncate(0)
            handle.write(f"{os.getpid()}\n")
            handle.flush()
        self._handle = handle

    def _holder(self) -> str:
        """`` (held by pid N)`` from the lock file, or empty when it names nobody."""
        assert self.path is not None
        try:
            pid = Path(self.path).read_text().split()[-1]
        except (OSError, IndexError):
            return ""
        return f" (held by pid {pid})" if pid.isdigit() else ""

    def release_lock(self, conn: Connection, *, key: LockKey) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def prepare_session(
        self,
        conn: Connection,
        *,
        statement_timeout: float | None,
        ddl_lock_timeout: float | None,
    ) -> None:
        # SQLite has no statement timeout; busy_timeout bounds waits on other writers.
        busy = int((ddl_lock_timeout or 30) * 1000)
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {busy}")
        conn.commit()

    def invalid_indexes(self, conn: Connection) -> frozenset[str]:
        return frozenset()

    def lock_holders(self, conn: Connection, *, statement: str) -> str:
        return ""

    def is_lock_timeout(self, exc: BaseException) -> bool:
        # SQLite has no table locks: "database is locked" means another writer
        # held the whole file past busy_timeout, and is not retried.
        return False

    def commits_implicitly(self, statement: str) -> bool:
        return False  # DDL is transactional here (revisor.connection makes it so)
