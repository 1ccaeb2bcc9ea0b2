"""A runner waiting for the lock holds nothing the lock holder could wait for.

The holder's revisions may run statements that wait for every older
snapshot or transaction of the database (``CREATE INDEX CONCURRENTLY``,
``REINDEX``/``DROP INDEX CONCURRENTLY``) or that cannot run inside a
transaction at all (``VACUUM``, ``ALTER TYPE ... ADD VALUE`` on old servers).
A waiter that sat inside ``SELECT pg_advisory_lock(k)`` held a snapshot for
its whole wait: PostgreSQL then found a deadlock and killed one side, and
when the victim was the holder its index was left INVALID. These tests start
several runners at once on such histories and prove every one of them ends
well, with the holder's objects valid.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.engine.conftest import history_rows, version
from tests.support.postgres import PostgresServer
from tests.support.projects import Rev, make_project

pytestmark = [pytest.mark.slow]


def concurrent_chain(flag: Path) -> list[Rev]:
    """A table with two indexes and an enum; then one revision of concurrent DDL.

    The second revision first waits while ``flag`` exists, so the test can
    hold it until every other runner is waiting for the lock.
    """
    return [
        Rev(
            id="c1a000000001",
            message="create t",
            upgrade="""
                op.execute("CREATE TYPE mood AS ENUM ('sad')")
                op.create_table(
                    't',
                    sa.Column('id', sa.Integer, primary_key=True),
                    sa.Column('note', sa.Text),
                    sa.Column('m', sa.Enum('sad', name='mood', create_type=False)),
                )
                op.create_index('ix_old', 't', ['note'])
                op.execute("INSERT INTO t (id, note) SELECT g, 'n' || g FROM generate_series(1, 500) g")
            """,
            downgrade="op.drop_table('t')\nop.execute('DROP TYPE mood')",
        ),
        Rev(
            id="c1a000000002",
            down="c1a000000001",
            message="concurrent ddl",
            upgrade=f"""
                import os
                while os.path.exists({str(flag)!r}):
                    time.sleep(0.05)
                with op.get_context().autocommit_block():
                    op.execute("CREATE INDEX CONCURRENTLY ix ON t (id)")
                    op.execute("REINDEX INDEX CONCURRENTLY ix")
                    op.execute("DROP INDEX CONCURRENTLY ix_old")
                    op.execute("ALTER TYPE mood ADD VALUE 'happy'")
                    op.execute("VACUUM t")
            """,
            downgrade="op.execute('DROP INDEX ix')",
        ),
    ]


def _start(argv: list[str], log: Path) -> subprocess.Popen[str]:
    with log.open("w") as stderr:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True)


def _race(argv: list[str], flag: Path, tmp_path: Path, runners: int) -> list[dict[str, object]]:
    """Start ``runners`` processes, release the winner once the rest wait; their results."""
    logs = [tmp_path / f"runner-{i}.log" for i in range(runners)]
    procs = [_start(argv, log) for log in logs]
    deadline = time.monotonic() + 240  # a hang guard for a loaded machine, not a measurement
    while sum("for the lock" in log.read_text() for log in logs) < runners - 1:
        assert time.monotonic() < deadline, [log.read_text() for log in logs]
        assert all(p.poll() is None for p in procs), [log.read_text() for log in logs]
        time.sleep(0.1)
    time.sleep(1.0)  # the waiters are inside their wait now, not just announcing it
    flag.unlink()
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * runners, [log.read_text() for log in logs]
    return [json.loads(out) for out in outs]


@pytest.mark.postgres
@pytest.mark.parametrize("driver", ["postgresql+psycopg", "postgresql+asyncpg"])
def test_waiting_runners_never_deadlock_with_concurrent_ddl(
    postgres_server: PostgresServer, tmp_path: Path, driver: str
) -> None:
    """Three runners; the winner's CIC, REINDEX/DROP INDEX CONCURRENTLY, ADD VALUE, VACUUM all pass."""
    name = postgres_server.create_database()
    url = postgres_server.url(name, driver=driver)
    flag = tmp_path / "hold"
    flag.touch()
    project = make_project(tmp_path, concurrent_chain(flag))
    argv = [sys.executable, "-m", "revisor", *project.args(), "--database-url", url]
    argv += ["--output", "json", "upgrade", "--lock-timeout", "600"]
    results = _race(argv, flag, tmp_path, runners=3)
    assert sorted(len(r["applied"]) for r in results) == [0, 0, 2]  # type: ignore[arg-type]
    plain = postgres_server.url(name)
    engine = sa.create_engine(plain, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        valid = conn.execute(
            sa.text(
                "SELECT c.relname, i.indisvalid FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname IN ('ix', 'ix_old')"
            )
        ).all()
        labels = conn.execute(sa.text("SELECT unnest(enum_range(NULL::mood))::text")).scalars()
        assert list(labels) == ["sad", "happy"]
    engine.dispose()
    assert valid == [("ix", True)]
    assert version(plain) == {"c1a000000002"}
    assert [r["status"] for r in history_rows(plain)] == ["succeeded"]
    postgres_server.drop_database(name)


@pytest.mark.postgres
def test_a_waiting_runner_is_idle_outside_any_transaction(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """While it waits, the waiter's session is plain ``idle``: no transaction, no snapshot."""
    name = postgres_server.create_database()
    url = postgres_server.url(name)
    flag = tmp_path / "hold"
    flag.touch()
    project = make_project(tmp_path, concurrent_chain(flag))
    argv = [sys.executable, "-m", "revisor", *project.args(), "--database-url", url]
    argv += ["upgrade", "--lock-timeout", "600"]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [_start(argv, logs[0])]
    # The first runner is inside revision 2 (waiting on the flag) once revision 1 committed.
    deadline = time.monotonic() + 120
    while version(url) != {"c1a000000001"}:
        assert time.monotonic() < deadline and procs[0].poll() is None, logs[0].read_text()
        time.sleep(0.05)
    procs.append(_start(argv, logs[1]))
    while "for the lock" not in logs[1].read_text():
        assert time.monotonic() < deadline and procs[1].poll() is None, logs[1].read_text()
        time.sleep(0.05)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    states = []
    with engine.connect() as conn:
        for _ in range(20):  # sampled across many polls of the waiter
            row = conn.execute(
                sa.text(
                    "SELECT state, backend_xmin IS NULL AND backend_xid IS NULL AS holds_nothing "
                    "FROM pg_stat_activity WHERE application_name = 'revisor' "
                    "AND pid NOT IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' "
                    "AND granted)"
                )
            ).one()
            conn.rollback()
            states.append(tuple(row))
            time.sleep(0.05)
    engine.dispose()
    flag.unlink()
    for proc in procs:
        proc.communicate(timeout=120)
        assert proc.returncode == 0
    # A poll is microseconds long: sampled, the waiter is idle and holds nothing.
    assert states.count(("idle", True)) >= 18, states
    postgres_server.drop_database(name)


def test_a_waiting_sqlite_runner_holds_no_database_lock(tmp_path: Path) -> None:
    """While one runner holds the lock file, a waiter keeps no SQLite transaction open.

    A waiter with an open read transaction would hold SQLite's SHARED lock and
    make the holder's COMMITs wait for ``busy_timeout``; a writer that does
    not wait at all (``timeout=0``) proves there is none.
    """
    flag = tmp_path / "hold"
    flag.touch()
    db = tmp_path / "app.db"
    revs = [
        Rev(id="5a1000000001", upgrade="op.create_table('t', sa.Column('id', sa.Integer))"),
        Rev(
            id="5a1000000002",
            down="5a1000000001",
            upgrade=f"import os\nwhile os.path.exists({str(flag)!r}):\n    time.sleep(0.05)",
        ),
    ]
    project = make_project(tmp_path, revs)
    argv = [sys.executable, "-m", "revisor", *project.args(), "--database-url", f"sqlite:///{db}"]
    argv += ["upgrade", "--lock-timeout", "600"]
    holder = _start(argv, tmp_path / "holder.log")
    deadline = time.monotonic() + 120
    while version(f"sqlite:///{db}") != {"5a1000000001"}:
        assert time.monotonic() < deadline and holder.poll() is None
        time.sleep(0.05)
    _write_without_waiting(db)  # the holder alone leaves the database writable
    waiter = _start(argv, tmp_path / "waiter.log")
    while "for the lock" not in (tmp_path / "waiter.log").read_text():
        assert time.monotonic() < deadline and waiter.poll() is None
        time.sleep(0.05)
    for _ in range(10):
        _write_without_waiting(db)
        time.sleep(0.05)
    flag.unlink()
    for proc in (holder, waiter):
        proc.communicate(timeout=120)
        assert proc.returncode == 0


def _write_without_waiting(db: Path) -> None:
    """Commit a write with no busy timeout: fails at once if any session holds a read lock."""
    direct = sqlite3.connect(db, timeout=0, isolation_level=None)
    try:
        direct.execute("BEGIN IMMEDIATE")
        direct.execute("CREATE TABLE IF NOT EXISTS probe (id INTEGER)")
        direct.execute("COMMIT")
    finally:
        direct.close()
