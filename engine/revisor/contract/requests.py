"""What the operator asks of the engine: one invocation, as data.

The operator builds a Job's command line with :meth:`RunRequest.to_argv`
and the engine's CLI parses exactly those options, so a Job can only hold
options the engine knows. Credentials are never options: they arrive in the
environment variables named here, from ``secretKeyRef``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

#: Environment variables the engine reads. The operator wires the URL from a
#: Secret with ``secretKeyRef``: it is never copied into the Job's spec.
ENV_DATABASE_URL = "REVISOR_DATABASE_URL"
#: Where the database's URL or parts come from, in words for messages
#: ("Secret shop/shop-db, key url"): an unreachable database is named by it,
#: never by values that came from the Secret.
ENV_DATABASE_SOURCE = "REVISOR_DATABASE_SOURCE"
#: Who runs the migration, recorded in ``revisor_history`` (the pod's name).
ENV_RUNNER = "REVISOR_RUNNER"
#: Host/port/name/user/password parts, for Secrets that hold parts, not a URL.
ENV_DATABASE_PARTS = {
    "driver": "REVISOR_DATABASE_DRIVER",
    "host": "REVISOR_DATABASE_HOST",
    "port": "REVISOR_DATABASE_PORT",
    "name": "REVISOR_DATABASE_NAME",
    "user": "REVISOR_DATABASE_USER",
    "password": "REVISOR_DATABASE_PASSWORD",
}

#: Alembic's own default name for the version table.
DEFAULT_VERSION_TABLE = "alembic_version"

Command = Literal[
    "plan",
    "apply",
    "upgrade",
    "downgrade",
    "stamp",
    "verify",
    "current",
    "drift",
    "wait-for",
    "schemas",
]
OnFailure = Literal["stop", "rollback"]


@dataclass(frozen=True)
class VersionTable:
    """Where Alembic keeps the revision a database is at; ``revisor_history`` sits beside it.

    ``name`` None means Alembic's default (:data:`DEFAULT_VERSION_TABLE`) and
    says that nobody chose one: a project's env.py may then name its own.
    """

    name: str | None = None
    schema: str | None = None

    @property
    def table(self) -> str:
        return self.name or DEFAULT_VERSION_TABLE

    @property
    def chosen(self) -> bool:
        """Whether the name was given (flag or spec) rather than defaulted."""
        return self.name is not None


@dataclass(frozen=True)
class RunRequest:
    """The engine invocation a Job runs, as data; :meth:`to_argv` is its command line.

    The database URL is *not* a field: it reaches the engine through
    :data:`ENV_DATABASE_URL` (from a ``secretKeyRef``) or
    ``database_url_file`` (a mounted Secret), never through arguments that
    ``kubectl describe`` would show.

    ``target`` is the positional target of ``plan``/``apply``/``upgrade``/
    ``downgrade``/``stamp``, and ``--revision`` for ``wait-for`` (an app's
    init container, not a Job: None waits for the scripts' heads).

    ``schema`` confines every command to one PostgreSQL schema (a tenant's):
    its search_path, version table and history, and its own lock.
    ``schemas`` lists tenants: ``schemas_query`` is the read-only query,
    ``schemas_after`` the last name of the page before.
    """

    command: Command
    target: str | None = None
    scripts: str | None = None
    config: str | None = None
    #: Run the scripts' own env.py with the engine's connection (``--env-py``).
    env_py: bool = False
    #: ``MODULE:ATTR`` of the project's MetaData, for hermetic runs (``--metadata``).
    metadata: str | None = None
    database_url_file: str | None = None
    version_table: VersionTable = VersionTable()
    #: The PostgreSQL schema the command works in (``--schema``).
    schema: str | None = None
    lock_timeout: float | None = None
    statement_timeout: float | None = None
    ddl_lock_timeout: float | None = None
    ddl_lock_retries: int = 0
    on_failure: OnFailure | None = None
    dry_run: bool = False
    single_transaction: bool = False
    #: Refuse to run unless the plan computed at run time has this hash (approval).
    expect_plan_hash: str | None = None
    #: Refuse an upgrade any of whose revisions could not be downgraded again.
    require_reversible: bool = False
    #: ``plan``/``apply``/``upgrade``: a database without a version table is
    #: stamped at this revision first (``--baseline``; ignored once it has one).
    baseline: str | None = None
    #: ``drift``: fnmatch patterns of tables, ``table.column`` and index or
    #: constraint names left out of the comparison (``--ignore``, repeated).
    drift_ignore: Sequence[str] = ()
    #: ``drift``: the live schema's hash a person accepted (``--accept``).
    drift_accept: str | None = None
    #: ``drift``: record the live schema for the current revision (``--record``).
    drift_record: bool = False
    #: ``wait-for``: give up after this many seconds (``--timeout``).
    wait_timeout: float | None = None
    #: ``schemas``: the query whose first column names the schemas (``--query``).
    schemas_query: str | None = None
    #: ``schemas``: list the names after this one (``--after``; None: from the first).
    schemas_after: str | None = None
    result_file: str | None = None
    output: Literal["text", "json"] | None = None
    log_format: Literal["console", "json"] | None = None
    extra: Sequence[str] = ()

    def to_argv(self, program: str = "revisor") -> list[str]:
        argv = [program]
        globals_: list[tuple[str, object]] = [
            ("--config", self.config),
            ("--scripts", self.scripts),
            ("--database-url-file", self.database_url_file),
            ("--version-table", self.version_table.name),
            ("--version-table-schema", self.version_table.schema),
            ("--metadata", self.metadata),
            ("--output", self.output),
            ("--log-format", self.log_format),
            ("--result-file", self.result_file),
        ]
        argv += _options(globals_)
        if self.schema is not None:
            # "--schema=NAME": a quoted PostgreSQL name may start with "-".
            argv.append(f"--schema={self.schema}")
        if self.env_py:
            argv.append("--env-py")
        argv.append(self.command)
        argv += self._command_options()
        argv += list(self.extra)
        if self.target is not None and self.command != "wait-for":
            # "--" keeps relative targets such as "-1" from reading as options.
            argv += ["--", self.target]
        return argv

    def _command_options(self) -> list[str]:
        """The options of :attr:`command` that follow its name."""
        argv: list[str] = []
        run_options: list[tuple[str, object]] = [
            ("--lock-timeout", self.lock_timeout),
            ("--statement-timeout", self.statement_timeout),
            ("--ddl-lock-timeout", self.ddl_lock_timeout),
            ("--ddl-lock-retries", self.ddl_lock_retries or None),
            ("--on-failure", self.on_failure),
            ("--expect-plan-hash", self.expect_plan_hash),
        ]
        if self.command in ("apply", "upgrade", "downgrade"):
            argv += _options(run_options)
            flags = (
                ("--dry-run", self.dry_run),
                ("--single-transaction", self.single_transaction),
                ("--require-reversible", self.require_reversible),
            )
            argv += [flag for flag, given in flags if given]
        elif self.command == "stamp":
            argv += _options(run_options[:1])
        elif self.command == "drift":
            argv += _options(run_options[:1])
            # "--ignore=PATTERN": a pattern may start with "-".
            argv += [f"--ignore={pattern}" for pattern in self.drift_ignore]
            argv += _options([("--accept", self.drift_accept)])
            if self.drift_record:
                argv.append("--record")
        elif self.command == "schemas":
            # "--query=SQL": a query may start with "-" (a "--" comment), and so may a name.
            argv += [f"--query={self.schemas_query}"] if self.schemas_query is not None else []
            argv += [f"--after={self.schemas_after}"] if self.schemas_after is not None else []
            argv += _options(run_options[1:2])
        elif self.command == "wait-for":
            argv += _options([("--timeout", self.wait_timeout)])
            if self.target is not None:
                argv.append(f"--revision={self.target}")
        if self.command in ("plan", "apply", "upgrade"):
            argv += _options([("--baseline", self.baseline)])
        return argv


def _options(pairs: Sequence[tuple[str, object]]) -> list[str]:
    out: list[str] = []
    for flag, value in pairs:
        if value is None:
            continue
        out += [flag, _format_number(value) if isinstance(value, float) else str(value)]
    return out


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
