"""PostgreSQL: ``pg_try_advisory_lock`` polled on the migration connection, session settings."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from revisor.dialects.base import milliseconds, sqlstate
from revisor.libpq import (
    KEEPALIVE_COUNT,
    KEEPALIVE_IDLE_SECONDS,
    KEEPALIVE_INTERVAL_SECONDS,
)
from revisor.locks import PG_HOLDER, PG_TRY_LOCK, PG_UNLOCK, LockKey, gave_up, pg_holder_phrase
from revisor.polling import poll, waiting_phrase

#: The SQLSTATE of a lock wait that ran past ``lock_timeout``.
LOCK_NOT_AVAILABLE = "55P03"


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

    def __init__(self, schema: str | None = None) -> None:
        #: ``--schema``: the tenant a run works in; INVALID indexes are looked for there only.
        self.schema = schema

    def acquire_lock(
        self,
        conn: Connection,
        *,
        key: LockKey,
        timeout: float | None,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        def try_once() -> bool:
            got = conn.execute(_text(PG_TRY_LOCK), {"k": key.value})
            acquired = bool(got.scalar())
            conn.commit()
            return acquired

        def waiting() -> None:
            if on_wait is not None:
                on_wait(waiting_phrase(timeout, f"the lock {key.name}{self._holder(conn, key)}"))

        if not poll(try_once, timeout=timeout, on_first_miss=waiting):
            raise gave_up(f"the lock {key.name}{self._holder(conn, key)}", timeout)

    def _holder(self, conn: Connection, key: LockKey) -> str:
        """Who holds the lock, as a phrase (empty if it cannot be told)."""
        try:
            row = conn.execute(_text(PG_HOLDER), {"k": key.value}).first()
        except sa.exc.DBAPIError:
            row = None
        finally:
            with contextlib.suppress(sa.exc.DBAPIError):
                conn.rollback()
        return pg_holder_phrase(row)

    def release_lock(self, conn: Connection, *, key: LockKey) -> None:
        conn.execute(_text(PG_UNLOCK), {"k": key.value})
        conn.commit()

    def prepare_session(
        self,
        conn: Connection,
        *,
        statement_timeout: float | None,
        ddl_lock_timeout: float | None,
    ) -> None:
        settings = {
            "statement_timeout": milliseconds(statement_timeout),
            # After the advisory lock: from here on lock_timeout bounds DDL waits.
            "lock_timeout": milliseconds(ddl_lock_timeout),
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

    def is_lock_timeout(self, exc: BaseException) -> bool:
        return sqlstate(exc) == LOCK_NOT_AVAILABLE

    def commits_implicitly(self, statement: str) -> bool:
        return False

    def invalid_indexes(self, conn: Connection) -> frozenset[str]:
        """INVALID indexes (a failed ``CREATE INDEX CONCURRENTLY``): in the run's schema
        with ``--schema`` (a tenant is not told about another's), else anywhere."""
        query = (
            "SELECT n.nspname || '.' || c.relname FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT i.indisvalid"
        )
        if self.schema is not None:
            rows = conn.execute(sa.text(query + " AND n.nspname = :s"), {"s": self.schema})
        else:
            rows = conn.execute(sa.text(query))
        found = frozenset(str(name) for name in rows.scalars())
        conn.rollback()
        return found

    def lock_holders(self, conn: Connection, *, statement: str) -> str:
        """Other sessions' table locks on the relations ``statement`` names.

        PostgreSQL does not say which lock a timed-out statement waited for;
        the sessions still holding locks on the tables it names are the ones
        to look at (all table locks, if it names none of them).
        """
        rows = conn.execute(
            sa.text(
                "SELECT a.pid, a.state, c.relname, l.mode, left(a.query, 200) AS query, "
                "extract(epoch FROM now() - coalesce(a.xact_start, a.query_start))::int AS age "
                "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "JOIN pg_class c ON c.oid = l.relation "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid() "
                "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "ORDER BY a.pid, c.relname"
            )
        ).all()
        conn.rollback()
        named = [r for r in rows if re.search(rf"\b{re.escape(r.relname)}\b", statement, re.I)]
        shown = (named or rows)[:3]
        return "; ".join(
            f"blocked by pid {r.pid} ({r.state}, transaction open {r.age}s, holding {r.mode} "
            f"on {r.relname}; its last query: {' '.join(str(r.query).split())})"
            for r in shown
        )


def _text(statement: str) -> sa.TextClause:
    """One of :mod:`revisor.locks`' statements (psycopg's ``%(k)s``) for any driver."""
    return sa.text(statement.replace("%(k)s", ":k"))
