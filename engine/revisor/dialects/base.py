"""What every dialect provides, and the pieces they share: the lock key and how to wait.

The lock is always taken **on the migration connection itself** and is
session-level, so it is held across every per-revision commit and
autocommit block, and released by the server if the runner dies. A
transaction-level lock would be released at the first commit; a lock on a
side connection could be lost while migrations go on unprotected.

A runner that waits for the lock holds nothing while it waits: it tries,
ends its transaction, and sleeps (:func:`poll`). A waiter that held a
snapshot or a transaction would block statements of the lock holder that
wait for all older transactions (``CREATE INDEX CONCURRENTLY``) — a
deadlock the database resolves by killing one of them.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.engine import Connection

from revisor.connection import Database


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
    """One backend's lock and session settings."""

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

    def lock_holders(self, conn: Connection, *, statement: str) -> str:
        """Who holds table locks ``statement`` waited for, as a phrase ("" when unknown).

        Ends the transaction.
        """

    def invalid_indexes(self, conn: Connection) -> frozenset[str]:
        """Indexes a failed or interrupted concurrent build left unusable (``schema.name``).

        Only PostgreSQL builds indexes concurrently; other dialects have none.
        Ends the transaction.
        """


def waiting_phrase(timeout: float | None, what: str) -> str:
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


def milliseconds(seconds: float | None) -> str:
    return "0" if not seconds else f"{max(int(seconds * 1000), 1)}ms"


def sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    for attr in ("sqlstate", "pgcode"):
        value = getattr(orig, attr, None)
        if isinstance(value, str):
            return value
    return None
