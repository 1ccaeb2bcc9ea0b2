"""``revisor_history``: a row per run and a row per step, beside the version table.

Step rows are written from Alembic's ``on_version_apply`` callback, inside
the step's own transaction, so a step's history row commits or rolls back
with the step itself. The run row is written before the first step and
finished after the last. A runner killed mid-way leaves its run row at
``running``; the next runner, once it holds the lock (so nobody else can be
running), marks such rows ``interrupted``.

The table only ever gains nullable columns, each added by :meth:`History.ensure`
to a table an older Revisor created (:data:`ADDED_COLUMNS`), and nothing that
reads runs needs them: older and newer engines share one table.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from revisor import records
from revisor.connection import committer
from revisor.records import HISTORY_TABLE

TABLE_NAME = HISTORY_TABLE

RUNNING = records.RUNNING
SUCCEEDED = "succeeded"
FAILED = "failed"
ROLLED_BACK = "rolled_back"
ROLLBACK_FAILED = "rollback_failed"
#: Rolled back as far as a revision that cannot be downgraded, and no further.
ROLLBACK_INCOMPLETE = "rollback_partial"  # the status column holds 16 characters
INTERRUPTED = "interrupted"
#: A step tried again: it timed out waiting for a table lock (--ddl-lock-retries).
RETRIED = "retried"
APPLIED = "applied"
#: A step (and its run) that failed after some of its statements had committed
#: on their own (DDL on MySQL/MariaDB): partly in the database, not recorded as applied.
PARTIAL = "partial"

#: Columns added after the table's first release, nullable, added to older
#: tables by :meth:`History.ensure`: a failed step's committed statements
#: (their number, and the first and last few, one per line).
ADDED_COLUMNS = ("statements_committed", "statements")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Timestamp(sa.types.TypeDecorator[dt.datetime]):
    """A timestamp with microseconds everywhere.

    MySQL's DATETIME keeps whole seconds unless told otherwise, and a step's
    start and end would collapse into one. Its dialect is imported only for
    MySQL: every other run would pay for it at start-up.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import DATETIME

            return dialect.type_descriptor(DATETIME(timezone=True, fsp=6))
        return dialect.type_descriptor(self.impl_instance)


def history_table(schema: str | None) -> sa.Table:
    """The table definition; one MetaData per schema so names never clash."""
    return sa.Table(
        TABLE_NAME,
        sa.MetaData(schema=schema),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(36), nullable=False, index=True),
        sa.Column("kind", sa.String(8), nullable=False),  # run | step
        sa.Column("command", sa.String(16), nullable=False),
        sa.Column("direction", sa.String(10), nullable=False),
        sa.Column("from_revision", sa.String(255)),
        sa.Column("to_revision", sa.String(255)),
        sa.Column("revision", sa.String(64)),
        sa.Column("description", sa.Text),
        sa.Column("started_at", _Timestamp(), nullable=False),
        sa.Column("finished_at", _Timestamp()),
        sa.Column("duration_seconds", sa.Float),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("checksum", sa.String(64)),
        sa.Column("runner", sa.String(255)),
        sa.Column("engine_version", sa.String(32)),
        sa.Column("statements_committed", sa.Integer),
        sa.Column("statements", sa.Text),
    )


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    command: str
    direction: str
    from_revision: str
    to_revision: str
    runner: str | None
    engine_version: str
    started_at: dt.datetime


def new_run(
    *,
    command: str,
    direction: str,
    from_heads: Sequence[str],
    target: str,
    runner: str | None,
    engine_version: str,
) -> RunInfo:
    return RunInfo(
        run_id=str(uuid.uuid4()),
        command=command,
        direction=direction,
        from_revision=",".join(from_heads) or "base",
        to_revision=target,
        runner=runner,
        engine_version=engine_version,
        started_at=utcnow(),
    )


class History:
    """Reads and writes ``revisor_history`` on the run's connection."""

    def __init__(self, schema: str | None) -> None:
        self.table = history_table(schema)
        # inline(): nothing reads a step row's generated id back, so no
        # RETURNING (on PostgreSQL a result set to fetch and parse per step).
        self._insert = self.table.insert().inline()
        # (DBAPI connection, the row's keys, its committer or None, the INSERT
        # compiled for those keys)
        self._with_commit: tuple[
            object, tuple[str, ...], Callable[[str, Mapping[str, Any]], None] | None, str
        ] = (None, (), None, "")
        self._columns_checked = False

    def exists(self, conn: Connection) -> bool:
        return sa.inspect(conn).has_table(TABLE_NAME, schema=self.table.schema)

    def ensure(self, conn: Connection) -> bool:
        """Create the table, or add the columns a table from an older Revisor lacks.

        Called under the run's lock, so no other runner alters it meanwhile.
        The columns are looked at once per :class:`History` (a run); whether
        the table exists, every time (a revision may have dropped it).
        True when it created the table.
        """
        if not self.exists(conn):
            self.table.create(conn)
            self._columns_checked = True
            return True
        if self._columns_checked:
            return False
        have = {c["name"] for c in sa.inspect(conn).get_columns(TABLE_NAME, self.table.schema)}
        table = conn.dialect.identifier_preparer.format_table(self.table)
        for name in ADDED_COLUMNS:
            if name not in have:
                column = sa.schema.CreateColumn(self.table.c[name]).compile(dialect=conn.dialect)
                conn.execute(sa.text(f"ALTER TABLE {table} ADD {column}"))
        self._columns_checked = True
        return False

    def forget_run(self, conn: Connection, run: RunInfo, *, drop_table: bool) -> None:
        """Take back a run that was refused before anything ran: its rows, and the
        table itself when that run created it (``drop_table``), so that a refusal
        leaves the database as it found it."""
        if drop_table:
            self.table.drop(conn)
            return
        conn.execute(self.table.delete().where(self.table.c.run_id == run.run_id))

    def mark_interrupted(self, conn: Connection) -> int:
        """Runs left ``running`` by a runner that died; only call holding the lock."""
        result = conn.execute(
            self.table.update()
            .where(self.table.c.status == RUNNING)
            .values(status=INTERRUPTED, error="the runner stopped before the run finished")
        )
        return result.rowcount

    def start_run(self, conn: Connection, run: RunInfo) -> None:
        conn.execute(
            self.table.insert().values(
                run_id=run.run_id,
                kind="run",
                command=run.command,
                direction=run.direction,
                from_revision=run.from_revision,
                to_revision=run.to_revision,
                started_at=run.started_at,
                status=RUNNING,
                runner=run.runner,
                engine_version=run.engine_version,
            )
        )

    def finish_run(
        self,
        conn: Connection,
        run: RunInfo,
        *,
        status: str,
        to_heads: Sequence[str],
        error: str | None = None,
    ) -> None:
        finished = utcnow()
        conn.execute(
            self.table.update()
            .where(self.table.c.run_id == run.run_id, self.table.c.kind == "run")
            .values(
                status=status,
                finished_at=finished,
                duration_seconds=(finished - run.started_at).total_seconds(),
                to_revision=",".join(to_heads) or "base",
                error=error,
            )
        )

    def record_step(
        self,
        conn: Connection,
        run: RunInfo,
        *,
        direction: str,
        revision: str,
        from_revision: str,
        to_revision: str,
        description: str,
        started_at: dt.datetime,
        status: str,
        checksum: str | None,
        error: str | None = None,
        commit: bool = False,
        statements_committed: int | None = None,
        statements: Sequence[str] = (),
    ) -> None:
        """Write a step's row in the step's open transaction.

        ``commit=True`` says the transaction ends right after this row (Alembic
        commits each step once its callbacks have run). Where the driver can
        send both in one round trip (psycopg), the row and the COMMIT go
        together and Alembic's own commit then finds nothing left to do;
        elsewhere only the row is written and Alembic commits as usual.
        Either way the row commits, or rolls back, with its step.

        ``statements_committed`` and ``statements`` record what a failed step
        left in the database (:data:`PARTIAL`); only a table this version's
        :meth:`ensure` has seen is sure to have their columns.
        """
        finished = utcnow()
        # One constant statement with a parameter dict: SQLAlchemy compiles it
        # once, where building .values(...) per step would compile it anew
        # for every revision (bench/history_row.py prices the difference).
        params = {
            "run_id": run.run_id,
            "kind": "step",
            "command": run.command,
            "direction": direction,
            "from_revision": from_revision,
            "to_revision": to_revision,
            "revision": revision,
            "description": description,
            "started_at": started_at,
            "finished_at": finished,
            "duration_seconds": (finished - started_at).total_seconds(),
            "status": status,
            "error": error,
            "checksum": checksum,
            "runner": run.runner,
            "engine_version": run.engine_version,
        }
        if statements_committed is not None:
            # Only on such rows: every other row keeps the one compiled INSERT,
            # which also suits a table an older Revisor created.
            params["statements_committed"] = statements_committed
            params["statements"] = "\n".join(statements)
        if not (commit and self._insert_and_commit(conn, params)):
            conn.execute(self._insert, params)

    def _insert_and_commit(self, conn: Connection, params: dict[str, Any]) -> bool:
        """Send the row and COMMIT in one round trip; False if the driver cannot."""
        raw = conn.connection.dbapi_connection
        keys = tuple(params)
        cached_raw, cached_keys, send, statement = self._with_commit
        if cached_raw is not raw or cached_keys != keys:
            send = committer(conn)
            statement = (
                "" if send is None else str(self._insert.compile(conn, column_keys=list(keys)))
            )
            self._with_commit = (raw, keys, send, statement)
        if send is None:
            return False
        send(statement, params)
        return True

    def applied_checksums(self, conn: Connection) -> dict[str, str]:
        """The checksum each revision had when it was last upgraded."""
        t = self.table
        rows = conn.execute(
            sa.select(t.c.revision, t.c.checksum)
            .where(t.c.kind == "step", t.c.direction == "upgrade", t.c.status == APPLIED)
            .order_by(t.c.id)
        )
        return {row.revision: row.checksum for row in rows if row.checksum}

    def runs(self, conn: Connection, *, limit: int = 20) -> list[sa.Row[tuple[object, ...]]]:
        t = self.table
        # Not the added columns: a table an older Revisor created may lack
        # them, and reading runs never adds them.
        columns = [c for c in t.c if c.name not in ADDED_COLUMNS]
        query = sa.select(*columns).where(t.c.kind == "run").order_by(t.c.id.desc()).limit(limit)
        return list(conn.execute(query))
