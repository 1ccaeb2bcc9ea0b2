"""The ``revisor`` command line: parse, call :mod:`revisor.commands`, report, exit.

This is the one place errors are caught: a :class:`~revisor.errors.RevisorError`
becomes one clear message on stderr, the result document, and the exit code
of the Job contract. Global options may be given before or after the command.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from revisor import __version__, contract, stopping
from revisor.contract import ENV_RUNNER, ExitCode, VersionTable, parse_duration
from revisor.errors import BadInput, DatabaseUnreachable, RevisorError
from revisor.options import RunOptions
from revisor.outcome import Outcome, run_text
from revisor.output import Reporter, check_result_file, configure_logging, write_result
from revisor.redaction import scrub
from revisor.script_location import ScriptLocation

if TYPE_CHECKING:
    # Imported where a command runs (dispatch, main): SQLAlchemy and Alembic are
    # most of a start-up, and --help or a usage error needs neither.
    from revisor import at_target
    from revisor.project import Project

COMMANDS_WITH_TARGET = {
    "plan": ("head", "where to go (Alembic syntax: head, heads, base, id, +N, -N, branch@head)"),
    "apply": ("head", "where to go, upgrading or downgrading as needed"),
    "upgrade": ("head", "upgrade target (default head)"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits with the contract's BAD_INPUT code (2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(int(ExitCode.BAD_INPUT), f"revisor: error: {message}\nhint: revisor --help\n")


def _seconds(text: str) -> float:
    """``30``, ``30s``, ``5m``, ``1h`` or ``500ms`` → seconds."""
    try:
        return parse_duration(text, bare_seconds=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


#: The dialects SQLAlchemy ships, for ``revisor sql --dialect``.
SQL_DIALECTS = ("postgresql", "mysql", "mariadb", "sqlite", "mssql", "oracle")


def _dialect(text: str) -> str:
    name = "postgresql" if text == "postgres" else text
    if name not in SQL_DIALECTS:
        raise argparse.ArgumentTypeError(
            f"unknown dialect {text!r}: use one of {', '.join(SQL_DIALECTS)}"
        )
    return name


def _count(text: str) -> int:
    """A whole number, zero or more."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (0, 1, 2, ...)")
    return int(text)


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    g = parser.add_argument_group("where and how")
    g.add_argument(
        "-c",
        "--config",
        metavar="INI",
        default=default(None),
        help="an alembic.ini (script_location, version_locations, sqlalchemy.url); default "
        "$ALEMBIC_CONFIG, else ./alembic.ini when --scripts is not given",
    )
    g.add_argument(
        "--name", default=default("alembic"), help="section of the ini file (default alembic)"
    )
    g.add_argument(
        "--scripts",
        metavar="DIR",
        default=default(None),
        help="the Alembic script directory, or a flat directory of revision files",
    )
    g.add_argument(
        "--version-locations",
        metavar="DIRS",
        action="append",
        default=default(None),
        help="extra version directories (repeat, or separate with commas)",
    )
    g.add_argument(
        "--database-url",
        metavar="URL",
        default=default(None),
        help=f"database URL (or {contract.ENV_DATABASE_URL})",
    )
    g.add_argument(
        "--database-url-file",
        metavar="PATH",
        default=default(None),
        help="read the URL from a file, e.g. a mounted Secret",
    )
    g.add_argument(
        "--version-table",
        default=default(None),
        help="version table name (default alembic_version)",
    )
    g.add_argument(
        "--version-table-schema",
        default=default(None),
        help="schema of the version table and of revisor_history (default: the "
        "connection's default schema)",
    )
    g.add_argument(
        "--schema",
        metavar="NAME",
        default=default(None),
        help="PostgreSQL only: work in this schema (a tenant's): the connection's search_path "
        "is NAME alone, so unqualified tables land there; the version table, revisor_history "
        "and the lock are NAME's own, so tenants of one database migrate side by side (the "
        "schema must exist; default: none, the connection's default schema)",
    )
    g.add_argument(
        "--env-py",
        action="store_true",
        default=default(False),
        help="run the project's env.py with Revisor's connection (default: hermetic, "
        "Revisor configures Alembic itself)",
    )
    g.add_argument(
        "--metadata",
        metavar="MOD:ATTR",
        default=default(None),
        help="the project's SQLAlchemy MetaData (e.g. app.models:Base.metadata): its naming "
        "convention names constraints in hermetic runs and sql, as env.py's target_metadata "
        "would; check compares the schema with it",
    )
    g.add_argument(
        "--output",
        choices=("text", "json"),
        default=default("text"),
        help="stdout: text, or the result document (default text)",
    )
    g.add_argument(
        "--log-format",
        choices=("console", "json"),
        default=default("console"),
        help="stderr: human lines or JSON lines (default console)",
    )
    g.add_argument(
        "--result-file",
        metavar="PATH",
        default=default(None),
        help="also write the result document here, e.g. /dev/termination-log (default: none)",
    )


def _run_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("running")
    g.add_argument(
        "--lock-timeout",
        type=_seconds,
        default=60.0,
        help="wait at most this long for the migration lock (default 60s; 0 = try once)",
    )
    g.add_argument(
        "--statement-timeout",
        type=_seconds,
        default=None,
        help="abort any statement running longer (PostgreSQL statement_timeout, MariaDB "
        "max_statement_time; MySQL max_execution_time, which bounds SELECT only; default: "
        "no limit)",
    )
    g.add_argument(
        "--ddl-lock-timeout",
        type=_seconds,
        default=None,
        help="abort DDL waiting longer for a table lock (PostgreSQL lock_timeout; MySQL/MariaDB "
        "lock_wait_timeout and innodb_lock_wait_timeout, in whole seconds, at least 1; "
        "default: no limit)",
    )
    g.add_argument(
        "--ddl-lock-retries",
        type=_count,
        default=0,
        metavar="N",
        help="re-run a revision whose DDL hit --ddl-lock-timeout up to N times, waiting "
        "longer each time (default 0; never a revision with an autocommit block, nor one "
        "that had committed statements on MySQL/MariaDB)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="revisor",
        description="Alembic migrations, locked, recorded and reversible.",
        epilog="exit codes: 0 ok, 2 bad input, 3 lock timeout, 4 migration failed, "
        "5 rollback failed, 6 database unreachable, 7 verify/check mismatch or schema drift, "
        "8 partially applied (MySQL/MariaDB: a failed revision's DDL had committed; finish or "
        "undo it by hand, then revisor stamp), 9 wait-for timed out",
    )
    parser.add_argument("--version", action="version", version=f"revisor {__version__}")
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        _global_options(p, suppress=True)
        return p

    for name, help_ in (
        ("apply", "move to TARGET, upgrading or downgrading as needed"),
        ("upgrade", "upgrade to TARGET (default head)"),
        ("downgrade", "downgrade to TARGET"),
    ):
        p = command(name, help_)
        default, target_help = COMMANDS_WITH_TARGET.get(
            name, (None, "downgrade target (e.g. -1, base, an id)")
        )
        p.add_argument("target", nargs="?" if default else None, default=default, help=target_help)
        _run_options(p)
        p.add_argument(
            "--single-transaction",
            action="store_true",
            help="all steps in one transaction: all or nothing (default: one transaction per "
            "revision; not on MySQL/MariaDB, whose DDL commits at once)",
        )
        p.add_argument(
            "--on-failure",
            choices=("stop", "rollback"),
            default="stop",
            help="on a failed revision, stop at the last committed one, or undo this run "
            "(default stop, as Alembic; the operator defaults to rollback: nobody watches a Job; "
            "never over a revision left partially applied, exit 8)",
        )
        p.add_argument(
            "--dry-run",
            action="store_true",
            help="run every step in one transaction and roll it back (PostgreSQL, SQLite; not "
            "MySQL/MariaDB, whose DDL commits at once)",
        )
        p.add_argument(
            "--expect-plan-hash",
            metavar="SHA256",
            default=None,
            help="refuse unless the plan has this hash, from revisor plan (approval; default: "
            "no check)",
        )
        p.add_argument(
            "--require-reversible",
            action="store_true",
            help="refuse revisions that could not be downgraded again, empty downgrade() "
            "included (default: empty ones run as no-ops, as in Alembic)",
        )
        if name != "downgrade":
            _baseline_option(p)

    p = command("plan", "show the steps to TARGET without running them")
    p.add_argument("target", nargs="?", default="head", help=COMMANDS_WITH_TARGET["plan"][1])
    _baseline_option(p)
    command("current", "the revision(s) the database is at")
    command("heads", "the head revision(s) of the scripts")
    p = command("history", "revisions in RANGE (A:B), or with --runs the recorded runs")
    p.add_argument(
        "range",
        nargs="?",
        default=None,
        help="START:END, START: or :END (Alembic's forms); 'current' is the database's revision(s)",
    )
    p.add_argument("--runs", action="store_true", help="show runs from revisor_history instead")
    p.add_argument("--limit", type=int, default=20, help="with --runs: how many (default 20)")
    p = command("sql", "offline SQL for RANGE (FROM:TO), no database needed")
    p.add_argument("range")
    p.add_argument(
        "--dialect",
        type=_dialect,
        default="postgresql",
        help=f"SQL dialect: {', '.join(SQL_DIALECTS)} (default postgresql)",
    )
    p = command("stamp", "record TARGET as applied without running scripts")
    p.add_argument("target")
    p.add_argument(
        "--lock-timeout",
        type=_seconds,
        default=60.0,
        help="wait at most this long for the migration lock (default 60s; 0 = try once)",
    )
    command("verify", "check applied revisions against their files (exit 7 on mismatch)")
    command("check", "compare --metadata with the live schema (exit 7 on a difference)")
    p = command(
        "drift",
        "compare the live schema with the one recorded for its revision (exit 7 on drift)",
    )
    p.add_argument(
        "--ignore",
        metavar="PATTERN",
        action="append",
        default=[],
        help="leave out tables, table.column, and indexes or constraints by name (fnmatch, "
        "e.g. 'tmp_*', 'orders.legacy_*'; repeat; default: none)",
    )
    p.add_argument(
        "--accept",
        metavar="SHA256",
        type=_sha256,
        default=None,
        help="exit 0 when the live schema has this hash (drift a person acknowledged, from an "
        "earlier drift's output; default: drift is exit 7)",
    )
    p.add_argument(
        "--record",
        action="store_true",
        help="record the live schema as the current revision's instead of comparing (a database "
        "migrated by plain Alembic, or stamped)",
    )
    p.add_argument(
        "--lock-timeout",
        type=_seconds,
        default=60.0,
        help="wait at most this long for the migration lock, so a run in flight is not taken for "
        "drift (default 60s; 0 = try once)",
    )
    p = command(
        "wait-for",
        "wait until the database is at the scripts' heads or later (an app's init container; "
        "read-only, no lock)",
    )
    p.add_argument(
        "--revision",
        metavar="REV",
        default=None,
        help="wait for REV (or a later revision in the scripts' graph) instead of the heads",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=300.0,
        help="give up after this long: exit 9, or 6 when the database could not be reached "
        "(default 5m; 0 = look once)",
    )
    p = command(
        "schemas",
        "list the schema names a read-only query returns, sorted, once each (PostgreSQL; no "
        "lock); --output json: the first page that fits a termination message",
    )
    p.add_argument(
        "--query",
        metavar="SQL",
        required=True,
        help="a SELECT whose first column names the schemas (NULLs and empty names left "
        "out), run in a READ ONLY transaction",
    )
    p.add_argument(
        "--after",
        metavar="NAME",
        default=None,
        help="only names after NAME (sorted as Python sorts str): the next page, after the "
        "last name of the one before (default: from the first)",
    )
    p.add_argument(
        "--statement-timeout",
        type=_seconds,
        default=None,
        help="abort the query if it runs longer (default: no limit)",
    )
    return parser


def _baseline_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--baseline",
        metavar="REV",
        default=None,
        help="a database without a version table (built by create_all(), or by hand) is "
        "stamped at REV, the revision its schema matches, then migrated on from there; "
        "ignored when it has a version table (default: none, and such a database is refused "
        "when the first revision would create tables it has)",
    )


def _sha256(text: str) -> str:
    value = text.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a schema hash (64 hexadecimal digits, as revisor drift prints it)"
        )
    return value


def _location(args: argparse.Namespace) -> ScriptLocation:
    locations: list[str] = []
    for item in args.version_locations or ():
        locations += [part for part in item.replace(",", " ").split() if part]
    return ScriptLocation(
        config_file=args.config,
        scripts_dir=args.scripts,
        version_locations=tuple(locations),
        ini_section=args.name,
    )


def _project(args: argparse.Namespace) -> Project:
    from revisor.project import Project

    return Project(
        location=_location(args),
        database_url=args.database_url,
        database_url_file=args.database_url_file,
        version_table=VersionTable(name=args.version_table, schema=args.version_table_schema),
        env_py=args.env_py,
        metadata=args.metadata,
        schema=args.schema,
    )


def _options(args: argparse.Namespace) -> RunOptions:
    """The run ``apply`` / ``upgrade`` / ``downgrade`` was asked for."""
    return RunOptions(
        command=args.command,
        target=args.target,
        single_transaction=args.single_transaction,
        on_failure=args.on_failure,
        dry_run=args.dry_run,
        expect_plan_hash=args.expect_plan_hash,
        require_reversible=args.require_reversible,
        lock_timeout=args.lock_timeout,
        statement_timeout=args.statement_timeout,
        ddl_lock_timeout=args.ddl_lock_timeout,
        ddl_lock_retries=args.ddl_lock_retries,
        runner=os.environ.get(ENV_RUNNER) or None,
        baseline=getattr(args, "baseline", None),
    )


def _at_target(args: argparse.Namespace, reporter: Reporter) -> Outcome | None:
    """The outcome of a run that finds nothing to do, found without loading Alembic; or None.

    :mod:`revisor.at_target` answers only when its answer is the full run's.
    """
    if args.command not in ("apply", "upgrade"):
        return None
    from revisor import at_target

    result = at_target.answer(question(args), reporter)
    return None if result is None else Outcome(result, run_text(result))


def question(args: argparse.Namespace) -> at_target.Question:
    """What ``apply`` / ``upgrade`` asks, as :mod:`revisor.at_target` reads it."""
    from revisor import at_target

    return at_target.Question(
        location=_location(args),
        options=_options(args),
        database_url=args.database_url,
        database_url_file=args.database_url_file,
        version_table=VersionTable(name=args.version_table, schema=args.version_table_schema),
        schema=args.schema,
        env_py=args.env_py,
        metadata=args.metadata,
    )


def dispatch(args: argparse.Namespace, reporter: Reporter) -> Outcome:
    from revisor import commands

    project = _project(args)
    runner = os.environ.get(ENV_RUNNER) or None
    name = args.command
    if name in ("apply", "upgrade", "downgrade"):
        return commands.run(project, _options(args), reporter)
    handlers: dict[str, Any] = {
        "plan": lambda: commands.plan(
            project, args.target, baseline=args.baseline, reporter=reporter
        ),
        "current": lambda: commands.current(project),
        "heads": lambda: commands.heads(project),
        "history": lambda: (
            commands.runs(project, args.limit)
            if args.runs
            else commands.history(project, args.range)
        ),
        "sql": lambda: commands.offline_sql(project, args.range, args.dialect),
        "stamp": lambda: commands.stamp_to(
            project, args.target, reporter, lock_timeout=args.lock_timeout, runner=runner
        ),
        "verify": lambda: commands.verify(project),
        "check": lambda: commands.check(project),
        "drift": lambda: commands.drift(
            project,
            reporter,
            ignore=args.ignore,
            accept=args.accept,
            record=args.record,
            lock_timeout=args.lock_timeout,
        ),
        "wait-for": lambda: commands.wait_for(
            project, reporter, revision=args.revision, timeout=args.timeout
        ),
        "schemas": lambda: commands.schemas(
            project,
            query=args.query,
            after=args.after,
            statement_timeout=args.statement_timeout,
        ),
    }
    outcome: Outcome = handlers[name]()
    return outcome


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stopping.reset()
    if args.command != "wait-for":
        # A waiter has nothing to finish: SIGTERM ends it at once, as by default.
        stopping.stop_between_revisions_on_sigterm()
    reporter = configure_logging(args.log_format)
    result: contract.Result
    text = ""
    try:
        check_result_file(args.result_file)
        outcome = _at_target(args, reporter) or dispatch(args, reporter)
        result, text = outcome.result, outcome.text
    except RevisorError as exc:
        result = _error_result(
            args.command, exc.exit_code, str(exc), reason=exc.reason, context=exc.context
        )
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as exc:
        failure = _database_failure(exc)
        if failure is not None:
            result = _error_result(args.command, failure.exit_code, str(failure))
        else:
            sys.stderr.write(scrub("".join(traceback.format_exception(exc))))
            result = _error_result(
                args.command, ExitCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
            )
    if result.error and result.exit_code is not ExitCode.OK:
        sys.stderr.write(scrub(f"error: {result.error}\n"))
    if args.output == "text" and text:
        sys.stdout.write(scrub(text) + "\n")
    try:
        write_result(result, path=args.result_file, stdout=args.output == "json")
    except OSError as exc:
        sys.stderr.write(f"error: cannot write --result-file {args.result_file}: {exc.strerror}\n")
        return int(ExitCode.BAD_INPUT) if result.exit_code is ExitCode.OK else int(result.exit_code)
    return int(result.exit_code)


def _database_failure(exc: Exception) -> RevisorError | None:
    """What a database error raised outside any step means, or None for any other error.

    Outside a step, the connection went away or a permission is missing.
    SQLAlchemy is looked up, not imported: a run that never loaded it raised
    none of its errors.
    """
    sa = sys.modules.get("sqlalchemy")
    if sa is None or not isinstance(exc, sa.exc.DBAPIError):
        return None
    detail = " ".join(str(exc.orig).split())
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
        return DatabaseUnreachable(f"lost the database: {detail}")
    return BadInput(f"the database refused an operation: {detail}")


def _error_result(
    command: str,
    code: ExitCode,
    message: str,
    *,
    reason: str | None = None,
    context: contract.Result | None = None,
) -> contract.Result:
    """The result of a run that ended in ``message``; ``context`` adds what it knew."""
    if context is not None:
        return dataclasses.replace(
            context, exit_code=code, error=scrub(message), detail_reason=reason
        )
    return contract.Result(
        command=command,
        exit_code=code,
        error=scrub(message),
        engine_version=__version__,
        detail_reason=reason,
    )
