"""What the engine knows about MySQL without a server: implicit commits, errors, settings, words.

A statement that commits by itself decides whether a failed revision left
something behind, so the classification errs on the side of "committed":
a wrong "committed" asks a person to look; a wrong "rolled back" would let
a rollback run over a half-applied revision. The rest covers what the
suite's MariaDB cannot show: MySQL's own settings and system tables, and
sessions this user may not see (a fake connection answers instead).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pymysql
import pytest
import sqlalchemy as sa
from revisor.connection import resolve_database
from revisor.dialects import StatementLog
from revisor.dialects.mysql import MysqlSupport, mysql_errno, whole_seconds
from revisor.dialects.postgresql import PostgresSupport
from revisor.dialects.sqlite import SqliteSupport

MYSQL = MysqlSupport()


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE a (id INTEGER)",
        "\nALTER TABLE t1 ADD COLUMN note TEXT",
        "drop index ix on t1",
        "RENAME TABLE a TO b",
        "TRUNCATE t1",
        "/* why */ CREATE INDEX ix ON t (id)",
        "-- a note\nGRANT SELECT ON db.* TO app",
        "# mysql comment\nDROP VIEW v",
        "LOCK TABLES t1 WRITE",
        "OPTIMIZE TABLE t1",
        "SET autocommit = 1",
        "SET SESSION autocommit=1",
        "COMMIT",
        "START TRANSACTION",
        "CREATE TABLE copy AS SELECT * FROM t1",
    ],
)
def test_ddl_and_friends_commit_implicitly(statement: str) -> None:
    assert MYSQL.commits_implicitly(statement)


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO t1 (id) VALUES (1)",
        "UPDATE t1 SET id = 2",
        "DELETE FROM t1",
        "SELECT * FROM t1",
        "CREATE TEMPORARY TABLE tmp (id INTEGER)",
        "DROP TEMPORARY TABLE tmp",
        "SET SESSION sql_mode = 'ANSI'",
        "/* CREATE */ SELECT 1",
        "-- DROP TABLE x\nINSERT INTO t1 VALUES (1)",
        "ALTERNATIVE",
    ],
)
def test_dml_and_temporary_tables_do_not(statement: str) -> None:
    assert not MYSQL.commits_implicitly(statement)


def test_only_mysql_has_implicit_commits() -> None:
    for dialect in (PostgresSupport(), SqliteSupport(resolve_database(url="sqlite://"))):
        assert not dialect.commits_implicitly("CREATE TABLE a (id INTEGER)")


def _wrapped(code: int, message: str) -> sa.exc.DBAPIError:
    orig = pymysql.err.OperationalError(code, message)
    return sa.exc.OperationalError("ALTER TABLE t1 ...", None, orig)


@pytest.mark.parametrize(
    ("code", "message", "lock_timeout"),
    [
        (1205, "Lock wait timeout exceeded; try restarting transaction", True),
        (1969, "Query execution was interrupted (max_statement_time exceeded)", False),
        (3024, "Query execution was interrupted, maximum statement execution time exceeded", False),
        (1146, "Table 'x' doesn't exist", False),
    ],
)
def test_only_error_1205_is_a_lock_timeout(code: int, message: str, lock_timeout: bool) -> None:
    """What --ddl-lock-retries retries: a table lock waited for too long, not a slow statement."""
    exc = _wrapped(code, message)
    assert mysql_errno(exc) == code
    assert MYSQL.is_lock_timeout(exc) is lock_timeout
    assert not MYSQL.is_lock_timeout(RuntimeError("Lock wait timeout exceeded"))
    assert not PostgresSupport().is_lock_timeout(exc)


@pytest.mark.parametrize(
    ("seconds", "whole"), [(0.3, 1), (1.0, 1), (1.5, 2), (90.0, 90), (1e12, 31_536_000)]
)
def test_lock_timeouts_are_whole_seconds_at_least_one(seconds: float, whole: int) -> None:
    assert whole_seconds(seconds) == whole


def _ran(log: StatementLog, *statements: str) -> None:
    for statement in statements:
        log._before(None, None, statement)
        log._after(None, None, statement)


def test_the_log_keeps_what_committed_up_to_the_last_implicit_commit() -> None:
    log = StatementLog(MYSQL.commits_implicitly)
    _ran(
        log,
        "INSERT INTO t1 VALUES (1)",
        "CREATE TABLE a (\n\tid INTEGER\n)",
        "INSERT INTO a VALUES (1)",
    )
    committed = log.committed()
    assert committed is not None
    assert committed.committed == 2, "the last INSERT was rolled back with the step"
    assert committed.statements == ("INSERT INTO t1 VALUES (1)", "CREATE TABLE a ( id INTEGER )")


def test_a_failing_implicit_commit_commits_what_ran_before_it() -> None:
    """The server commits before it runs the statement, whether it then fails or not."""
    log = StatementLog(MYSQL.commits_implicitly)
    _ran(log, "INSERT INTO t1 VALUES (1)")
    log._before(None, None, "ALTER TABLE nope ADD COLUMN x INTEGER")
    committed = log.committed()
    assert committed is not None and committed.statements == ("INSERT INTO t1 VALUES (1)",)


def test_nothing_committed_is_none_and_a_reset_starts_over() -> None:
    log = StatementLog(MYSQL.commits_implicitly)
    _ran(log, "CREATE TABLE a (id INTEGER)")
    log.reset()
    _ran(log, "INSERT INTO t1 VALUES (1)")
    log._before(None, None, "SELECT * FROM nope")
    assert log.committed() is None
    _ran(log, "CREATE TABLE ignored (id INTEGER)")
    assert log.committed() is None, "stopped counting once asked"


def test_the_log_is_bounded_keeping_the_first_and_last_few() -> None:
    log = StatementLog(MYSQL.commits_implicitly)
    _ran(log, *[f"CREATE TABLE t{i} (id INTEGER)" for i in range(1000)])
    _ran(log, "INSERT INTO t1 VALUES ('" + "x" * 500 + "')")
    committed = log.committed()
    assert committed is not None and committed.committed == 1000
    assert committed.statements == (
        "CREATE TABLE t0 (id INTEGER)",
        "CREATE TABLE t1 (id INTEGER)",
        "CREATE TABLE t2 (id INTEGER)",
        "… 994 more …",
        "CREATE TABLE t997 (id INTEGER)",
        "CREATE TABLE t998 (id INTEGER)",
        "CREATE TABLE t999 (id INTEGER)",
    )
    assert committed.numbered() == (
        "(1) CREATE TABLE t0 (id INTEGER); (2) CREATE TABLE t1 (id INTEGER); "
        "(3) CREATE TABLE t2 (id INTEGER); … 994 more … (998) CREATE TABLE t997 (id INTEGER); "
        "(999) CREATE TABLE t998 (id INTEGER); (1000) CREATE TABLE t999 (id INTEGER);"
    )
    long = StatementLog(MYSQL.commits_implicitly)
    _ran(long, "CREATE TABLE wide (" + ", ".join(f"c{i} INTEGER" for i in range(100)) + ")")
    (text,) = long.committed().statements  # type: ignore[union-attr]
    assert len(text) == StatementLog.WIDTH and text.endswith("…")


def test_a_few_statements_are_all_shown_once() -> None:
    log = StatementLog(MYSQL.commits_implicitly)
    _ran(log, *[f"DROP TABLE t{i}" for i in range(5)])
    committed = log.committed()
    assert committed is not None
    assert committed.statements == tuple(f"DROP TABLE t{i}" for i in range(5))


def test_in_an_autocommit_block_everything_that_ran_committed() -> None:
    """Which statements ran inside the block cannot be told: all of them count."""
    log = StatementLog(MYSQL.commits_implicitly)
    _ran(log, "INSERT INTO t1 VALUES (1)", "UPDATE t1 SET id = 2")
    committed = log.committed(autocommit=True)
    assert committed is not None and committed.committed == 2


class _FakeResult:
    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def one(self) -> Any:
        return self.rows[0]

    def all(self) -> list[Any]:
        return self.rows

    def first(self) -> Any:
        return self.rows[0] if self.rows else None

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None


class _FakeConnection:
    """Answers each query with the next of ``answers``: rows, or an error to raise."""

    def __init__(self, *answers: list[Any] | Exception) -> None:
        self.answers = list(answers)
        self.executed: list[tuple[str, Any]] = []

    def execute(self, statement: Any, params: Any = None) -> _FakeResult:
        self.executed.append((str(statement), params))
        answer = self.answers.pop(0) if self.answers else []
        if isinstance(answer, Exception):
            raise answer
        return _FakeResult(answer)

    def commit(self) -> None:
        pass

    rollback = commit


def test_on_mysql_the_statement_timeout_is_max_execution_time_in_milliseconds() -> None:
    """The server's VERSION() decides: MySQL has no max_statement_time."""
    conn = _FakeConnection([("8.0.36", 60, 30, 60)])
    dialect = MysqlSupport()
    dialect.prepare_session(conn, statement_timeout=2.5, ddl_lock_timeout=None)  # type: ignore[arg-type]
    assert dialect.mariadb is False
    statement, params = conn.executed[-1]
    assert "SESSION max_execution_time = " in statement and "max_statement_time" not in statement
    assert params["max_execution_time"] == 2500
    assert params["lock_wait_timeout"] == 31_536_000 and "innodb_lock_wait_timeout" not in params
    assert params["wait_timeout"] == 28_800 and params["net_read_timeout"] == 600
    conn = _FakeConnection([("10.11.19-MariaDB", 90_000, 900, 900)])
    MysqlSupport().prepare_session(conn, statement_timeout=None, ddl_lock_timeout=0.2)  # type: ignore[arg-type]
    _, params = conn.executed[-1]
    assert params["max_statement_time"] == 0.0
    assert params["lock_wait_timeout"] == params["innodb_lock_wait_timeout"] == 1
    assert (params["wait_timeout"], params["net_write_timeout"]) == (90_000, 900), "never lowered"


def _lock_row(**kw: Any) -> SimpleNamespace:
    fields = {"ID": 7, "USER": "app", "HOST": "10.0.0.9:5123", "COMMAND": "Sleep", "TIME": 12,
              "STATE": "", "INFO": None, "mode": "SHARED_READ", "tbl": "t1"}  # fmt: skip
    return SimpleNamespace(**{**fields, **kw})


def _refused() -> sa.exc.DBAPIError:
    return sa.exc.ProgrammingError("SELECT", None, pymysql.err.ProgrammingError(1109, "Unknown"))


def test_lock_holders_fall_back_from_the_plugin_to_performance_schema() -> None:
    """MySQL 8 has no METADATA_LOCK_INFO; performance_schema names the holder."""
    conn = _FakeConnection(_refused(), [_lock_row(tbl="other"), _lock_row(ID=8)])
    said = MYSQL.lock_holders(conn, statement="ALTER TABLE t1 ADD COLUMN note TEXT")  # type: ignore[arg-type]
    assert (
        said
        == "blocked by connection 8 (app@10.0.0.9:5123, Sleep for 12s), holding SHARED_READ on t1"
    )


def test_lock_holders_name_open_transactions_when_nothing_else_answers() -> None:
    row = _lock_row(age=40, INFO="SELECT count(*) FROM t1", STATE="Sending data", COMMAND="Query")
    conn = _FakeConnection(_refused(), [], [row])
    said = MYSQL.lock_holders(conn, statement="ALTER TABLE t1 ADD COLUMN note TEXT")  # type: ignore[arg-type]
    assert said == (
        "sessions with a transaction open, which may hold it: connection 7 (app@10.0.0.9:5123, "
        "transaction open 40s, Query for 12s, Sending data; its statement: SELECT count(*) FROM t1)"
    )


def test_lock_holders_never_fail() -> None:
    """Without the privileges to look, the failure is reported without blockers."""
    conn = _FakeConnection(_refused(), _refused(), _refused())
    assert MYSQL.lock_holders(conn, statement="ALTER TABLE t1") == ""  # type: ignore[arg-type]


def test_a_holder_this_user_may_not_see_is_named_by_its_connection_alone() -> None:
    """Without the PROCESS privilege the process list hides other users' sessions."""
    assert MYSQL._holder(_FakeConnection([(42,)], []), "n") == " (held by connection 42)"  # type: ignore[arg-type]
    assert MYSQL._holder(_FakeConnection([(None,)]), "n") == "", "released meanwhile"  # type: ignore[arg-type]
    assert MYSQL._holder(_FakeConnection(_refused()), "n") == ""  # type: ignore[arg-type]
