"""Where the database is and how to open the one connection a run uses.

The URL comes from (first wins) ``--database-url``, ``--database-url-file``
(a mounted Secret), ``REVISOR_DATABASE_URL``, the ``REVISOR_DATABASE_*``
parts, or ``sqlalchemy.url`` of ``--config``. Its password is registered
with :mod:`revisor.redaction` before anything can print it; so are the
user, host and database name when they come from a file or the
environment, which is where a Kubernetes Secret puts them: a Secret's keys
can be pointed at any of its values, the password included.

``--schema NAME`` confines the session to one PostgreSQL schema, as in
Alembic's multi-tenancy recipe: its ``search_path`` is that schema alone,
set as the connection opens (before SQLAlchemy reads the default schema, so
reflection and unqualified names both mean the tenant's), and a schema that
does not exist is refused before anything runs (:func:`_check_schema`).

A run holds exactly one connection for its whole length (the advisory lock
lives on it), from an engine with ``NullPool`` so nothing pooled can keep a
lock after the run. Async URLs (``postgresql+asyncpg``, ``sqlite+aiosqlite``,
``mysql+aiomysql``) get SQLAlchemy's async engine and the run happens inside
``run_sync``, so the rest of the engine only ever sees a synchronous
``Connection``.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import NullPool

from revisor.contract import ENV_DATABASE_PARTS, ENV_DATABASE_SOURCE, ENV_DATABASE_URL
from revisor.errors import BadInput, DatabaseUnreachable
from revisor.libpq import (
    APPLICATION_NAME,
    CONNECT_TIMEOUT_SECONDS,
    KEEPALIVE_COUNT,
    KEEPALIVE_IDLE_SECONDS,
    KEEPALIVE_INTERVAL_SECONDS,
    libpq_options,
)
from revisor.redaction import register_secret, scrub

T = TypeVar("T")
# psycopg logs a second error met while leaving a failed pipeline (committer,
# below); the first is raised and reported, so that line stays off stderr.
logging.getLogger("psycopg").addHandler(logging.NullHandler())

ASYNC_DRIVERS = frozenset({"asyncpg", "aiosqlite", "psycopg_async", "aiomysql", "asyncmy"})
# Bare "postgresql://" means psycopg2 to SQLAlchemy, and bare "mysql://" means
# mysqlclient; Revisor ships psycopg 3 and PyMySQL.
_DEFAULT_DRIVERS = {"postgresql": "psycopg", "mysql": "pymysql", "mariadb": "pymysql"}
_MYSQL_BACKENDS = frozenset({"mysql", "mariadb"})


@dataclass(frozen=True)
class Database:
    """A resolved database URL. ``str()`` never shows the password."""

    url: URL
    source: str
    #: User, host and database came from a Secret (a file or the environment):
    #: messages name :attr:`source` instead of them.
    secret_parts: bool = False
    #: The PostgreSQL schema every session works in (its whole search_path), or
    #: None for the server's default (``--schema``).
    schema: str | None = None

    @property
    def backend(self) -> str:
        """``postgresql``, ``sqlite``, ``mysql``, ..."""
        return self.url.get_backend_name()

    @property
    def driver(self) -> str:
        return self.url.get_driver_name()

    @property
    def is_async(self) -> bool:
        return self.driver in ASYNC_DRIVERS

    @property
    def display(self) -> str:
        """The URL without its password; for a URL from a Secret, only its driver and source."""
        if self.secret_parts:
            return f"the {self.url.drivername} database of {self.source}"
        return self.url.render_as_string(hide_password=True)

    def __str__(self) -> str:
        return self.display


def resolve_database(
    *,
    url: str | None = None,
    url_file: str | None = None,
    ini_url: str | Callable[[], str | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Database:
    """Find the database URL from the documented sources, first one wins.

    ``ini_url`` may be a function, called only when no other source gave a
    URL: reading the ini loads the scripts, which a command that needs none
    (``revisor schemas``) does not have.
    """
    env = os.environ if environ is None else environ
    if url:
        return _parse(url, "--database-url", secret_parts=False)
    if url_file:
        path = Path(url_file)
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise BadInput(
                f"--database-url-file {url_file}: cannot read it ({exc.strerror})",
                hint="mount the Secret that holds the URL at that path, or pass --database-url",
            ) from None
        if not text:
            raise BadInput(f"--database-url-file {url_file} is empty")
        return _parse(text, f"--database-url-file {url_file}", secret_parts=True)
    if env.get(ENV_DATABASE_URL):
        return _parse(env[ENV_DATABASE_URL], _source(env, ENV_DATABASE_URL), secret_parts=True)
    if env.get(ENV_DATABASE_PARTS["host"]) or env.get(ENV_DATABASE_PARTS["name"]):
        return _from_parts(env)
    found = ini_url() if callable(ini_url) else ini_url
    if found:
        return _parse(found, "sqlalchemy.url in the config file", secret_parts=False)
    raise BadInput(
        "no database given",
        hint=(
            f"pass --database-url, --database-url-file, set {ENV_DATABASE_URL}, "
            "or set sqlalchemy.url in the file given with --config"
        ),
    )


def _source(env: Mapping[str, str], variable: str) -> str:
    """Where the URL came from, for messages: the Secret the operator named, else the variable."""
    return env.get(ENV_DATABASE_SOURCE) or variable


def _from_parts(env: Mapping[str, str]) -> Database:
    parts = {key: env.get(name) for key, name in ENV_DATABASE_PARTS.items()}
    for key in ("user", "password", "host", "name"):
        register_secret(parts[key])
    source = _source(env, "REVISOR_DATABASE_* variables")
    port = parts["port"]
    if port is not None and not port.isdigit():
        # Never the value: the port key may point at any value of the Secret.
        raise BadInput(
            f"{ENV_DATABASE_PARTS['port']} ({source}) is not a port number",
            hint="point the port key at a key that holds a number, or leave it out",
        )
    driver = parts["driver"] or "postgresql+psycopg"
    url = URL.create(
        driver,
        username=parts["user"],
        password=parts["password"],
        host=parts["host"],
        port=int(port) if port else None,
        database=parts["name"],
    )
    return _parse(url.render_as_string(hide_password=False), source, secret_parts=True)


def _parse(raw: str, source: str, *, secret_parts: bool) -> Database:
    try:
        url = make_url(raw.strip())
    except (sa.exc.ArgumentError, ValueError):
        # The text itself may be a password; never echo it.
        raise BadInput(
            f"{source} is not a database URL",
            hint="write it as dialect+driver://user:password@host:port/database, "
            "e.g. postgresql+psycopg://app@db:5432/app or sqlite:///app.db",
        ) from None
    register_secret(url.password if isinstance(url.password, str) else None)
    if secret_parts:
        for part in (url.username, url.host, url.database):
            register_secret(part)
    backend, plus, driver = url.drivername.partition("+")
    if backend == "postgres":
        # Heroku, Render, Supabase and libpq itself write postgres://.
        backend = "postgresql"
        url = url.set(drivername=f"{backend}{plus}{driver}")
    if "+" not in url.drivername and backend in _DEFAULT_DRIVERS:
        url = url.set(drivername=f"{backend}+{_DEFAULT_DRIVERS[backend]}")
    return Database(url=url, source=source, secret_parts=secret_parts)


def _engine_options(db: Database) -> dict[str, Any]:
    connect_args: dict[str, Any] = {}
    if db.backend == "postgresql" and db.driver in ("psycopg", "psycopg_async"):
        connect_args = libpq_options()
    elif db.driver == "asyncpg":
        # asyncpg is not libpq: no keepalive parameters. The server-side ones
        # go in the startup packet (and are SET again with the lock); the
        # client side is set on the socket (_client_keepalives).
        connect_args = {
            "timeout": CONNECT_TIMEOUT_SECONDS,
            "server_settings": {
                "application_name": APPLICATION_NAME,
                "tcp_keepalives_idle": str(KEEPALIVE_IDLE_SECONDS),
                "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL_SECONDS),
                "tcp_keepalives_count": str(KEEPALIVE_COUNT),
            },
        }
    elif db.backend in _MYSQL_BACKENDS and db.driver in ("pymysql", "aiomysql"):
        # Both take PyMySQL's parameters; program_name goes to the server as
        # a connect attribute (performance_schema.session_connect_attrs).
        # No keepalive parameters: those are set on the socket
        # (_client_keepalives), and the server has none per session.
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "program_name": "revisor"}
        if db.driver == "pymysql":
            connect_args["client_flag"] = _pymysql_client_flags(db.url)
    elif db.backend == "sqlite":
        connect_args = {"timeout": 30}
    return {"poolclass": NullPool, "connect_args": connect_args}


def _pymysql_client_flags(url: URL) -> int:
    """PyMySQL's ``client_flag``: several statements per execute(), as mysqlclient allows.

    Revisions written for mysqlclient (Airflow's driver, Alembic's usual MySQL
    one) and for aiomysql, which both allow it by default, send a procedure,
    its CALL and its DROP in one ``op.execute()``; PyMySQL sends them as one
    statement, a syntax error, unless asked. The flag replaces the one
    SQLAlchemy's dialect computes, so its FOUND_ROWS (rowcount of matched
    rows) and a ``client_flag`` in the URL are kept.
    """
    from pymysql.constants import CLIENT

    given = url.query.get("client_flag")
    flags = int(given) if isinstance(given, str) and given.isdigit() else 0
    return flags | int(CLIENT.FOUND_ROWS) | int(CLIENT.MULTI_STATEMENTS)


def _asyncpg_socket(dbapi_connection: Any) -> Any:
    """asyncpg exposes its transport only as ``_transport``."""
    transport = getattr(dbapi_connection.driver_connection, "_transport", None)
    return transport.get_extra_info("socket") if transport is not None else None


def _every_result_read(engine: Engine) -> None:
    """Read every result of a text of several statements as part of its execute().

    The server answers each statement in turn; the driver reads the first
    answer, and the rest only when the cursor is closed, where SQLAlchemy
    logs an error and goes on. A revision whose second statement failed would
    be recorded as applied. Reading them right after the execute makes such a
    failure the step's, as a single statement's is. Only for a first answer
    without rows (DDL): the rows of a SELECT are left for its caller.
    PyMySQL's cursor, and aiomysql's behind SQLAlchemy's adapter, say whether
    more answers follow only in a private attribute; without it, nothing is read.
    """

    @event.listens_for(engine, "after_cursor_execute")
    def _read_the_rest(
        _conn: Any, cursor: Any, _statement: str, _params: Any, _context: Any, _many: bool
    ) -> None:
        driver_cursor = getattr(cursor, "_cursor", cursor)
        while cursor.description is None and getattr(
            getattr(driver_cursor, "_result", None), "has_next", False
        ):
            cursor.nextset()


def _pymysql_socket(dbapi_connection: Any) -> Any:
    """PyMySQL keeps its socket as ``_sock``; aiomysql behind a stream ``_writer``."""
    raw = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    writer = getattr(raw, "_writer", None)
    if writer is not None:
        return writer.get_extra_info("socket")
    return getattr(raw, "_sock", None)


def _client_keepalives(engine: Engine, socket_of: Callable[[Any], Any]) -> None:
    """Client-side TCP keepalives on a driver's socket, as libpq sets them for psycopg.

    For drivers without keepalive parameters (asyncpg, PyMySQL, aiomysql),
    whose sockets are reachable only through private attributes: if those
    ever go, the socket is left as the driver made it. A runner then
    notices a vanished server in about a minute instead of two hours.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        sock = socket_of(dbapi_connection)
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (
            ("TCP_KEEPIDLE", KEEPALIVE_IDLE_SECONDS),
            ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_SECONDS),
            ("TCP_KEEPCNT", KEEPALIVE_COUNT),
        ):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def _sqlite_transactional_ddl(engine: Engine) -> None:
    """Make pysqlite emit BEGIN itself so DDL is transactional, as on PostgreSQL.

    The sqlite3 module only opens transactions before DML; without this a
    failed revision would leave half its DDL behind. This is SQLAlchemy's
    documented recipe ("Serializable isolation / Savepoints / Transactional
    DDL" in the pysqlite dialect docs).
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")


#: Why a run's engine refuses a second connection (:func:`_one_session`).
SESSION_LOST = (
    "not reconnecting: the connection that held the migration lock was lost, and the lock with it"
)


def _one_session(engine: Engine) -> None:
    """Let ``engine`` open one connection, ever: the run's lock lives on it.

    SQLAlchemy replaces a connection it found broken (the server restarted,
    the network cut it) with a new one at its next use. A run would then go
    on, roll back or write history on a session that does not hold the
    advisory lock, which went with the old one: by then another runner may
    hold it. So a second connect fails as an unreachable server does, and the
    run stops; the next runner, under the lock, marks its run interrupted.
    """
    opened = False

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: sa.Dialect, _record: Any, _cargs: Any, _cparams: Any) -> None:
        nonlocal opened
        if opened:
            raise dialect.loaded_dbapi.OperationalError(SESSION_LOST)
        opened = True


def _search_path(engine: Engine, schema: str) -> None:
    """Every session of ``engine`` works in ``schema``: its search_path is that schema alone.

    SQLAlchemy's recipe ("Setting Alternate Search Paths on Connect"): set
    on connect, first of the connect handlers (so the dialect, initialised
    next, reads the tenant as the default schema, as reflection needs), and
    in autocommit, so no rollback undoes it. The name is quoted: ``Tenant-B``
    is one schema. The schema alone, as in Alembic's recipe: a revision's
    unqualified ``DROP TABLE t`` then never reaches ``public.t``.
    """
    quoted = _quoted(schema)

    @event.listens_for(engine, "connect", insert=True)
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"SET SESSION search_path TO {quoted}")
        finally:
            cursor.close()
            dbapi_connection.autocommit = autocommit


def _quoted(name: str) -> str:
    """``name`` as a PostgreSQL quoted identifier, as it is sent to the driver unparsed.

    Not SQLAlchemy's identifier preparer: for drivers that take ``%s``
    parameters it doubles ``%`` too, which a statement sent without
    parameters would keep.
    """
    return '"' + name.replace('"', '""') + '"'


def _check_schema(db: Database, conn: Connection) -> None:
    """Refuse a ``--schema`` the session cannot work in, before anything runs.

    PostgreSQL skips a search_path entry that does not exist or that the
    user may not use, and truncates a name longer than 63 bytes: the default
    schema SQLAlchemy read on connect is then not the one asked for.
    """
    schema = db.schema
    if schema is None or conn.dialect.default_schema_name == schema:
        return
    exists = conn.execute(
        sa.text("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = :s)"), {"s": schema}
    ).scalar()
    conn.rollback()
    if exists:
        raise BadInput(
            f"schema {schema!r}: the database user may not use it (no USAGE privilege)",
            hint=f"GRANT USAGE, CREATE ON SCHEMA {_quoted(schema)} TO the migrating user",
        )
    raise BadInput(
        f"schema {schema!r} does not exist; nothing was run",
        hint="create it first (CREATE SCHEMA): Revisor migrates a tenant's schema, it does "
        "not create it",
    )


def _confined(db: Database, work: Callable[[Connection], T]) -> Callable[[Connection], T]:
    """``work``, once the connection is known to be in ``db``'s schema."""

    def checked(conn: Connection) -> T:
        _check_schema(db, conn)
        return work(conn)

    return checked


def run_with_connection(db: Database, work: Callable[[Connection], T]) -> T:
    """Open one connection, call ``work`` with it, close it; async URLs included.

    One connection for the whole call: once it is lost, it is not replaced
    (:func:`_one_session`). With :attr:`Database.schema`, the session works
    in that schema (:func:`_search_path`), which must exist (:func:`_check_schema`).
    """
    if db.is_async:
        import asyncio

        return asyncio.run(_run_async(db, work))
    try:
        engine = sa.create_engine(db.url, **_engine_options(db))
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise _unsupported(db, exc) from None
    if db.backend == "sqlite":
        _sqlite_transactional_ddl(engine)
    if db.backend in _MYSQL_BACKENDS:
        _client_keepalives(engine, _pymysql_socket)
        _every_result_read(engine)
    if db.schema is not None:
        _search_path(engine, db.schema)
    _one_session(engine)
    try:
        conn = _connect(db, engine.connect)
        with conn:
            return _confined(db, work)(conn)
    finally:
        engine.dispose()


async def _run_async(db: Database, work: Callable[[Connection], T]) -> T:
    from sqlalchemy.ext.asyncio import create_async_engine

    try:
        engine = create_async_engine(db.url, **_engine_options(db))
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise _unsupported(db, exc) from None
    if db.backend == "sqlite":
        _sqlite_transactional_ddl(engine.sync_engine)
    if db.driver == "asyncpg":
        _client_keepalives(engine.sync_engine, _asyncpg_socket)
    if db.backend in _MYSQL_BACKENDS:
        _client_keepalives(engine.sync_engine, _pymysql_socket)
        _every_result_read(engine.sync_engine)
    if db.schema is not None:
        _search_path(engine.sync_engine, db.schema)
    _one_session(engine.sync_engine)
    try:
        aconn = engine.connect()
        try:
            await aconn.start()
        except (sa.exc.DBAPIError, OSError) as exc:
            raise _unreachable(db, exc) from None
        try:
            return await aconn.run_sync(_confined(db, work))
        finally:
            await aconn.close()
    finally:
        await engine.dispose()


def committer(conn: Connection) -> Callable[[str, Mapping[str, Any]], None] | None:
    """A function that runs one statement and then COMMIT in one round trip, or None.

    psycopg's pipeline mode queues both (the statement bound on the server,
    as any other) and waits once, at the end; the server is then idle, so
    the ``commit()`` SQLAlchemy issues next sends nothing (psycopg skips
    COMMIT outside a transaction). History uses it for a step's row: a
    round trip is the largest part of what that row costs (measured by
    ``bench/history_row.py``). ``conn.commit()`` inside a pipeline would not
    do: it waits for its own result, and leaving the pipeline waits again.
    Other drivers (sqlite3, asyncpg, psycopg async behind SQLAlchemy's
    adapter), and a libpq without pipeline mode, get None.
    """
    raw: object = conn.connection.dbapi_connection
    # Checked by module first: importing psycopg for a SQLite run costs time.
    if type(raw).__module__.partition(".")[0] != "psycopg":
        return None
    import psycopg

    if not isinstance(raw, psycopg.Connection) or not psycopg.Pipeline.is_supported():
        return None
    error = conn.dialect.loaded_dbapi.Error
    psycopg_conn = raw
    first, commit = psycopg_conn.cursor(), psycopg_conn.cursor()

    def run_and_commit(statement: str, params: Mapping[str, Any]) -> None:
        before = first.pgresult
        try:
            with psycopg_conn.pipeline():
                first.execute(statement, params)
                commit.execute("COMMIT")
        except error as exc:
            # A new result on the first cursor: the statement went through and
            # the COMMIT failed (a deferred constraint, say).
            done = first.pgresult is not None and first.pgresult is not before
            failed = "COMMIT" if done else statement
            # As SQLAlchemy would raise it and treat the connection: callers tell
            # failures apart by sa.exc.DBAPIError (and .orig), and a lost server
            # must invalidate the connection, or the rollback that follows
            # replaces the driver's reason with "the connection is lost".
            lost = conn.dialect.is_disconnect(exc, conn.connection, None)
            if lost:
                conn.invalidate(exc)
            raise sa.exc.DBAPIError.instance(
                failed, params if failed is statement else None, exc, error,
                connection_invalidated=lost,
            ) from exc  # fmt: skip

    return run_and_commit


def _connect(db: Database, connect: Callable[[], Connection]) -> Connection:
    try:
        return connect()
    except (sa.exc.DBAPIError, OSError) as exc:
        raise _unreachable(db, exc) from None


def _unreachable(db: Database, exc: BaseException) -> DatabaseUnreachable:
    orig = getattr(exc, "orig", None) or exc
    detail = " ".join(str(orig).split())
    return DatabaseUnreachable(
        scrub(f"cannot connect to {db.display}: {detail}"),
        hint="check the host, port, database name and credentials, and that the "
        "database accepts connections from here",
    )


def _unsupported(db: Database, exc: BaseException) -> BadInput:
    return BadInput(
        scrub(f"{db.source}: cannot use driver {db.url.drivername!r}: {exc}"),
        hint="use postgresql+psycopg://, postgresql+asyncpg://, mysql+pymysql://, "
        "mariadb+pymysql://, mysql+aiomysql://, sqlite:/// or sqlite+aiosqlite:///, "
        "or install the driver",
    )
