"""``revisor_schema``: the schema each revision left, beside ``revisor_history``.

One row per revision key (the database's heads, sorted, comma-separated;
``base`` for none): the latest snapshot taken at that revision, its hash,
when and by what (the run's command, or ``record``). Saving replaces the
revision's row, and only the :data:`KEEP` most recently saved rows stay, so
the table stays small however many revisions a database goes through.

The snapshot is stored as its canonical JSON, zlib-compressed (a schema's
JSON repeats itself: 200 tables' 160 KiB become 5 to 20 KiB, in about a
millisecond), as ``LONGBLOB`` on MySQL, whose ``BLOB`` ends at 64 KiB. Read
one by hand with ``zlib.decompress``. The time is ISO 8601 text in UTC, the
same on every backend.
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from revisor.records import SNAPSHOT_TABLE, revision_key
from revisor.schema_snapshot import SchemaSnapshot

__all__ = ["TABLE_NAME", "RecordedSnapshot", "SnapshotTable", "revision_key"]

TABLE_NAME = SNAPSHOT_TABLE
#: Revisions whose snapshot is kept; older ones are deleted as new ones are saved.
KEEP = 50


#: zlib's default: a level above saves 1% more for three times the time.
_COMPRESSION = 6


class _LongBinary(sa.types.TypeDecorator[bytes]):
    """Bytes without MySQL's 64 KiB ``BLOB`` limit; its dialect is imported only for MySQL."""

    impl = sa.LargeBinary()
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import LONGBLOB

            return dialect.type_descriptor(LONGBLOB())
        return dialect.type_descriptor(self.impl_instance)


@dataclass(frozen=True)
class RecordedSnapshot:
    """A stored row: the snapshot, and when and by what it was recorded."""

    snapshot: SchemaSnapshot
    hash: str
    format: int
    #: ISO 8601, UTC (``2026-12-01T10:00:00Z``).
    recorded_at: str
    recorded_by: str
    run_id: str | None


class SnapshotTable:
    """Reads and writes ``revisor_schema`` in the version table's schema."""

    def __init__(self, schema: str | None) -> None:
        self.table = sa.Table(
            TABLE_NAME,
            sa.MetaData(schema=schema),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("revisions", sa.String(255), nullable=False, index=True),
            sa.Column("hash", sa.String(64), nullable=False),
            sa.Column("format", sa.Integer, nullable=False),
            sa.Column("snapshot", _LongBinary(), nullable=False),
            sa.Column("recorded_at", sa.String(32), nullable=False),
            sa.Column("recorded_by", sa.String(16), nullable=False),
            sa.Column("run_id", sa.String(36)),
            sa.Column("engine_version", sa.String(32)),
        )

    def exists(self, conn: Connection) -> bool:
        return sa.inspect(conn).has_table(TABLE_NAME, schema=self.table.schema)

    def has(self, conn: Connection, key: str) -> bool:
        """Whether a snapshot is recorded for revision ``key``."""
        if not self.exists(conn):
            return False
        t = self.table
        found = conn.execute(sa.select(t.c.id).where(t.c.revisions == key).limit(1)).first()
        return found is not None

    def latest(self, conn: Connection, key: str) -> RecordedSnapshot | None:
        """The snapshot recorded for revision ``key``, or None."""
        if not self.exists(conn):
            return None
        t = self.table
        row = conn.execute(
            sa.select(
                t.c.hash, t.c.format, t.c.snapshot, t.c.recorded_at, t.c.recorded_by, t.c.run_id
            )
            .where(t.c.revisions == key)
            .order_by(t.c.id.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        try:
            text = zlib.decompress(bytes(row.snapshot)).decode()
        except (zlib.error, UnicodeDecodeError) as exc:
            raise ValueError(f"not a compressed schema snapshot: {exc}") from None
        return RecordedSnapshot(
            snapshot=SchemaSnapshot.from_text(text),
            hash=row.hash,
            format=row.format,
            recorded_at=row.recorded_at,
            recorded_by=row.recorded_by,
            run_id=row.run_id,
        )

    def save(
        self,
        conn: Connection,
        key: str,
        snapshot: SchemaSnapshot,
        *,
        recorded_by: str,
        run_id: str | None,
        engine_version: str,
    ) -> None:
        """Make ``snapshot`` revision ``key``'s, and keep the table bounded; caller commits.

        Call it holding the migration lock: two savers could otherwise both
        delete the old row and both insert.
        """
        if not self.exists(conn):
            self.table.create(conn)
        t = self.table
        conn.execute(t.delete().where(t.c.revisions == key))
        conn.execute(
            t.insert().values(
                revisions=key,
                hash=snapshot.hash,
                format=snapshot.format,
                snapshot=zlib.compress(snapshot.text.encode(), _COMPRESSION),
                recorded_at=dt.datetime.now(dt.UTC)
                .isoformat(timespec="seconds")
                .replace("+00:00", "Z"),
                recorded_by=recorded_by,
                run_id=run_id,
                engine_version=engine_version,
            )
        )
        # The oldest id still kept; everything older goes. (MySQL allows no
        # LIMIT in a subquery of IN, nor the table itself in DELETE's subquery.)
        oldest_kept = conn.execute(
            sa.select(t.c.id).order_by(t.c.id.desc()).offset(KEEP - 1).limit(1)
        ).scalar()
        if oldest_kept is not None:
            conn.execute(t.delete().where(t.c.id < oldest_kept))
