"""Everything that differs per database: the advisory lock and session settings.

One small interface, :class:`~revisor.dialects.base.DialectSupport`, with one
module per backend. A new dialect is a module here and one line in
:func:`support_for`.
"""

from __future__ import annotations

from revisor.connection import Database
from revisor.dialects.base import (
    DialectSupport,
    StatementLog,
    StatementsRan,
    lock_key,
    sqlstate,
)
from revisor.dialects.mysql import MysqlSupport
from revisor.dialects.postgresql import PostgresSupport
from revisor.dialects.sqlite import SqliteSupport
from revisor.errors import BadInput
from revisor.locks import LockKey
from revisor.polling import Backoff, poll
from revisor.redaction import scrub

__all__ = [
    "Backoff",
    "DialectSupport",
    "LockKey",
    "StatementLog",
    "StatementsRan",
    "lock_key",
    "poll",
    "sqlstate",
    "support_for",
]


def support_for(db: Database) -> DialectSupport:
    """The implementation for ``db``'s backend, or a clear refusal."""
    if db.backend == "postgresql":
        return PostgresSupport(db.schema)
    if db.backend in ("mysql", "mariadb"):
        return MysqlSupport()
    if db.backend == "sqlite":
        return SqliteSupport(db)
    raise BadInput(
        scrub(f"{db.display}: the {db.backend!r} database is not supported"),
        hint="Revisor runs on PostgreSQL, MySQL, MariaDB and SQLite",
    )
