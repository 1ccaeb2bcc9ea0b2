"""A run with nothing to do, answered without SQLAlchemy or Alembic.

Most runs find the database already where they were asked to take it: every
Helm upgrade runs its pre-upgrade hook, every Deployment rollout its Job.
Such a run needs the lock, the version table, two checks, and no revision at
all; but loading SQLAlchemy and Alembic's runtime alone costs more CPU than a
whole ``alembic upgrade head`` at head. So :func:`answer` tries first, with
the bare driver: the graph's heads from the files' headers
(:mod:`revisor.header_graph`), the database through :mod:`sqlite3` or
psycopg, the lock the full run takes (the same lock file; the same advisory
lock, key and holder's description, :mod:`revisor.locks`).

It answers only when its answer is the full run's, word for word (the same
result document, plan hash and message), and only reads. Anything else
returns None and the full run goes on as if nothing had been tried:

- not a SQLite file or PostgreSQL through psycopg (``postgresql+psycopg``,
  ``postgresql``, ``postgres``, or the ``REVISOR_DATABASE_*`` parts);
  a SQLite URL with options; a file that is not there;
- anything but ``apply``/``upgrade`` to ``head``, ``heads`` or an exact
  revision id; ``--baseline``, ``--schema``, ``--env-py``, ``--metadata``,
  ``--version-table-schema``;
- scripts the header graph declines (an ini file that sets version
  locations, computed headers, ...);
- a database not at that target, or without a version table;
- what the full run would write even with nothing to do: a history row left
  ``running`` by a dead runner (marked interrupted), a revision with no
  schema snapshot yet (recorded);
- any error from the database, a server that cannot be reached included
  (the full run reports it in its own words, so such a run tries twice).

The lock is held around the reads, as in the full run; a lock timeout is
the full run's error, raised from here. Secrets in the URL are registered
for redaction as the full run registers them.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote

from revisor import __version__, contract
from revisor.contract import (
    ENV_DATABASE_PARTS,
    ENV_DATABASE_URL,
    ExitCode,
    heads_text,
    timestamp,
)
from revisor.header_graph import read_graph
from revisor.ini_file import config_file_of, read_ini
from revisor.libpq import libpq_options
from revisor.lock_file import LockFile, busy_timeout
from revisor.locks import PG_HOLDER, PG_TRY_LOCK, PG_UNLOCK, gave_up, lock_key_for, pg_holder_phrase
from revisor.options import RunOptions
from revisor.output import Reporter
from revisor.polling import poll, waiting_phrase
from revisor.records import HISTORY_TABLE, RUNNING, SNAPSHOT_TABLE, plan_hash, revision_key
from revisor.redaction import register_secret
from revisor.script_location import ScriptLocation

#: The SQLite URLs answered here: a file path and nothing else (no query, no escapes).
_SQLITE_URL = re.compile(r"sqlite(?:\+pysqlite)?:///(?P<path>[^?#%]+)")
#: SQLAlchemy's own URL grammar (``sqlalchemy.engine.url._parse_url``), so that a
#: URL means here what it means to the full run.
_URL = re.compile(
    r"""
    (?P<name>[\w\+]+)://
    (?:(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@)?
    (?:(?:\[(?P<ipv6host>[^/\?]+)\]|(?P<ipv4host>[^/:\?]+))?(?::(?P<port>[^/\?]*))?)?
    (?:/(?P<database>[^\?]*))?
    (?:\?(?P<query>.*))?
    """,
    re.X,
)
#: What the full run opens with psycopg (a bare ``postgresql://`` included).
_PSYCOPG = frozenset({"postgresql+psycopg", "postgresql", "postgres", "postgres+psycopg"})


@dataclass(frozen=True)
class SqliteFile:
    path: str


@dataclass(frozen=True)
class PostgresServer:
    #: ``psycopg.connect``'s parameters: user, password, host, port, dbname, the URL's query.
    params: Mapping[str, Any]
    #: The URL's database name, part of the lock's key.
    database: str | None


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
    database = database_of(question, os.environ if environ is None else environ)
    if database is None or (isinstance(database, SqliteFile) and not Path(database.path).is_file()):
        return None
    wanted = _wanted(question.location, options.target)
    if wanted is None:
        return None
    table = question.version_table.table
    with _locked_session(database, question, reporter) as session:
        heads = None if session is None else _settled(session, table, wanted, options.dry_run)
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


def database_of(
    question: Question, environ: Mapping[str, str]
) -> SqliteFile | PostgresServer | None:
    """The database, found where the full run looks (:func:`revisor.connection.resolve_database`).

    The sources in the same order: ``--database-url``, ``--database-url-file``,
    ``REVISOR_DATABASE_URL``, the ``REVISOR_DATABASE_*`` parts, ``sqlalchemy.url``
    of the ini file. None for any database not answered here, or an
    unreadable file (the full run says what is wrong).
    """
    if question.database_url:
        return _from_url(question.database_url, secret_parts=False)
    if question.database_url_file:
        return _from_url_file(question.database_url_file)
    if environ.get(ENV_DATABASE_URL):
        return _from_url(environ[ENV_DATABASE_URL], secret_parts=True)
    parts = {key: environ.get(name) or None for key, name in ENV_DATABASE_PARTS.items()}
    if parts["host"] or parts["name"]:
        return _from_parts(parts)
    return _from_ini(question.location)


def _from_url_file(path: str) -> SqliteFile | PostgresServer | None:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return None
    return _from_url(text, secret_parts=True)


def _from_ini(location: ScriptLocation) -> SqliteFile | PostgresServer | None:
    config_file = config_file_of(location)
    ini = None if config_file is None else read_ini(config_file, location.ini_section)
    if ini is None or not ini.url:
        return None
    return _from_url(ini.url, secret_parts=False)


def _from_url(raw: str, *, secret_parts: bool) -> SqliteFile | PostgresServer | None:
    text = raw.strip()
    sqlite = _SQLITE_URL.fullmatch(text)
    if sqlite is not None:
        return None if sqlite["path"] == ":memory:" else SqliteFile(sqlite["path"])
    found = _URL.fullmatch(text)
    if found is None or found["name"] not in _PSYCOPG:
        return None
    user, password, database = (
        None if found[part] is None else unquote(found[part])
        for part in ("username", "password", "database")
    )
    register_secret(password)
    if secret_parts:
        for part in (user, found["ipv4host"] or found["ipv6host"], database):
            register_secret(part)
    port = found["port"]
    if port and not port.isdigit():
        return None
    query = parse_qsl(found["query"] or "")
    keys = [key for key, _ in query]
    if len(set(keys)) != len(keys) or "host" in keys or "port" in keys:
        return None  # several values, several hosts: SQLAlchemy's dialect rewrites them
    params = {
        "user": user,
        "password": password,
        "host": found["ipv4host"] or found["ipv6host"],
        "port": int(port) if port else None,
        "dbname": database,
    }
    return _server({**params, **dict(query)}, database)


def _from_parts(parts: Mapping[str, str | None]) -> PostgresServer | None:
    for key in ("user", "password", "host", "name"):
        register_secret(parts[key])
    port = parts["port"]
    if (port is not None and not port.isdigit()) or (
        parts["driver"] or "postgresql"
    ) not in _PSYCOPG:
        return None
    params = {
        "user": parts["user"],
        "password": parts["password"],
        "host": parts["host"],
        "port": int(port) if port else None,
        "dbname": parts["name"],
    }
    return _server(params, parts["name"])


def _server(params: Mapping[str, Any], database: str | None) -> PostgresServer:
    """The parameters given (the full run's own options win, as its ``connect_args`` do)."""
    given = {key: value for key, value in params.items() if value is not None and value != ""}
    return PostgresServer({**given, **libpq_options()}, database)


class _Unreadable(Exception):
    """The database answered a read with an error: the full run will say which."""


class _Session(Protocol):
    """The few reads the answer makes, whatever the database."""

    def rows(self, statement: str, *parameters: str) -> list[tuple[Any, ...]]:
        """``statement``'s rows (its parameters are ``?``), or :class:`_Unreadable`."""

    def has_table(self, name: str) -> bool:
        """Whether ``name`` is a table the connection sees unqualified."""


class _Sqlite:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def rows(self, statement: str, *parameters: str) -> list[tuple[Any, ...]]:
        try:
            return self.connection.execute(statement, parameters).fetchall()
        except sqlite3.Error as exc:
            raise _Unreadable from exc

    def has_table(self, name: str) -> bool:
        found = self.rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", name)
        return bool(found)


class _Postgres:
    def __init__(self, connection: Any, error: type[Exception]) -> None:
        self.connection, self.error = connection, error

    def rows(self, statement: str, *parameters: str) -> list[tuple[Any, ...]]:
        try:
            found: list[tuple[Any, ...]] = self.connection.execute(
                statement.replace("?", "%s"), parameters
            ).fetchall()
        except self.error as exc:
            raise _Unreadable from exc
        return found

    def has_table(self, name: str) -> bool:
        # As SQLAlchemy's has_table without a schema: a relation on the search_path.
        return bool(
            self.rows(
                "SELECT 1 FROM pg_catalog.pg_class c WHERE c.relname = ? "
                "AND c.relkind IN ('r', 'p', 'f', 'v', 'm') "
                "AND pg_catalog.pg_table_is_visible(c.oid)",
                name,
            )
        )


@contextmanager
def _locked_session(
    database: SqliteFile | PostgresServer, question: Question, reporter: Reporter
) -> Iterator[_Session | None]:
    """A session holding the run's lock, or None where the database failed us."""
    if isinstance(database, SqliteFile):
        with _sqlite_session(database, question.options, reporter) as session:
            yield session
    else:
        table = question.version_table.table
        with _postgres_session(database, table, question.options, reporter) as session:
            yield session


@contextmanager
def _sqlite_session(
    database: SqliteFile, options: RunOptions, reporter: Reporter
) -> Iterator[_Session | None]:
    lock = LockFile(database.path)
    lock.acquire(timeout=options.lock_timeout, on_wait=reporter.info)
    try:
        busy = busy_timeout(options.ddl_lock_timeout)
        try:
            connection = sqlite3.connect(database.path, timeout=busy, isolation_level=None)
        except sqlite3.Error:
            yield None
            return
        with closing(connection):
            yield _Sqlite(connection)
    finally:
        lock.release()


@contextmanager
def _postgres_session(
    database: PostgresServer, table: str, options: RunOptions, reporter: Reporter
) -> Iterator[_Session | None]:
    """The session holds the advisory lock the full run takes, polled the same way."""
    import psycopg

    try:
        connection = psycopg.connect(**database.params, autocommit=True)
    except psycopg.Error:
        yield None
        return
    with closing(connection):
        key = lock_key_for(database.database, schema=None, table=table)

        def holder() -> str:
            try:
                found = connection.execute(PG_HOLDER, {"k": key.value}).fetchone()
            except psycopg.Error:
                found = None
            return pg_holder_phrase(found)

        def waiting() -> None:
            reporter.info(waiting_phrase(options.lock_timeout, f"the lock {key.name}{holder()}"))

        def try_once() -> bool:
            found = connection.execute(PG_TRY_LOCK, {"k": key.value}).fetchone()
            return bool(found and found[0])

        try:
            acquired = poll(try_once, timeout=options.lock_timeout, on_first_miss=waiting)
        except psycopg.Error:
            yield None
            return
        if not acquired:
            raise gave_up(f"the lock {key.name}{holder()}", options.lock_timeout)
        yield _Postgres(connection, psycopg.Error)
        # Closing the session frees the lock too; this frees it first, explicitly.
        with suppress(psycopg.Error):
            connection.execute(PG_UNLOCK, {"k": key.value})


def _settled(
    session: _Session, table: str, wanted: set[str], dry_run: bool
) -> tuple[str, ...] | None:
    """The database's heads if they are ``wanted`` and nothing would be written; else None."""
    try:
        if not session.has_table(table):
            return None
        found = session.rows(f"SELECT version_num FROM {_quote(table)}")
        heads = tuple(str(row[0]) for row in found)
        if len(set(heads)) != len(heads) or set(heads) != wanted:
            return None
        if not dry_run and _would_write(session, heads):
            return None
    except _Unreadable:
        return None
    return heads


def _would_write(session: _Session, heads: tuple[str, ...]) -> bool:
    """Whether the full run writes something though it has nothing to run.

    A history row a dead runner left ``running`` is marked interrupted; a
    revision without a recorded schema gets one. A dry run does neither.
    """
    if session.has_table(HISTORY_TABLE) and session.rows(
        f"SELECT 1 FROM {HISTORY_TABLE} WHERE status = ? LIMIT 1", RUNNING
    ):
        return True
    return not session.has_table(SNAPSHOT_TABLE) or not session.rows(
        f"SELECT 1 FROM {SNAPSHOT_TABLE} WHERE revisions = ? LIMIT 1", revision_key(heads)
    )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


__all__ = ["PostgresServer", "Question", "SqliteFile", "answer", "database_of"]
