"""Everything that differs per database: the advisory lock and session settings.

One small interface, :class:`DialectSupport`, with one implementation per
backend. The lock is always taken **on the migration connection itself**
and is session-level, so it is held across every per-revision commit and
autocommit block, and released by the server if the runner dies (see
FIELD-NOTES: a transaction-level lock would be released at the first
commit; a lock on a side connection can be lost while migrations go on).

MySQL/MariaDB (``GET_LOCK``) will be one more class here.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from revisor.connection import (
    KEEPALIVE_COUNT,
    KEEPALIVE_IDLE_SECONDS,
    KEEPALIVE_INTERVAL_SECONDS,
    Database,
)
from revisor.errors import BadInput, LockTimeout
from revisor.redaction import scrub


@dataclass(frozen=True)
class LockKey:
    """The lock's identity: one per database + schema + version table."""

    name: str
    value: int  # signed 64-bit, as pg_advisory_lock takes it


def lock_key(db: Database, *, schema: str | None, table: str) -> LockKey:
    """Same inputs, same key, in every runner (golang-migrate does the same)."""
    name = f"revisor:{db.url.database or ''}:{schema or ''}:{table}"
    digest = hashlib.sha256(name.encode()).digest()
    return LockKey(name=name, value=int.from_bytes(digest[:8], "big", signed=True))


class DialectSupport(Protocol):
    transactional_ddl: bool

    def acquire_lock(
        self,
        conn: Connection,
        *,
        key: LockKey,
        timeout: float | None,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        """Take the run's lock or raise :class:`LockTimeout`; ends the transaction.

        When another runner holds it, ``on_wait`` hears so once, before the
        wait: a Job's log then says why it sits still (and tests can see that
        a runner really waited).
        """

    def release_lock(self, conn: Connection, *, key: LockKey) -> None:
        """Give the lock back (closing the connection would too)."""

    def prepare_session(
        self,
        conn: Connection,
        *,
        statement_timeout: float | None,
        ddl_lock_timeout: float | None,
    ) -> None:
        """Apply session settings for the migrations; ends the transaction."""


def _waiting(timeout: float | None, what: str) -> str:
    """What a runner that has to wait says, once, before it waits."""
    bound = "" if timeout is None else f" for up to {timeout:g}s"
    return f"waiting{bound} for {what}"


@dataclass(frozen=True)
class Backoff:
    """Delays between tries: doubling from ``first`` up to ``cap``, each half jittered.

    The jitter keeps runners that started together (a Deployment's pods, a
    Helm hook and the operator) from trying in lockstep.
    """

    first: float = 0.05
    cap: float = 1.0

    def delay(self, attempt: int, *, rng: random.Random | None = None) -> float:
        ceiling = min(self.cap, self.first * 2.0 ** min(attempt, 30))
        return ceiling / 2 + (rng or _RANDOM).uniform(0, ceiling / 2)


_RANDOM = random.Random()  # noqa: S311 - jitter, not cryptography
LOCK_BACKOFF = Backoff()


def poll(
    try_once: Callable[[], bool],
    *,
    timeout: float | None,
    on_first_miss: Callable[[], None] | None = None,
    backoff: Backoff = LOCK_BACKOFF,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Call ``try_once`` until it returns True or ``timeout`` seconds have passed.

    ``timeout`` 0 tries once; None tries forever. ``on_first_miss`` runs once,
    after the first failed try and only if there will be another. Returns
    whether ``try_once`` succeeded.
    """
    deadline = None if timeout is None else clock() + timeout
    attempt = 0
    while not try_once():
        now = clock()
        if deadline is not None and now >= deadline:
            return False
        if attempt == 0 and on_first_miss is not None:
            on_first_miss()
        pause = backoff.delay(attempt)
        if deadline is not None:
            pause = min(pause, max(deadline - now, 0.0))
        sleep(pause)
        attempt += 1
    return True


def _ms(seconds: float | None) -> str:
    return "0" if not seconds else f"{max(int(seconds * 1000), 1)}ms"


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    for attr in ("sqlstate", "pgcode"):
        value = getattr(orig, attr, None)
        if isinstance(value, str):
            return value
    return None


class PostgresSupport:
    """``pg_try_advisory_lock``, polled: a waiter holds no transaction, no snapshot, no lock.

    Waiting inside ``SELECT pg_advisory_lock(k)`` would keep that statement's
    snapshot for the whole wait. ``CREATE INDEX CONCURRENTLY`` (and
    ``REINDEX``/``DROP INDEX CONCURRENTLY``) in the lock holder waits for
    every older snapshot, so PostgreSQL would find a deadlock and kill one
    side, leaving an INVALID index when the victim is the holder. So each
    try is one short transaction, ended at once, and the waiter sleeps idle
    between tries (:func:`poll`), as Flyway and Rails do.
    """

    transactional_ddl = True

    def acquire_lock(
        self,
        conn: Connection,
        *,
        key: LockKey,
        timeout: float | None,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        def try_once() -> bool:
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key.value})
            acquired = bool(got.scalar())
            conn.commit()
            return acquired

        def waiting() -> None:
            if on_wait is not None:
                on_wait(_waiting(timeout, f"the lock {key.name}{self._holder(conn, key)}"))

        if not poll(try_once, timeout=timeout, on_first_miss=waiting):
            raise self._timeout(conn, key, timeout)

    def _timeout(self, conn: Connection, key: LockKey, timeout: float | None) -> LockTimeout:
        return LockTimeout(
            f"another migration holds the lock {key.name}{self._holder(conn, key)}; "
            f"gave up after {timeout:g}s",
            hint="wait for it to finish, or raise --lock-timeout",
        )

    def _holder(self, conn: Connection, key: LockKey) -> str:
        """Who holds the lock, as a phrase (empty if it cannot be told)."""
        try:
            row = conn.execute(
                sa.text(
                    "SELECT a.pid, a.application_name, a.client_addr, a.backend_start "
                    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted "
                    "AND ((l.classid::bigint << 32) | l.objid::bigint) = :k"
                ),
                {"k": key.value},
            ).first()
        except sa.exc.DBAPIError:
            row = None
        finally:
            with contextlib.suppress(sa.exc.DBAPIError):
                conn.rollback()
        if row is None:
            return ""
        return (
            f" (held by backend pid {row.pid}, application {row.application_name!r}, "
            f"client {row.client_addr or 'local'}, connected since {row.backend_start})"
        )

    def release_lock(self, conn: Connection, *, key: LockKey) -> None:
        conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key.value})
        conn.commit()

    def prepare_session(
        self,
        conn: Connection,
        *,
        statement_timeout: float | None,
        ddl_lock_timeout: float | None,
    ) -> None:
        settings = {
            "statement_timeout": _ms(statement_timeout),
            # After the advisory lock: from here on lock_timeout bounds DDL waits.
            "lock_timeout": _ms(ddl_lock_timeout),
            # Server-side keepalives: a runner on a vanished node loses its
            # session (and so its lock) in about a minute, not two hours.
            # Set here, on the locked connection, whatever the driver.
            "tcp_keepalives_idle": str(KEEPALIVE_IDLE_SECONDS),
            "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL_SECONDS),
            "tcp_keepalives_count": str(KEEPALIVE_COUNT),
        }
        for name, value in settings.items():
            conn.execute(sa.text("SELECT set_config(:n, :v, false)"), {"n": name, "v": value})
        conn.commit()


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
                on_wait(_waiting(timeout, f"the lock file {self.path}{self._holder()}"))

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


def support_for(db: Database) -> DialectSupport:
    """The implementation for ``db``'s backend, or a clear refusal."""
    if db.backend == "postgresql":
        return PostgresSupport()
    if db.backend == "sqlite":
        return SqliteSupport(db)
    raise BadInput(
        scrub(f"{db.display}: the {db.backend!r} database is not supported yet"),
        hint="Revisor supports PostgreSQL and SQLite; MySQL/MariaDB is planned",
    )
