"""Failures on MySQL/MariaDB, where every DDL statement commits as it runs.

A revision that fails after some of its statements committed is *partially
applied*: exit 8 (``PartiallyApplied``), the statements named in the error,
the result and its ``revisor_history`` row, the fix spelled out, and no
rollback or retry over it. A revision that fails before committing anything
is an ordinary failure (exit 4), and ``--on-failure rollback`` and
``--ddl-lock-retries`` work as on PostgreSQL. Table locks and statement
timeouts are real ones, held by another session of the same server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pymysql
import pytest
from revisor.contract import PartiallyApplied
from sqlalchemy.engine import make_url

from tests.engine.conftest import history_rows, tables, version
from tests.support.mariadb import MariaDBServer
from tests.support.projects import Rev, chain, make_project

pytestmark = [pytest.mark.mariadb]

BOOM = "op.execute('SELECT * FROM no_such_table_anywhere')"

HALF = Rev(
    id="0003h0000000",
    down="0002t0000000",
    message="half of it",
    upgrade=f"""
        op.create_table('a', sa.Column('id', sa.Integer, primary_key=True))
        op.create_table('b', sa.Column('id', sa.Integer, primary_key=True))
        {BOOM}
    """,
    downgrade="op.drop_table('b')\nop.drop_table('a')",
)


def _args(tmp_path: Path, url: str, *last: Rev) -> tuple[str, ...]:
    project = make_project(tmp_path, [*chain(2), *last])
    return (*project.args(), "--database-url", url, "--output", "json")


def _rows(server: MariaDBServer, url: str, sql: str) -> list[tuple[object, ...]]:
    with server.connect(make_url(url).database) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def test_a_revision_that_fails_after_committed_ddl_is_partially_applied(
    revisor, mysql_url: str, tmp_path: Path
) -> None:
    """Exit 8: the revision, the failed statement, what committed, and the way out."""
    args = _args(tmp_path, mysql_url, HALF)
    run = revisor(*args, "upgrade")
    assert run.code == 8, run.err
    result = run.result
    assert result["reason"] == "PartiallyApplied" and "rolledBack" not in result
    assert [s["revision"] for s in result["applied"]] == ["0001t0000000", "0002t0000000"]
    assert result["to"] == ["0002t0000000"]
    error = result["error"]
    assert error.startswith("upgrade 0003h0000000 (half of it) failed at ")
    assert "[SQL: SELECT * FROM no_such_table_anywhere]" in error, "the statement that failed"
    assert "0003h0000000 is partially applied" in error
    assert "2 of its statement(s) had committed before it failed" in error
    assert "(1) CREATE TABLE a ( id INTEGER NOT NULL AUTO_INCREMENT, PRIMARY KEY (id) );" in error
    assert "(2) CREATE TABLE b (" in error
    assert "the version table still says 0002t0000000" in error
    assert "undo them by hand and run again, or finish 0003h0000000 by hand, then " in error
    assert "`revisor stamp 0003h0000000`" in error
    partial = result["details"]["partiallyApplied"]
    assert partial["revision"] == "0003h0000000" and partial["statementsCommitted"] == 2
    assert [s.split(" (")[0] for s in partial["statements"]] == ["CREATE TABLE a", "CREATE TABLE b"]
    assert "[3/3] 0003h0000000 half of it … FAILED" in run.err
    assert run.err.count("error: ") == 1
    assert version(mysql_url) == {"0002t0000000"}
    assert {"t1", "t2", "a", "b"} <= tables(mysql_url)
    (step,) = [s for s in history_rows(mysql_url, "step") if s["revision"] == "0003h0000000"]
    assert step["status"] == "partial" and step["statements_committed"] == 2
    assert step["statements"].splitlines() == partial["statements"]
    assert step["error"] == error
    assert history_rows(mysql_url)[-1]["status"] == "partial"
    # The way out it names: the rest of the revision by hand (nothing here), then stamp.
    assert revisor(*args, "stamp", "0003h0000000").code == 0
    assert version(mysql_url) == {"0003h0000000"}
    assert revisor(*args, "upgrade").result["applied"] == []


def test_on_failure_rollback_stops_at_a_partially_applied_revision_and_says_why(
    revisor, mysql_url: str, tmp_path: Path
) -> None:
    args = _args(tmp_path, mysql_url, HALF)
    run = revisor(*args, "upgrade", "--on-failure", "rollback")
    assert run.code == 8, run.err
    assert run.result["reason"] == "PartiallyApplied" and "rolledBack" not in run.result
    error = run.result["error"]
    assert "0003h0000000 is partially applied" in error
    assert (
        "--on-failure rollback left the 2 revision(s) this run applied before it in place: "
        "their downgrade() would run over 0003h0000000's committed statements" in error
    )
    assert "rolling back" not in run.err
    assert version(mysql_url) == {"0002t0000000"}
    assert {"t1", "t2", "a", "b"} <= tables(mysql_url)
    assert history_rows(mysql_url)[-1]["status"] == "partial"


def test_a_revision_that_fails_at_its_first_statement_is_a_plain_failure_and_rolls_back(
    revisor, mysql_url: str, tmp_path: Path
) -> None:
    """Nothing of it committed: exit 4, and the run's revisions are rolled back."""
    first = Rev(id="0003f0000000", down="0002t0000000", message="breaks at once",
                upgrade=f"{BOOM}\nop.create_table('never', sa.Column('id', sa.Integer))")  # fmt: skip
    args = _args(tmp_path, mysql_url, first)
    stop = revisor(*args, "upgrade")
    assert stop.code == 4 and stop.result["reason"] == "MigrationFailed"
    assert "partially applied" not in stop.result["error"]
    assert [s["status"] for s in history_rows(mysql_url, "step")][-1] == "failed"
    assert history_rows(mysql_url, "step")[-1]["statements_committed"] is None
    assert revisor(*args, "downgrade", "base").code == 0
    back = revisor(*args, "upgrade", "--on-failure", "rollback")
    assert back.code == 4 and back.result["reason"] == "RolledBack"
    assert "rolling back 2 step(s) to base" in back.err
    assert version(mysql_url) == set()
    assert not {"t1", "t2", "never"} & tables(mysql_url)


def test_rows_a_failed_revision_inserted_are_rolled_back_unless_ddl_committed_them(
    revisor, mariadb_server: MariaDBServer, mysql_url: str, tmp_path: Path
) -> None:
    """DML alone is transactional on InnoDB; a DDL statement commits what came before it.

    MariaDB commits the open transaction before it runs an ALTER, even one
    that then fails: the row is in, and the revision partially applied.
    """
    dml = Rev(id="0003d0000000", down="0002t0000000", message="insert, then fail",
              upgrade=f"op.execute('INSERT INTO t1 (id) VALUES (7)')\n{BOOM}")  # fmt: skip
    args = _args(tmp_path, mysql_url, dml)
    run = revisor(*args, "upgrade")
    assert run.code == 4, run.err
    assert _rows(mariadb_server, mysql_url, "SELECT id FROM t1") == []
    (tmp_path / "second").mkdir()
    ddl = Rev(id="0003e0000000", down="0002t0000000", message="insert, then a failing alter",
              upgrade="op.execute('INSERT INTO t1 (id) VALUES (8)')\n"
                      "op.add_column('no_such_table', sa.Column('x', sa.Integer))")  # fmt: skip
    args = _args(tmp_path / "second", mysql_url, ddl)
    run = revisor(*args, "upgrade")
    assert run.code == 8, run.err
    assert "(1) INSERT INTO t1 (id) VALUES (8);" in run.result["error"]
    assert "[SQL: ALTER TABLE no_such_table ADD COLUMN x INTEGER]" in run.result["error"]
    assert _rows(mariadb_server, mysql_url, "SELECT id FROM t1") == [(8,)]


def test_rows_written_in_an_autocommit_block_count_as_committed(
    revisor, mariadb_server: MariaDBServer, mysql_url: str, tmp_path: Path
) -> None:
    block = Rev(id="0003b0000000", down="0002t0000000", message="autocommit, then fail",
                upgrade="with op.get_context().autocommit_block():\n"
                        "    op.execute('INSERT INTO t1 (id) VALUES (9)')\n"
                        f"{BOOM}")  # fmt: skip
    run = revisor(*_args(tmp_path, mysql_url, block), "upgrade")
    assert run.code == 8, run.err
    assert "(1) INSERT INTO t1 (id) VALUES (9);" in run.result["error"]
    assert _rows(mariadb_server, mysql_url, "SELECT id FROM t1") == [(9,)]


def test_a_downgrade_that_fails_half_way_names_the_stamp_that_finishes_it(
    revisor, mysql_url: str, tmp_path: Path
) -> None:
    half_down = Rev(id="0003h0000000", down="0002t0000000", message="half a downgrade",
                    upgrade="op.create_table('a', sa.Column('id', sa.Integer))",
                    downgrade=f"op.drop_table('a')\n{BOOM}")  # fmt: skip
    args = _args(tmp_path, mysql_url, half_down)
    assert revisor(*args, "upgrade").code == 0
    run = revisor(*args, "downgrade", "-1")
    assert run.code == 8, run.err
    error = run.result["error"]
    assert error.startswith("downgrade 0003h0000000 (half a downgrade) failed")
    assert "(1) DROP TABLE a;" in error and "`revisor stamp 0002t0000000`" in error
    assert version(mysql_url) == {"0003h0000000"} and "a" not in tables(mysql_url)


@contextmanager
def reader_holding_t1(server: MariaDBServer, url: str, *, seconds: float = 60) -> Iterator[int]:
    """Another session reads t1 in an open transaction until the block ends; yields its id.

    A transaction that read a table holds its metadata lock until it ends,
    and ``ALTER TABLE`` must wait for it. It ends when the ``with`` block does
    (however long a loaded machine took to get there), or after ``seconds``
    at the latest: a run that ignored its lock timeout would wait that long,
    then succeed, and fail the test that expected the timeout.
    """
    conn = server.connect(make_url(url).database)
    conn.autocommit(False)
    with conn.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        (conn_id,) = cur.fetchone()
        cur.execute("SELECT count(*) FROM t1")
        cur.fetchall()
    release = threading.Timer(seconds, conn.rollback)
    release.start()
    try:
        yield int(conn_id)
    finally:
        release.cancel()
        release.join()
        conn.rollback()
        conn.close()


ALTER = Rev(
    id="0003a0000000",
    down="0002t0000000",
    message="add t1.note",
    upgrade="op.add_column('t1', sa.Column('note', sa.Text))",
    downgrade="op.drop_column('t1', 'note')",
)


def test_ddl_lock_timeout_fails_the_revision_naming_the_sessions_that_may_hold_it(
    revisor, mariadb_server: MariaDBServer, mysql_url: str, tmp_path: Path
) -> None:
    """Without MariaDB's lock-info plugin, the open transactions are named: the blocker among them."""
    args = _args(tmp_path, mysql_url, ALTER)
    assert revisor(*args, "upgrade", "0002").code == 0
    with reader_holding_t1(mariadb_server, mysql_url) as reader:
        run = revisor(*args, "upgrade", "--ddl-lock-timeout", "1")
    assert run.code == 4, run.err  # gave up while the reader still held t1
    error = run.result["error"]
    assert "(1205, 'Lock wait timeout exceeded; try restarting transaction')" in error
    assert "[SQL: ALTER TABLE t1 ADD COLUMN note TEXT]" in error
    assert f"sessions with a transaction open, which may hold it: connection {reader} (" in error
    assert "partially applied" not in error
    assert version(mysql_url) == {"0002t0000000"}


def test_with_the_lock_info_plugin_the_blocker_and_its_lock_are_named(
    revisor, mariadb_server: MariaDBServer, mysql_url: str, tmp_path: Path
) -> None:
    """MariaDB's METADATA_LOCK_INFO (a plugin, installed for this test only) says who holds what."""
    args = _args(tmp_path, mysql_url, ALTER)
    assert revisor(*args, "upgrade", "0002").code == 0
    with mariadb_server.connect() as admin, admin.cursor() as cur:
        try:
            cur.execute("INSTALL SONAME 'metadata_lock_info'")
        except pymysql.err.MySQLError as exc:
            pytest.skip(f"this server cannot load metadata_lock_info: {exc}")
        try:
            with reader_holding_t1(mariadb_server, mysql_url) as reader:
                run = revisor(*args, "upgrade", "--ddl-lock-timeout", "1")
        finally:
            cur.execute("UNINSTALL SONAME 'metadata_lock_info'")
    assert run.code == 4, run.err
    error = run.result["error"]
    assert f"blocked by connection {reader} ({mariadb_server.user}@127.0.0.1:" in error
    assert "holding MDL_SHARED_READ on t1" in error


def test_retries_wait_the_reader_out_and_are_recorded(
    revisor, mariadb_server: MariaDBServer, mysql_url: str, tmp_path: Path
) -> None:
    args = _args(tmp_path, mysql_url, ALTER)
    assert revisor(*args, "upgrade", "0002").code == 0
    started = time.monotonic()
    with reader_holding_t1(mariadb_server, mysql_url, seconds=3) as reader:
        run = revisor(*args, "upgrade", "--ddl-lock-timeout", "1", "--ddl-lock-retries", "10")
    assert run.code == 0, run.err
    assert time.monotonic() - started >= 3, "it ran only once the reader let go"
    assert "0003a0000000 waited too long for a table lock; retrying it in" in run.err
    assert "(retry 1 of 10)" in run.err and f"connection {reader} (" in run.err
    assert version(mysql_url) == {"0003a0000000"}
    retried = [s for s in history_rows(mysql_url, "step") if s["status"] == "retried"]
    assert retried and all(s["revision"] == "0003a0000000" for s in retried)
    assert "Lock wait timeout exceeded" in retried[0]["error"]


def test_a_revision_that_committed_ddl_before_the_lock_timeout_is_never_retried(
    revisor, mariadb_server: MariaDBServer, mysql_url: str, tmp_path: Path
) -> None:
    """Running it again would create its first table twice: partially applied, exit 8."""
    create_then_alter = Rev(id="0003c0000000", down="0002t0000000", message="create, then alter",
                            upgrade="op.create_table('c', sa.Column('id', sa.Integer))\n"
                                    "op.add_column('t1', sa.Column('note', sa.Text))")  # fmt: skip
    args = _args(tmp_path, mysql_url, create_then_alter)
    assert revisor(*args, "upgrade", "0002").code == 0
    with reader_holding_t1(mariadb_server, mysql_url, seconds=3):
        run = revisor(*args, "upgrade", "--ddl-lock-timeout", "1", "--ddl-lock-retries", "5")
    assert run.code == 8, run.err
    assert "retrying" not in run.err
    assert "Lock wait timeout exceeded" in run.result["error"]
    assert "(1) CREATE TABLE c ( id INTEGER );" in run.result["error"]
    assert "c" in tables(mysql_url) and version(mysql_url) == {"0002t0000000"}


def test_statement_timeout_aborts_a_slow_statement_and_is_never_retried(
    revisor, mysql_url: str, tmp_path: Path
) -> None:
    """MariaDB's max_statement_time (error 1969) is not a lock timeout: no retry."""
    slow = Rev(id="0003s0000000", down="0002t0000000", message="slow",
               upgrade="op.execute('SELECT SLEEP(5)')")  # fmt: skip
    args = _args(tmp_path, mysql_url, slow)
    started = time.monotonic()
    run = revisor(*args, "upgrade", "--statement-timeout", "300ms", "--ddl-lock-retries", "3")
    assert time.monotonic() - started < 4
    assert run.code == 4, run.err
    assert (
        "(1969, 'Query execution was interrupted (max_statement_time exceeded)')"
        in (run.result["error"])
    )
    assert "retrying" not in run.err
    assert version(mysql_url) == {"0002t0000000"}


def test_the_result_names_the_failed_statement_its_cause_and_what_to_stamp(
    revisor, mysql_url: str, tmp_path: Path
) -> None:
    """What the operator builds its message from, in the result's details."""
    run = revisor(*_args(tmp_path, mysql_url, HALF), "upgrade")
    assert run.code == 8, run.err
    partial = PartiallyApplied.from_details(run.result["details"])
    assert partial is not None
    assert (partial.revision, partial.direction, partial.committed) == (
        "0003h0000000",
        "upgrade",
        2,
    )
    assert partial.failed_statement == "SELECT * FROM no_such_table_anywhere"
    assert partial.cause is not None and "no_such_table_anywhere' doesn't exist" in partial.cause
    assert partial.stamp == ("0003h0000000",)
