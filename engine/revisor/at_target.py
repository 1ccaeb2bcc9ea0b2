"""A run with nothing to do, answered without SQLAlchemy or Alembic.

Most runs find the database already where they were asked to take it: every
Helm upgrade runs its pre-upgrade hook, every Deployment rollout its Job.
Such a run needs the lock, the version table, two checks, and no revision at
all; but loading SQLAlchemy and Alembic's runtime alone costs more CPU than a
whole ``alembic upgrade head`` at head. So :func:`answer` tries first, with
the standard library only: the graph's heads from the files' headers
(:mod:`revisor.header_graph`), the database through :mod:`sqlite3`, the same
lock file the full run takes (:class:`~revisor.lock_file.LockFile`).

It answers only when its answer is the full run's, word for word (the same
result document, plan hash and message), and only reads. Anything else
returns None and the full run goes on as if nothing had been tried:

- not SQLite, or a URL with options; a database file that is not there;
- anything but ``apply``/``upgrade`` to ``head``, ``heads`` or an exact
  revision id; ``--baseline``, ``--schema``, ``--env-py``, ``--metadata``;
- scripts the header graph declines (an ini file, computed headers, ...);
- a database not at that target, or without a version table;
- what the full run would write even with nothing to do: a history row left
  ``running`` by a dead runner (marked interrupted), a revision with no
  schema snapshot yet (recorded);
- any error from SQLite (the full run reports it with its own words).

The lock is held around the reads, as in the full run; a lock timeout is
the full run's error, raised from here.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from revisor import __version__, contract
from revisor.contract import ENV_DATABASE_URL, ExitCode, heads_text, timestamp
from revisor.header_graph import read_graph
from revisor.lock_file import LockFile, busy_timeout
from revisor.options import RunOptions
from revisor.output import Reporter
from revisor.records import HISTORY_TABLE, RUNNING, SNAPSHOT_TABLE, plan_hash, revision_key
from revisor.script_location import ScriptLocation

#: The SQLite URLs answered here: a file path and nothing else (no query, no escapes).
_SQLITE_URL = re.compile(r"sqlite(?:\+pysqlite)?:///(?P<path>[^?#%]+)")


@dataclass(frozen=True)
class Question:
    """What a run was asked, as far as the quick answer needs to know."""

    location: ScriptLocation
    options: RunOptions
    database_url: str | None = None
    database_url_file: str | None = None
    version_table: contract.VersionTable = field(default_factory=contract.VersionTable)
    schema: str | None = None
    env_py: bool = False
    metadata: str | None = None


def answer(
    question: Question, reporter: Reporter, *, environ: Mapping[str, str] | None = None
) -> contract.Result | None:
    """The full run's result when the database is already at the target; else None."""
    started = timestamp()
    options = question.options
    if not _simple(question):
        return None
    path = sqlite_path(question, os.environ if environ is None else environ)
    if path is None or not Path(path).is_file():
        return None
    wanted = _wanted(question.location, options.target)
    if wanted is None:
        return None
    lock = LockFile(path)
    lock.acquire(timeout=options.lock_timeout, on_wait=reporter.info)
    try:
        heads = _heads_if_settled(
            path,
            table=question.version_table.table,
            wanted=wanted,
            dry_run=options.dry_run,
            busy=busy_timeout(options.ddl_lock_timeout),
        )
    finally:
        lock.release()
    if heads is None:
        return None
    reporter.info(f"already at {options.target} ({heads_text(heads)}); nothing to do")
    return contract.Result(
        command=options.command,
        exit_code=ExitCode.OK,
        direction="none",
        target=options.target,
        from_revisions=heads,
        to_revisions=heads,
        plan_hash=plan_hash(options.target, heads, ()),
        dry_run=options.dry_run,
        started_at=started,
        finished_at=timestamp(),
        engine_version=__version__,
        runner=options.runner,
    )


def _wanted(location: ScriptLocation, target: str) -> set[str] | None:
    """The heads a database at ``target`` has, from the headers; None if Alembic must say."""
    graph = read_graph(location)
    if graph is None:
        return None
    if target == "heads" or (target == "head" and len(graph.heads) == 1):
        return set(graph.heads)  # "head" with several: Alembic's error, from the full run
    return {target} if target in graph.revisions else None


def _simple(question: Question) -> bool:
    options = question.options
    return (
        options.command in ("apply", "upgrade")
        and options.baseline is None
        and question.schema is None
        and not question.env_py
        and question.metadata is None
        and question.version_table.schema is None
    )


def sqlite_path(question: Question, environ: Mapping[str, str]) -> str | None:
    """The database file of a plain ``sqlite:///PATH`` URL, found where the full run looks.

    The sources in the full run's order (:func:`revisor.connection.resolve_database`):
    None for any other URL, for parts, for an unreadable file (the full run
    says what is wrong), and when the URL is in an ini file (not answered here).
    """
    raw: str | None
    if question.database_url:
        raw = question.database_url
    elif question.database_url_file:
        try:
            raw = Path(question.database_url_file).read_text()
        except (OSError, UnicodeDecodeError):
            return None
    elif environ.get(ENV_DATABASE_URL):
        raw = environ[ENV_DATABASE_URL]
    else:
        return None  # parts (a server), an ini file, or nothing: the full run decides
    found = _SQLITE_URL.fullmatch(raw.strip())
    if found is None or found["path"] == ":memory:":
        return None
    return found["path"]


def _heads_if_settled(
    path: str, *, table: str, wanted: set[str], dry_run: bool, busy: float
) -> tuple[str, ...] | None:
    """The database's heads if they are ``wanted`` and nothing would be written; else None."""
    try:
        with closing(sqlite3.connect(path, timeout=busy, isolation_level=None)) as db:
            if not _has_table(db, table):
                return None
            heads = tuple(row[0] for row in db.execute(f"SELECT version_num FROM {_quote(table)}"))
            if len(set(heads)) != len(heads) or set(heads) != wanted:
                return None
            if not dry_run and _would_write(db, heads):
                return None
            return heads
    except sqlite3.Error:
        return None


def _would_write(db: sqlite3.Connection, heads: tuple[str, ...]) -> bool:
    """Whether the full run writes something though it has nothing to run.

    A history row a dead runner left ``running`` is marked interrupted; a
    revision without a recorded schema gets one. A dry run does neither.
    """
    if _has_table(db, HISTORY_TABLE) and _exists(
        db, f"SELECT 1 FROM {HISTORY_TABLE} WHERE status = ? LIMIT 1", RUNNING
    ):
        return True
    return not _has_table(db, SNAPSHOT_TABLE) or not _exists(
        db, f"SELECT 1 FROM {SNAPSHOT_TABLE} WHERE revisions = ? LIMIT 1", revision_key(heads)
    )


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    return _exists(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", name)


def _exists(db: sqlite3.Connection, query: str, parameter: str) -> bool:
    return db.execute(query, (parameter,)).fetchone() is not None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


__all__ = ["Question", "answer", "sqlite_path"]
