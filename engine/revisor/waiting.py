"""``revisor wait-for``: wait until the database is at (or past) the revisions an app ships.

Made for an application's init container: the pod starts once its schema
is there, whoever migrates it (the operator's Job, a Helm hook). It needs
no Kubernetes API and no permission beyond reading the version table.

It polls cheaply and holds nothing: one connection, kept while it answers;
a plain ``SELECT version_num`` (while the version table does not exist yet,
the catalog is asked whether it does, so the server logs no error every
poll); the read's transaction ended at once, so no snapshot or metadata
lock of the waiter's can hold up the migration it waits for; no advisory
lock, no write, no Revisor table. Pauses grow from a quarter of a second
to four. A database that cannot be reached yet (the server starting, DNS
not there) is retried until the deadline, said once; a connection lost
mid-wait is opened again.

**At or past.** By default the awaited revisions are the scripts' heads;
``--revision REV`` names others (an id, a prefix, ``branch@head``). The
database satisfies them when each one is a head of the database or an
ancestor of one, following the scripts' graph: an app built at X starts on
a database at X or at any later revision of the same history, the usual
zero-downtime order (migrate first, then roll out). A database head the
scripts do not have (a newer release's revision) cannot be placed in that
graph, so it is not taken for "past": the waiter keeps waiting and says
why. Only the graph decides "past", never revision names or dates.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic.script.revision import RevisionError, RevisionMap
from sqlalchemy.engine import Connection

from revisor import __version__, contract
from revisor.connection import run_with_connection
from revisor.contract import ExitCode, Reason, VersionTable, heads_text
from revisor.errors import BadInput, DatabaseUnreachable, RevisorError
from revisor.output import Reporter
from revisor.polling import Backoff
from revisor.project import Project
from revisor.scripts import Scripts, script_errors

#: Pauses between polls, and between tries to reach the database.
POLL_BACKOFF = Backoff(first=0.25, cap=4.0)


class WaitTimeout(RevisorError):
    """The database was reachable but did not reach the revision within ``--timeout``."""

    exit_code = ExitCode.WAIT_TIMEOUT


class _ConnectionLost(Exception):
    def __init__(self, cause: sa.exc.DBAPIError) -> None:
        super().__init__(" ".join(str(cause.orig).split()))


@dataclass(frozen=True)
class Awaited:
    """The revisions waited for, as given (``spec``) and as ids."""

    spec: str
    revisions: tuple[str, ...]


def awaited_revisions(scripts: Scripts, revision: str | None) -> Awaited:
    """``--revision REV`` as ids (None: the scripts' heads); :class:`BadInput` for a bad one."""
    if revision is None:
        return Awaited("heads", scripts.heads())
    spec = revision.split("@", 1)[-1].strip()
    if spec in ("", "base") or spec[0] in "+-":
        raise BadInput(
            f"wait-for --revision {revision!r}: name a revision (an id, a unique prefix, "
            "head, heads or branch@head); relative ones and base mean nothing to wait for",
            reason=Reason.INVALID_TARGET,
        )
    try:
        with script_errors(scripts.dirs, reason=Reason.INVALID_TARGET):
            found = scripts.directory.revision_map.get_revisions(revision)
    except BadInput as exc:
        message = f"wait-for --revision {revision}: {exc.message}"
        raise BadInput(message, reason=exc.reason) from None
    ids = tuple(r.revision for r in found if r is not None and not isinstance(r, str))
    if not ids:
        raise BadInput(
            f"wait-for --revision {revision}: the scripts have no such revision",
            reason=Reason.INVALID_TARGET,
        )
    return Awaited(revision, ids)


class _Graph:
    """Which revisions the database's heads contain, per the scripts (cached per heads)."""

    def __init__(self, scripts: Scripts) -> None:
        self.scripts = scripts
        self._cache: dict[tuple[str, ...], tuple[frozenset[str], tuple[str, ...]]] = {}

    def contained(self, heads: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
        """The revisions at or below ``heads``, and the heads the scripts do not have."""
        if heads not in self._cache:
            revision_map = self.scripts.directory.revision_map
            known = tuple(h for h in heads if _known(revision_map, h))
            unknown = tuple(h for h in heads if h not in known)
            below: set[str] = set()
            if known:
                below = {
                    script.revision
                    for script in revision_map.iterate_revisions(
                        known, "base", inclusive=True, assert_relative_length=False
                    )
                }
            self._cache[heads] = (frozenset(below), unknown)
        return self._cache[heads]

    def reached(self, heads: tuple[str, ...], awaited: Awaited) -> bool:
        below, _unknown = self.contained(heads)
        return all(rev in below for rev in awaited.revisions)


def _known(revision_map: RevisionMap, rev: str) -> bool:
    try:
        return revision_map.get_revision(rev) is not None
    except RevisionError:  # "Can't locate revision": not in these scripts
        return False


@dataclass
class _Watch:
    """What the waiter has seen and said so far (each thing is said once)."""

    awaited: Awaited
    timeout: float | None
    reporter: Reporter
    first: tuple[str, ...] | None = None
    last: tuple[str, ...] | None = None
    table_seen: bool = False
    said_unreachable: bool = False
    said_unknown: set[str] = field(default_factory=set)
    attempt: int = 0

    def seen(self, heads: tuple[str, ...], graph: _Graph, reached: bool) -> None:
        if self.first is None:
            self.first = heads
            if not reached and self.timeout != 0:  # 0 looks once: there is no waiting
                bound = "" if self.timeout is None else f" up to {self.timeout:g}s"
                self.reporter.info(
                    f"waiting{bound} for the database to reach "
                    f"{heads_text(self.awaited.revisions)} (or a later revision); "
                    f"it is at {heads_text(heads)}"
                )
        elif heads != self.last:
            self.reporter.info(f"the database is at {heads_text(heads)} now")
        self.last = heads
        if reached:
            return
        _below, unknown = graph.contained(heads)
        fresh = [rev for rev in unknown if rev not in self.said_unknown]
        if fresh:
            self.said_unknown.update(fresh)
            self.reporter.info(unknown_note(fresh, self.awaited))


def unknown_note(unknown: Sequence[str], awaited: Awaited) -> str:
    return (
        f"{', '.join(unknown)} is not in these scripts (a newer release's revision?): whether "
        f"it is past {heads_text(awaited.revisions)} cannot be told from their graph, so this "
        "keeps waiting"
    )


def wait_for(
    project: Project,
    reporter: Reporter,
    *,
    revision: str | None,
    timeout: float | None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> contract.Result:
    """Poll until the database is at or past ``revision`` (default: the scripts' heads).

    Raises :class:`WaitTimeout` (exit 9) when ``timeout`` seconds pass with the
    database elsewhere, :class:`DatabaseUnreachable` (exit 6) when they pass
    without reaching it; ``timeout`` 0 looks once, None waits for ever.
    """
    scripts = project.scripts
    awaited = awaited_revisions(scripts, revision)
    db = project.db
    graph = _Graph(scripts)
    watch = _Watch(awaited=awaited, timeout=timeout, reporter=reporter)
    started = clock()
    deadline = None if timeout is None else started + timeout

    def pause() -> None:
        delay = POLL_BACKOFF.delay(watch.attempt)
        if deadline is not None:
            delay = min(delay, max(deadline - clock(), 0.0))
        watch.attempt += 1
        sleep(delay)

    def poll(conn: Connection) -> tuple[str, ...]:
        while True:
            heads = _read_heads(conn, project.version_table, watch)
            reached = graph.reached(heads, awaited)
            watch.seen(heads, graph, reached)
            if reached:
                return heads
            if deadline is not None and clock() >= deadline:
                raise _timed_out(watch, heads, started=started, now=clock())
            pause()

    while True:
        try:
            heads = run_with_connection(db, poll)
            break
        except DatabaseUnreachable as exc:
            if deadline is not None and clock() >= deadline:
                raise DatabaseUnreachable(
                    f"gave up after {timeout:g}s: {exc.message}", hint=exc.hint
                ) from None
            if not watch.said_unreachable:
                watch.said_unreachable = True
                bound = "" if timeout is None else f" for up to {timeout:g}s"
                reporter.info(f"{exc.message}; retrying{bound}")
        except _ConnectionLost as lost:
            reporter.info(f"lost the connection to the database ({lost}); connecting again")
            watch.table_seen = False
        pause()
    waited = clock() - started
    return contract.Result(
        command="wait-for",
        exit_code=ExitCode.OK,
        target=awaited.spec,
        from_revisions=watch.first or (),
        to_revisions=heads,
        engine_version=__version__,
        detail_reason=Reason.AT_REVISION,
        details={"awaited": list(awaited.revisions), "waitedSeconds": round(waited, 1)},
    )


def _read_heads(conn: Connection, table: VersionTable, watch: _Watch) -> tuple[str, ...]:
    """The version table's revisions (none while it does not exist); ends the transaction."""
    try:
        if not watch.table_seen:
            if not sa.inspect(conn).has_table(table.table, schema=table.schema):
                return ()
            watch.table_seen = True
        query: sa.Select[tuple[Any]] = sa.select(sa.column("version_num")).select_from(
            sa.table(table.table, schema=table.schema)
        )
        try:
            return tuple(sorted(str(v) for v in conn.execute(query).scalars()))
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise
            # Dropped since (a downgrade to base that removed it): ask again.
            conn.rollback()
            watch.table_seen = False
            if sa.inspect(conn).has_table(table.table, schema=table.schema):
                raise
            return ()
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise _ConnectionLost(exc) from None
        raise
    finally:
        if not conn.invalidated:
            with suppress(sa.exc.DBAPIError):
                conn.rollback()


def _timed_out(watch: _Watch, heads: tuple[str, ...], *, started: float, now: float) -> WaitTimeout:
    awaited = watch.awaited
    message = (
        f"the database did not reach {heads_text(awaited.revisions)} within "
        f"{watch.timeout or 0:g}s: it is at {heads_text(heads)}"
    )
    if watch.said_unknown:
        message += f" ({unknown_note(sorted(watch.said_unknown), awaited)})"
    context = contract.Result(
        command="wait-for",
        exit_code=ExitCode.WAIT_TIMEOUT,
        target=awaited.spec,
        from_revisions=watch.first or (),
        to_revisions=heads,
        engine_version=__version__,
        details={"awaited": list(awaited.revisions), "waitedSeconds": round(now - started, 1)},
    )
    return WaitTimeout(
        message,
        hint="is a migration running or failing? revisor history --runs shows the runs; "
        "raise --timeout if it is slow",
        context=context,
    )
