"""Alembic's migration environment, with the options Revisor owns pinned.

Both ways of running are here: hermetic (Revisor configures Alembic itself on
its locked connection) and ``--env-py`` (the project's env.py runs and calls
``context.configure()`` itself). :class:`RevisorEnvironment` merges
Revisor's options in after env.py's, so the lock, the transaction mode and
the progress callbacks hold whichever way the run goes (FIELD-NOTES: env.py
overwrites options passed to it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.util import to_tuple
from sqlalchemy.engine import Connection

from revisor.connection import Database
from revisor.dialects import support_for
from revisor.errors import BadInput
from revisor.redaction import scrub
from revisor.scripts import Scripts, script_errors

DEFAULT_VERSION_TABLE = "alembic_version"


@dataclass(frozen=True)
class Session:
    """Which database and version table, and how to hold the connection."""

    db: Database
    scripts: Scripts
    version_table: str = DEFAULT_VERSION_TABLE
    version_table_schema: str | None = None
    version_table_explicit: bool = False
    env_py: bool = False
    lock_timeout: float | None = 60.0
    statement_timeout: float | None = None
    ddl_lock_timeout: float | None = None
    runner: str | None = None


def run_environment(
    session: Session,
    conn: Connection,
    *,
    fn: Callable[[Sequence[str], MigrationContext], Iterator[Any]],
    per_migration: bool,
    on_version_apply: Callable[..., None] | None = None,
    keep_transaction: bool = False,
) -> None:
    """Run Alembic's migration loop with our ``fn``, hermetic or through env.py."""
    if conn.in_transaction() and not keep_transaction:
        # Alembic must own the transactions: see the module docstring.
        conn.commit()
    scripts = session.scripts
    enforced: dict[str, Any] = {
        "transaction_per_migration": per_migration,
        "version_table": session.version_table,
        "version_table_schema": session.version_table_schema,
        # Alembic assumes SQLite DDL is not transactional; our connection
        # makes it so (revisor.connection), and all-or-nothing relies on it.
        "transactional_ddl": support_for(session.db).transactional_ddl,
    }
    callbacks = (on_version_apply,) if on_version_apply else ()
    env = RevisorEnvironment(
        scripts.config,
        scripts.directory,
        fn=fn,
        revisor_session=session,
        revisor_conn=conn,
        enforced=enforced,
        callbacks=callbacks,
    )
    with env:
        if session.env_py:
            scripts.config.attributes["connection"] = conn
            try:
                with script_errors(scripts.dirs):
                    scripts.directory.run_env()
            finally:
                scripts.config.attributes.pop("connection", None)
        else:
            env.configure(connection=conn)
            with env.begin_transaction():
                env.run_migrations()


class RevisorEnvironment(EnvironmentContext):
    """Alembic's environment with the options Revisor owns pinned.

    A project's env.py calls ``context.configure()`` itself and would
    overwrite our callbacks and transaction mode (FIELD-NOTES). Here those
    options are merged in after env.py's, and a connection env.py opened on
    its own to the same database is swapped for the locked one, so the lock
    covers every statement.
    """

    def __init__(
        self,
        *args: Any,
        revisor_session: Session,
        revisor_conn: Connection,
        enforced: dict[str, Any],
        callbacks: Sequence[Callable[..., None]],
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self._revisor_session = revisor_session
        self._revisor_conn = revisor_conn
        self._enforced = enforced
        self._callbacks = tuple(callbacks)

    def configure(self, connection: Connection | None = None, **kw: Any) -> None:  # type: ignore[override]
        session = self._revisor_session
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
                        f"but Revisor was given {session.db.display}"
                    ),
                    hint="pass the same URL, or make env.py use config.attributes['connection']",
                )
            connection = self._revisor_conn
        for name in ("version_table", "version_table_schema"):
            theirs = kw.get(name)
            if (
                theirs is not None
                and theirs != self._enforced[name]
                and not session.version_table_explicit
            ):
                flag = "--" + name.replace("_", "-")
                raise BadInput(
                    f"env.py configures {name}={theirs!r} but Revisor uses "
                    f"{self._enforced[name]!r}",
                    hint=f"pass {flag} {theirs} so the lock and history use the same table",
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
