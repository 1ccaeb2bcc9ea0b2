"""The migration lock's identity, PostgreSQL's advisory-lock statements, and the words of a timeout.

Stdlib only: the dialects (through SQLAlchemy) and the quick answer of a run
with nothing to do (:mod:`revisor.at_target`, through the bare driver) take
the same lock, name its holder the same way, and give up with the same error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from revisor.errors import LockTimeout


@dataclass(frozen=True)
class LockKey:
    """The lock's identity: one per database + schema + version table."""

    name: str
    value: int  # signed 64-bit, as pg_advisory_lock takes it


def lock_key_for(database: str | None, *, schema: str | None, table: str) -> LockKey:
    """Same inputs, same key, in every runner (golang-migrate does the same)."""
    name = f"revisor:{database or ''}:{schema or ''}:{table}"
    digest = hashlib.sha256(name.encode()).digest()
    return LockKey(name=name, value=int.from_bytes(digest[:8], "big", signed=True))


def gave_up(what: str, timeout: float | None) -> LockTimeout:
    """The error of a runner that waited ``timeout`` seconds for ``what`` (the lock, its holder)."""
    return LockTimeout(
        f"another migration holds {what}; gave up after {timeout:g}s",
        hint="wait for it to finish, or raise --lock-timeout",
    )


#: PostgreSQL: take the session-level advisory lock if it is free (one parameter: the key).
PG_TRY_LOCK = "SELECT pg_try_advisory_lock(%(k)s)"
PG_UNLOCK = "SELECT pg_advisory_unlock(%(k)s)"
#: Who holds the advisory lock ``%(k)s``: pid, application, client address, since when.
PG_HOLDER = (
    "SELECT a.pid, a.application_name, a.client_addr, a.backend_start "
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted "
    "AND ((l.classid::bigint << 32) | l.objid::bigint) = %(k)s"
)


def pg_holder_phrase(row: Sequence[object] | None) -> str:
    """`` (held by backend pid …)`` from a :data:`PG_HOLDER` row; empty without one."""
    if row is None:
        return ""
    pid, application, client, since = row
    return (
        f" (held by backend pid {pid}, application {application!r}, "
        f"client {client or 'local'}, connected since {since})"
    )
