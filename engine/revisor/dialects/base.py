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
deadlock the database resolves by killing one of them. On MySQL a waiter
inside a transaction would hold metadata locks the holder's DDL waits for.

Where DDL is not transactional (MySQL, MariaDB), a revision that fails
half-way leaves the statements it ran before the failure committed.
:class:`StatementLog` watches what each step runs so that the runtime can
say exactly what was left behind, instead of claiming a clean failure.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.engine import Connection

from revisor.connection import Database
from revisor.locks import LockKey, lock_key_for


def lock_key(db: Database, *, schema: str | None, table: str) -> LockKey:
    """The lock of ``db``'s version table ``table`` in ``schema`` (:func:`lock_key_for`)."""
    return lock_key_for(db.url.database, schema=schema, table=table)


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

    def is_lock_timeout(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a statement that gave up waiting for a table lock.

        That is what ``--ddl-lock-timeout`` produces and what
        ``--ddl-lock-retries`` re-runs a revision for; a statement that ran too
        long (``--statement-timeout``) is not, and is never retried.
        """

    def commits_implicitly(self, statement: str) -> bool:
        """Whether ``statement`` commits the open transaction by itself (DDL on MySQL).

        Always False where DDL is transactional. Where it is not, a failed
        revision whose statements include one of these is partially applied.
        """


def milliseconds(seconds: float | None) -> str:
    return "0" if not seconds else f"{max(int(seconds * 1000), 1)}ms"


def sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    for attr in ("sqlstate", "pgcode"):
        value = getattr(orig, attr, None)
        if isinstance(value, str):
            return value
    return None


@dataclass(frozen=True)
class StatementsRan:
    """What a failed step had committed before it failed, where DDL is not transactional.

    ``committed`` counts the statements that are in the database for good:
    every statement up to the last one that committed by itself, and all of
    them when the failing statement was one of those (the server commits
    before it runs such a statement, whether it then succeeds or not).
    ``head`` and ``tail`` are the text of the first and last few of them,
    each on one line and truncated; ``committed - len(head) - len(tail)``
    are left out between the two.
    """

    committed: int
    head: tuple[str, ...]
    tail: tuple[str, ...]

    @property
    def statements(self) -> tuple[str, ...]:
        """The statements shown, with a marker where some are left out."""
        skipped = self.committed - len(self.head) - len(self.tail)
        middle = (f"… {skipped} more …",) if skipped else ()
        return (*self.head, *middle, *self.tail)

    def numbered(self) -> str:
        """The statements shown, each with its place in the step: ``(1) CREATE ...;``."""
        first_of_tail = self.committed - len(self.tail) + 1
        head = [f"({i}) {text};" for i, text in enumerate(self.head, 1)]
        tail = [f"({i}) {text};" for i, text in enumerate(self.tail, first_of_tail)]
        skipped = self.committed - len(self.head) - len(self.tail)
        return " ".join([*head, *([f"… {skipped} more …"] if skipped else []), *tail])


class StatementLog:
    """The statements one step runs on the migration connection, bounded.

    Attached with SQLAlchemy's cursor events to the run's connection and
    reset when each step starts; it keeps a count and the first and last
    :attr:`KEEP` statements (each cut to :attr:`WIDTH` characters), so a
    revision that loads a million rows costs a counter, not a million
    strings. Only runs without transactional DDL use it: elsewhere a failed
    step leaves nothing behind.
    """

    KEEP = 3
    WIDTH = 200

    def __init__(self, commits_implicitly: Callable[[str], bool]) -> None:
        self._commits_implicitly = commits_implicitly
        self._active = False
        self.reset()

    def attach(self, conn: Connection) -> None:
        event.listen(conn, "before_cursor_execute", self._before)
        event.listen(conn, "after_cursor_execute", self._after)

    def detach(self, conn: Connection) -> None:
        event.remove(conn, "before_cursor_execute", self._before)
        event.remove(conn, "after_cursor_execute", self._after)

    def reset(self) -> None:
        """Start counting for a new step."""
        self._active = True
        self._count = 0
        self._head: list[str] = []
        self._tail: deque[tuple[int, str]] = deque(maxlen=self.KEEP)
        self._committed = 0
        self._committed_tail: tuple[tuple[int, str], ...] = ()
        self._pending: str | None = None

    def _before(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if self._active:
            self._pending = statement

    def _after(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not self._active:
            return
        self._pending = None
        text = " ".join(statement.split())
        if len(text) > self.WIDTH:
            text = text[: self.WIDTH - 1] + "…"
        if len(self._head) < self.KEEP:
            self._head.append(text)
        self._tail.append((self._count, text))
        self._count += 1
        if self._commits_implicitly(statement):
            self._committed = self._count
            self._committed_tail = tuple(self._tail)

    def committed(self, *, autocommit: bool = False) -> StatementsRan | None:
        """What the step has committed so far (None: nothing); stops counting.

        ``autocommit``: the step's revision has an ``autocommit_block()``, in
        which every statement commits; then all that ran counts as committed
        (it cannot be told which ran inside the block). Call it as soon as
        the step fails, before anything else runs on the connection.
        """
        self._active = False
        committed, tail = self._committed, self._committed_tail
        pending = self._pending is not None and self._commits_implicitly(self._pending)
        if autocommit or pending:
            committed, tail = self._count, tuple(self._tail)
        if not committed:
            return None
        head = tuple(self._head[:committed])
        return StatementsRan(
            committed=committed,
            head=head,
            tail=tuple(text for index, text in tail if index >= len(head)),
        )
