"""Alembic's migration environment, with the options Revisor owns pinned.

Both ways of running are here: hermetic (Revisor configures Alembic itself on
its locked connection) and ``--env-py`` (the project's env.py runs and calls
``context.configure()`` itself). A project's env.py overwrites the options
passed to it, so :class:`RevisorEnvironment` merges Revisor's options in
after env.py's: the lock, the transaction mode and the progress callbacks
hold whichever way the run goes.

env.py is the project's code, so its mistakes are bad input (exit 2) until
it reaches ``run_migrations()``; from there an exception is a revision's
failure (exit 4), reported like any other step. Alembic's stock async
env.py (``alembic init -t async``) calls ``asyncio.run()`` and opens its own
connection; inside Revisor's event loop that cannot work, and the locked
connection is the only one a migration may use, so it is refused with the
change to make (the cookbook's "connection sharing with asyncio"); so is an
env.py written to be called from its application's async code (Prefect's,
from an AnyIO worker thread), with the two ways forward. While env.py runs,
the config's ``sqlalchemy.url`` is Revisor's own URL, so an env.py that
connects by itself reaches the same database, never the ini's.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.util import to_tuple
from sqlalchemy.engine import Connection

from revisor.connection import Database
from revisor.contract import Reason
from revisor.dialects import support_for
from revisor.errors import BadInput, RevisorError
from revisor.project import Project
from revisor.redaction import scrub
from revisor.scripts import compiled_version_writes, script_errors


def run_environment(
    project: Project,
    conn: Connection,
    *,
    fn: Callable[[Sequence[str], MigrationContext], Iterator[Any]],
    per_migration: bool,
    on_version_apply: Callable[..., None] | None = None,
    keep_transaction: bool = False,
) -> None:
    """Run Alembic's migration loop with our ``fn``, hermetic or through env.py.

    ``keep_transaction`` leaves the transaction open on ``conn`` for Alembic
    to run inside (a dry run's outer transaction); otherwise Alembic owns
    the transactions (:meth:`RevisorEnvironment.configure`).
    """
    if conn.in_transaction() and not keep_transaction:
        # Alembic must own the transactions: handed a connection that is in
        # a transaction, Alembic takes it for the caller's, runs every
        # revision inside it, and nothing commits until it ends.
        conn.commit()
    scripts = project.scripts
    enforced: dict[str, Any] = {
        "transaction_per_migration": per_migration,
        "version_table": project.version_table.table,
        "version_table_schema": project.version_table.schema,
        # Alembic assumes SQLite DDL is not transactional; our connection
        # makes it so (revisor.connection), and all-or-nothing relies on it.
        "transactional_ddl": support_for(project.db).transactional_ddl,
    }
    callbacks = (on_version_apply,) if on_version_apply else ()
    env = RevisorEnvironment(
        scripts.config,
        scripts.directory,
        fn=fn,
        revisor_project=project,
        revisor_conn=conn,
        enforced=enforced,
        callbacks=callbacks,
        keep_transaction=keep_transaction,
    )
    with env, compiled_version_writes():
        if project.env_py:
            scripts.config.attributes["connection"] = conn
            try:
                with _revisors_url(scripts.config, project.db):
                    _run_env_py(project, env)
            finally:
                scripts.config.attributes.pop("connection", None)
        else:
            env.configure(connection=conn, target_metadata=project.target_metadata)
            with env.begin_transaction():
                env.run_migrations()


@contextmanager
def _revisors_url(config: Config, db: Database) -> Iterator[None]:
    """The config's ``sqlalchemy.url`` is Revisor's own URL while env.py runs.

    An env.py that connects by itself (``engine_from_config``, or
    ``get_main_option("sqlalchemy.url")``) then connects where Revisor does,
    whatever the ini says (Optuna's says ``sqlite:///alembic.db``), and its
    connection is swapped for the locked one (:meth:`RevisorEnvironment.configure`);
    it never opens a stray database file or another server's. The password is
    in the value, as in any ini that holds a URL: Alembic does not print it,
    and what env.py prints is scrubbed (:func:`revisor.output.revision_output`).
    configparser reads ``%`` as interpolation, so it is written ``%%``. The
    ini's own value is put back afterwards.
    """
    parser, section, option = config.file_config, config.config_ini_section, "sqlalchemy.url"
    before = parser.get(section, option, raw=True, fallback=None)
    config.set_main_option(option, db.url.render_as_string(hide_password=False).replace("%", "%%"))
    try:
        yield
    finally:
        if before is None:
            parser.remove_option(section, option)
        else:
            parser.set(section, option, before)


def _run_env_py(project: Project, env: RevisorEnvironment) -> None:
    """Run the project's env.py; its own errors become :class:`BadInput`."""
    scripts = project.scripts
    try:
        scripts.directory.run_env()
    except RevisorError:
        raise
    except Exception as exc:
        if env.migrations_started:
            raise  # a revision failed: the runtime reports the step
        if project.db.is_async and _is_nested_event_loop(exc):
            _close_unstarted_coroutines(exc)
            raise BadInput(
                f"env.py starts its own event loop ({exc}) and would open its own "
                "connection, but migrations must run on Revisor's locked connection, "
                "which lives in Revisor's event loop; nothing was run",
                hint="in run_migrations_online(), use the connection Revisor hands over: "
                "connection = config.attributes.get('connection'); if it is None, "
                "asyncio.run(run_async_migrations()), else do_run_migrations(connection) "
                "(Alembic cookbook: connection sharing with asyncio)",
                reason=Reason.INVALID_SCRIPTS,
            ) from None
        if _needs_an_event_loop(exc):
            _close_unstarted_coroutines(exc)
            where = _line_in_env_py(exc, scripts.env_py)
            raise BadInput(
                f"{where}env.py reaches for an event loop it was written to be called from "
                f"({type(exc).__name__}: {exc}): its project runs it from its own async code "
                "(an AnyIO worker thread, say), where it opens its own connection; Revisor runs "
                "env.py itself, synchronously, and migrations must run on the connection it "
                "hands over, which holds the lock; nothing was run",
                hint="run without --env-py: --metadata MOD:ATTR names the MetaData env.py gives "
                "Alembic (its naming convention), and --version-locations the directories it "
                "sets; or make env.py call its do_run_migrations(connection) with "
                "config.attributes['connection'] when that is set, before it looks for an "
                "event loop (Alembic cookbook: connection sharing)",
                reason=Reason.INVALID_SCRIPTS,
            ) from None
        with script_errors(scripts.dirs, what="env.py"):
            raise


def _is_nested_event_loop(exc: BaseException) -> bool:
    """asyncio's refusals to start a loop inside a running one."""
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "running event loop" in text  # asyncio.run()
        or "is already running" in text  # loop.run_until_complete()
        or "another loop is running" in text  # a second loop in this thread
    )


def _needs_an_event_loop(exc: BaseException) -> bool:
    """An env.py that expects to be called from async code found none.

    AnyIO's ``from_thread.run`` outside a worker thread (Prefect's env.py
    runs its migrations through it), sniffio finding no async library,
    asyncio's "no running event loop".
    """
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"NoEventLoopError", "AsyncLibraryNotFoundError"}:
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "no running event loop" in text or "no current event loop" in text
    )


def _line_in_env_py(exc: BaseException, env_py: Path) -> str:
    """``path:line: `` of the innermost frame of ``exc`` in env.py, or nothing."""
    target = env_py.resolve()
    found = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == target:
            found = f"{frame.filename}:{frame.lineno}: "
    return found


def _close_unstarted_coroutines(exc: BaseException) -> None:
    """Close the coroutine env.py handed to ``asyncio.run``: it never ran.

    Left alone, Python warns "coroutine ... was never awaited" when it is
    collected, noise after the one message that matters.
    """
    for frame, _line in traceback.walk_tb(exc.__traceback__):
        for value in frame.f_locals.values():
            if (
                inspect.iscoroutine(value)
                and inspect.getcoroutinestate(value) == inspect.CORO_CREATED
            ):
                value.close()


class RevisorEnvironment(EnvironmentContext):
    """Alembic's environment with the options Revisor owns pinned.

    A project's env.py calls ``context.configure()`` itself and would
    overwrite our callbacks and transaction mode. Here those options are
    merged in after env.py's, and a connection env.py opened on its own to
    the same database is swapped for the locked one, so the lock covers
    every statement.
    """

    def __init__(
        self,
        *args: Any,
        revisor_project: Project,
        revisor_conn: Connection,
        enforced: dict[str, Any],
        callbacks: Sequence[Callable[..., None]],
        keep_transaction: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self._revisor_project = revisor_project
        self._revisor_conn = revisor_conn
        self._enforced = enforced
        self._callbacks = tuple(callbacks)
        self._keep_transaction = keep_transaction
        #: env.py has handed over to Alembic's migration loop.
        self.migrations_started = False

    def run_migrations(self, **kw: Any) -> None:
        self.migrations_started = True
        super().run_migrations(**kw)

    def configure(self, connection: Connection | None = None, **kw: Any) -> None:  # type: ignore[override]
        project = self._revisor_project
        if connection is None:
            raise BadInput(
                "env.py configured Alembic without a connection (offline mode)",
                hint="make env.py use config.attributes['connection'] when it is set",
            )
        if connection is not self._revisor_conn:
            if not _same_database(connection, self._revisor_conn):
                raise BadInput(
                    scrub(
                        f"env.py connected to {connection.engine.url.render_as_string()} "
                        f"but Revisor was given {project.db.display}"
                    ),
                    hint="pass the same URL, or make env.py use config.attributes['connection']",
                )
            connection = self._revisor_conn
        for name in ("version_table", "version_table_schema"):
            theirs = kw.get(name)
            if (
                theirs is not None
                and theirs != self._enforced[name]
                and not project.version_table.chosen
            ):
                flag = "--" + name.replace("_", "-")
                raise BadInput(
                    f"env.py configures {name}={theirs!r} but Revisor uses "
                    f"{self._enforced[name]!r}",
                    hint=f"pass {flag} {theirs} so the lock and history use the same table",
                )
        if connection.in_transaction() and not self._keep_transaction:
            # SQL that env.py ran before configure() left a transaction open,
            # and Alembic would
            # take it for the caller's: no revision committed on its own, and
            # a failure at revision 3 rolling back 1 and 2, reported as
            # applied. Committing it here would drop what it holds (SET
            # LOCAL, an xact lock) and close a ``with connection.begin()``
            # under env.py's feet, so env.py is told to end it itself.
            raise BadInput(
                "env.py ran SQL on the connection before context.configure() and left "
                "its transaction open; Alembic would run every revision inside it, so "
                "none would commit on its own and a failure would undo revisions "
                "reported as applied; nothing was run",
                hint="end it before configure(): connection.commit() after the setup SQL "
                "(as in Alembic's multi-tenancy recipe; SET, not SET LOCAL, outlasts it), "
                "and no 'with connection.begin():' around configure()",
                reason=Reason.INVALID_SCRIPTS,
            )
        kw.update(self._enforced)
        kw["on_version_apply"] = (
            *to_tuple(kw.get("on_version_apply"), default=()),
            *self._callbacks,
        )
        super().configure(connection=connection, **kw)


# alembic.context is proxied per class (ModuleClsProxy._setups): let env.py's
# ``context.configure`` reach this subclass exactly as it reaches Alembic's.
RevisorEnvironment._setups[RevisorEnvironment] = EnvironmentContext._setups[EnvironmentContext]


def _same_database(a: Connection, b: Connection) -> bool:
    ua, ub = a.engine.url, b.engine.url
    return (ua.get_backend_name(), ua.host, ua.port, ua.database) == (
        ub.get_backend_name(),
        ub.host,
        ub.port,
        ub.database,
    )
