"""SQLite: an exclusive ``flock`` on a file beside the database; ``busy_timeout``."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Connection

from revisor.connection import Database
from revisor.lock_file import LockFile, busy_timeout
from revisor.locks import LockKey


class SqliteSupport:
    """The database file's :class:`~revisor.lock_file.LockFile`; in-memory databases need none."""

    transactional_ddl = True

    def __init__(self, db: Database) -> None:
        path = db.url.database
        self._lock = None if not path or path == ":memory:" else LockFile(path)

    def acquire_lock(
        self,
        conn: Connection,
        *,
        key: LockKey,
        timeout: float | None,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        if self._lock is not None:
            self._lock.acquire(timeout=timeout, on_wait=on_wait)

    def release_lock(self, conn: Connection, *, key: LockKey) -> None:
        if self._lock is not None:
            self._lock.release()

    def prepare_session(
        self,
        conn: Connection,
        *,
        statement_timeout: float | None,
        ddl_lock_timeout: float | None,
    ) -> None:
        # SQLite has no statement timeout; busy_timeout bounds waits on other writers.
        busy = int(busy_timeout(ddl_lock_timeout) * 1000)
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
