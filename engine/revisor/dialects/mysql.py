"""MySQL and MariaDB: ``GET_LOCK`` polled on the migration connection, session settings.

The same code serves both servers; where they differ (the statement
timeout) the server's version decides. Neither has transactional DDL: each
DDL statement commits on its own, so a revision that fails half-way is
partially applied, which the runtime detects (:meth:`commits_implicitly`)
and reports instead of claiming a clean failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from revisor.locks import LockKey, gave_up
from revisor.polling import poll, waiting_phrase

#: MySQL 5.7+ refuses user-lock names longer than this (MariaDB takes them).
LOCK_NAME_LIMIT = 64
#: "Lock wait timeout exceeded": a metadata lock past ``lock_wait_timeout``
#: (DDL) or a row lock past ``innodb_lock_wait_timeout`` (DML).
ER_LOCK_WAIT_TIMEOUT = 1205
#: A year: the largest ``lock_wait_timeout`` (MySQL's default), "no limit".
NO_LIMIT_SECONDS = 31_536_000
#: The server drops a session idle for longer than ``wait_timeout``, and its
#: lock with it. Managed servers often lower it to minutes; a revision that
#: computes for a while between statements, or a --ddl-lock-retries pause,
#: must not lose the lock that way. Raised to this (MySQL's own default,
#: eight hours) when lower, never lowered.
IDLE_SECONDS = 28_800
#: ``net_read_timeout``/``net_write_timeout``: how long the server waits for
#: the client mid-statement (a large INSERT arriving, a result being read).
#: Raised to this when lower, so a busy client does not lose its session.
NET_SECONDS = 600

# Statements after which MySQL has committed the transaction, and the ones
# before it, by itself ("Statements That Cause an Implicit Commit" in its
# manual): DDL, account management, table maintenance, transaction control.
# CREATE/DROP TEMPORARY TABLE are the exception.
_LEADING_COMMENTS = r"(?:\s+|/\*.*?\*/|--[^\n]*(?:\n|$)|#[^\n]*(?:\n|$))*"
_IMPLICIT_COMMIT = re.compile(
    _LEADING_COMMENTS
    + r"(?:ALTER|CREATE|DROP|RENAME|TRUNCATE|GRANT|REVOKE|LOCK|UNLOCK|ANALYZE|OPTIMIZE"
    r"|REPAIR|CHECK|CACHE\s+INDEX|LOAD\s+INDEX|FLUSH|RESET|INSTALL|UNINSTALL|BEGIN|START"
    r"|COMMIT|SET\s+(?:SESSION\s+|@@SESSION\.|@@)?AUTOCOMMIT|SET\s+PASSWORD)\b",
    re.IGNORECASE | re.DOTALL,
)
_TEMPORARY_TABLE = re.compile(
    _LEADING_COMMENTS + r"(?:CREATE|DROP)\s+TEMPORARY\s+TABLE\b", re.IGNORECASE | re.DOTALL
)


def lock_name(key: LockKey) -> str:
    """``key``'s name as a ``GET_LOCK`` name: as it is when it fits, else cut and hashed.

    Names are server-wide, so the key's database and schema keep two
    databases on one server apart. A name over :data:`LOCK_NAME_LIMIT`
    characters keeps its readable start and ends with a hash of the whole,
    so two long names that share a start still differ.
    """
    if len(key.name) <= LOCK_NAME_LIMIT:
        return key.name
    digest = hashlib.sha256(key.name.encode()).hexdigest()[:16]
    return f"{key.name[: LOCK_NAME_LIMIT - len(digest) - 1]}#{digest}"


def mysql_errno(exc: BaseException) -> int | None:
    """The server's error number of a PyMySQL/aiomysql error (wrapped by SQLAlchemy or not)."""
    orig = getattr(exc, "orig", None) or exc
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def whole_seconds(seconds: float) -> int:
    """MySQL's lock timeouts take whole seconds, at least one: round up, never to 0."""
    return min(max(math.ceil(seconds), 1), NO_LIMIT_SECONDS)


class MysqlSupport:
    """``GET_LOCK(name, 0)``, polled: a waiter holds no transaction and no metadata lock.

    Waiting inside ``GET_LOCK(name, timeout)`` would be one long statement:
    a waiter whose transaction had read a table would keep that table's
    metadata lock for the whole wait, and the holder's DDL on it would queue
    behind the waiter. So each try is ``GET_LOCK(name, 0)`` and a COMMIT,
    and the waiter sleeps idle between tries (:func:`poll`). The lock is
    the session's: it outlives every COMMIT of the run, and the server frees
    it when the session ends (the runner dies, or its connection drops).
    """

    transactional_ddl = False

    def __init__(self) -> None:
        #: The server is MariaDB (known once :meth:`prepare_session` ran).
        self.mariadb: bool | None = None

    def acquire_lock(
        self,
        conn: Connection,
        *,
        key: LockKey,
        timeout: float | None,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        name = lock_name(key)

        def try_once() -> bool:
            # 1 acquired, 0 held by another session, NULL an error (a killed
            # thread): only 1 is the lock.
            got = conn.execute(sa.text("SELECT GET_LOCK(:n, 0)"), {"n": name}).scalar()
            conn.commit()
            return got == 1

        def waiting() -> None:
            if on_wait is not None:
                on_wait(waiting_phrase(timeout, f"the lock {name}{self._holder(conn, name)}"))

        if not poll(try_once, timeout=timeout, on_first_miss=waiting):
            raise gave_up(f"the lock {name}{self._holder(conn, name)}", timeout)

    def _holder(self, conn: Connection, name: str) -> str:
        """Who holds the lock, as a phrase (empty if it cannot be told).

        ``IS_USED_LOCK`` names the holder's connection; the process list adds
        who and where it is, for a user allowed to see it (PROCESS privilege,
        or the same user).
        """
        try:
            holder = conn.execute(sa.text("SELECT IS_USED_LOCK(:n)"), {"n": name}).scalar()
            row = None
            if holder is not None:
                row = conn.execute(
                    sa.text(
                        "SELECT ID, USER, HOST, COMMAND, TIME, STATE, LEFT(INFO, 200) AS INFO "
                        "FROM information_schema.PROCESSLIST WHERE ID = :id"
                    ),
                    {"id": holder},
                ).first()
        except sa.exc.DBAPIError:
            return ""
        finally:
            with contextlib.suppress(sa.exc.DBAPIError):
                conn.rollback()
        if holder is None:
            return ""
        if row is None:
            return f" (held by connection {holder})"
        return f" (held by {_session(row)})"

    def release_lock(self, conn: Connection, *, key: LockKey) -> None:
        conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": lock_name(key)})
        conn.commit()

    def prepare_session(
        self,
        conn: Connection,
        *,
        statement_timeout: float | None,
        ddl_lock_timeout: float | None,
    ) -> None:
        """Timeouts for the run, on this session only; MariaDB or MySQL from ``VERSION()``.

        ``--ddl-lock-timeout`` bounds waits for metadata locks (DDL,
        ``lock_wait_timeout``) and row locks (``innodb_lock_wait_timeout``),
        in whole seconds. ``--statement-timeout`` is MariaDB's
        ``max_statement_time`` (every statement, fractional seconds) or
        MySQL's ``max_execution_time`` (milliseconds, and only for SELECT:
        MySQL has no time limit for DDL or DML). Neither given means no
        limit, whatever the server's defaults say, as on PostgreSQL
        (``innodb_lock_wait_timeout`` alone keeps the server's value: it is
        for DML, and a year-long default would surprise).
        """
        row = conn.execute(
            sa.text(
                "SELECT VERSION(), @@session.wait_timeout, @@session.net_read_timeout, "
                "@@session.net_write_timeout"
            )
        ).one()
        version, idle, net_read, net_write = row
        self.mariadb = "mariadb" in str(version).lower()
        settings: dict[str, Any] = {
            "lock_wait_timeout": NO_LIMIT_SECONDS,
            "wait_timeout": max(int(idle), IDLE_SECONDS),
            "net_read_timeout": max(int(net_read), NET_SECONDS),
            "net_write_timeout": max(int(net_write), NET_SECONDS),
        }
        if ddl_lock_timeout:
            settings["lock_wait_timeout"] = whole_seconds(ddl_lock_timeout)
            settings["innodb_lock_wait_timeout"] = whole_seconds(ddl_lock_timeout)
        limit = min(statement_timeout or 0.0, float(NO_LIMIT_SECONDS))
        if self.mariadb:
            settings["max_statement_time"] = limit
        else:
            settings["max_execution_time"] = math.ceil(limit * 1000)
        assignments = ", ".join(f"SESSION {name} = :{name}" for name in settings)
        conn.execute(sa.text(f"SET {assignments}"), settings)
        conn.commit()

    def invalid_indexes(self, conn: Connection) -> frozenset[str]:
        return frozenset()  # no concurrent index builds to leave one half-built

    def is_lock_timeout(self, exc: BaseException) -> bool:
        """Error 1205 only: MariaDB's 1969 and MySQL's 3024 are statement timeouts."""
        return mysql_errno(exc) == ER_LOCK_WAIT_TIMEOUT

    def commits_implicitly(self, statement: str) -> bool:
        return bool(_IMPLICIT_COMMIT.match(statement)) and not _TEMPORARY_TABLE.match(statement)

    def lock_holders(self, conn: Connection, *, statement: str) -> str:
        """Who held the locks ``statement`` waited for: best effort, never an error.

        The servers say it in different places, each optional: MariaDB's
        ``METADATA_LOCK_INFO`` (with its plugin), ``performance_schema``'s
        ``metadata_locks`` (MySQL 8 by default; MariaDB when enabled).
        Without either, the sessions with an open transaction are the
        suspects: a transaction that read a table holds its metadata lock
        until it ends. Only what this user may see is shown.
        """
        for query, holds_table in (
            (_METADATA_LOCK_INFO, True),
            (_PERFORMANCE_SCHEMA_LOCKS, True),
            (_OPEN_TRANSACTIONS, False),
        ):
            try:
                rows: Sequence[sa.Row[Any]] = conn.execute(sa.text(query)).all()
            except sa.exc.DBAPIError:
                rows = ()
            finally:
                with contextlib.suppress(sa.exc.DBAPIError):
                    conn.rollback()
            if not rows:
                continue
            if not holds_table:
                shown = ", ".join(_session(r, open_for=r.age) for r in rows[:3])
                return f"sessions with a transaction open, which may hold it: {shown}"
            named = [r for r in rows if re.search(rf"\b{re.escape(r.tbl)}\b", statement, re.I)]
            return "; ".join(
                f"blocked by {_session(r)}, holding {r.mode} on {r.tbl}"
                for r in (named or rows)[:3]
            )
        return ""


def _session(row: Any, *, open_for: int | None = None) -> str:
    """A process-list row in words: connection, account, what it does and for how long."""
    doing = f"{row.COMMAND} for {row.TIME}s" + (f", {row.STATE}" if row.STATE else "")
    if open_for is not None:
        doing = f"transaction open {open_for}s, {doing}"
    info = " ".join(str(row.INFO or "").split())
    return (
        f"connection {row.ID} ({row.USER}@{row.HOST}, {doing}"
        + (f"; its statement: {info}" if info else "")
        + ")"
    )


_PROCESS_COLUMNS = "p.ID, p.USER, p.HOST, p.COMMAND, p.TIME, p.STATE, LEFT(p.INFO, 200) AS INFO"
_METADATA_LOCK_INFO = (
    f"SELECT {_PROCESS_COLUMNS}, m.LOCK_MODE AS mode, m.TABLE_NAME AS tbl "
    "FROM information_schema.METADATA_LOCK_INFO m "
    "JOIN information_schema.PROCESSLIST p ON p.ID = m.THREAD_ID "
    "WHERE m.LOCK_TYPE = 'Table metadata lock' AND m.THREAD_ID <> CONNECTION_ID() "
    "ORDER BY p.ID, m.TABLE_NAME"
)
_PERFORMANCE_SCHEMA_LOCKS = (
    "SELECT t.PROCESSLIST_ID AS ID, t.PROCESSLIST_USER AS USER, t.PROCESSLIST_HOST AS HOST, "
    "t.PROCESSLIST_COMMAND AS COMMAND, t.PROCESSLIST_TIME AS TIME, "
    "t.PROCESSLIST_STATE AS STATE, LEFT(t.PROCESSLIST_INFO, 200) AS INFO, "
    "m.LOCK_TYPE AS mode, m.OBJECT_NAME AS tbl "
    "FROM performance_schema.metadata_locks m "
    "JOIN performance_schema.threads t ON t.THREAD_ID = m.OWNER_THREAD_ID "
    "WHERE m.OBJECT_TYPE = 'TABLE' AND m.LOCK_STATUS = 'GRANTED' "
    "AND t.PROCESSLIST_ID <> CONNECTION_ID() ORDER BY t.PROCESSLIST_ID, m.OBJECT_NAME"
)
_OPEN_TRANSACTIONS = (
    f"SELECT {_PROCESS_COLUMNS}, TIMESTAMPDIFF(SECOND, x.trx_started, NOW()) AS age "
    "FROM information_schema.INNODB_TRX x "
    "JOIN information_schema.PROCESSLIST p ON p.ID = x.trx_mysql_thread_id "
    "WHERE p.ID <> CONNECTION_ID() ORDER BY x.trx_started"
)
