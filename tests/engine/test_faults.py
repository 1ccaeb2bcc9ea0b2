"""Faults under a running migration, on a PostgreSQL server the test stops and starts.

Each test ends where the issue "Real histories, real faults" asks every fault
to end: the database at a committed revision, no advisory lock held,
``revisor_history`` telling the truth (the dead run marked ``interrupted`` by
the next run, nothing written by a session that did not hold the lock), and
the next run converging. The server is the test's own (``dedicated_postgres``,
``synchronous_commit=on`` so that a crash loses nothing a runner saw commit),
stopped with ``pg_ctl stop -m immediate``: every backend killed at once, no
shutdown checkpoint, crash recovery on the next start.

The soak at the end (30 alternating runs) is the short version of
``bench/soak.py``.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from revisor.connection import resolve_database
from revisor.dialects import lock_key

from tests.engine.conftest import history_rows, tables, version
from tests.support.postgres import PostgresCluster, dedicated_postgres
from tests.support.projects import Project, Rev, chain, make_project, revisor_process
from tests.support.soak import advisory_locks, connections, soak

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REVS = chain(3)
FIRST, SECOND, HEAD = (rev.id for rev in REVS)
#: How long the engine may take to notice a dead server and exit: a hang guard for a
#: loaded machine. It notices at its next statement (the server's socket is closed).
PROMPT_SECONDS = 30.0


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresCluster]:
    """This module's own server, which its tests stop and start."""
    with dedicated_postgres(durable=True) as cluster:
        yield cluster


@pytest.fixture
def url(server: PostgresCluster) -> Iterator[str]:
    """A fresh database on the module's server (started again if a test left it stopped)."""
    if not server.running():
        server.start()
    name = server.server.create_database("fault")
    yield server.server.url(name)
    if not server.running():
        server.start()
    server.server.drop_database(name)


def second_revision(upgrade: str) -> list[Rev]:
    """The three-revision chain with the second one's upgrade() replaced."""
    revs = list(REVS)
    revs[1] = Rev(
        id=SECOND,
        down=FIRST,
        message="the one a fault hits",
        upgrade=upgrade,
        downgrade="op.drop_table('t2')",
    )
    return revs


def wait_until(check: Any, what: str, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Poll ``check()`` until true; fail at once if the engine exits first."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the engine exited {proc.returncode} before {what}:\n{err}\n{out}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def in_pg_sleep(url: str) -> bool:
    """Whether a session (the engine's) is running ``pg_sleep`` right now."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                    "AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        return bool(found)
    finally:
        engine.dispose()


def finished(proc: subprocess.Popen[str]) -> tuple[float, str, dict[str, Any]]:
    """Seconds the engine took to exit from now, its stderr, and its result document."""
    started = time.monotonic()
    try:
        out, err = proc.communicate(timeout=PROMPT_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the engine hung for {PROMPT_SECONDS}s after the fault:\n{err}")
    return time.monotonic() - started, err, json.loads(out)


def engine(project: Project, url: str, *args: str) -> subprocess.Popen[str]:
    return revisor_process(*project.args(), "--database-url", url, "--output", "json", *args)


def rerun_converges(project: Project, url: str) -> None:
    """The next run marks the dead run interrupted, applies the rest, and leaves no lock."""
    rerun = engine(project, url, "upgrade", "--lock-timeout", "30")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert "marked 1 run(s) left by a stopped runner as interrupted" in err
    assert json.loads(out)["from"] == [FIRST]
    assert version(url) == {HEAD}
    runs = history_rows(url)
    assert [r["status"] for r in runs] == ["interrupted", "succeeded"]
    assert runs[0]["error"] == "the runner stopped before the run finished"
    steps = [(s["revision"], s["status"]) for s in history_rows(url, "step")]
    assert steps == [(FIRST, "applied"), (SECOND, "applied"), (HEAD, "applied")]
    assert advisory_locks(url) == []


def test_server_crash_inside_a_revision_ends_the_run_at_once_at_the_last_commit(
    url: str, server: PostgresCluster, tmp_path: Path
) -> None:
    """``pg_ctl stop -m immediate`` while revision 2 waits in the server: exit 6, at revision 1.

    Revision 2 has created its table and sits in ``pg_sleep`` when the server
    dies. The engine hears it at once (the server's socket closes), does not
    hang, does not try to roll back or write history (no session could), and
    exits 6 with a message that says where the database is. Restarted, the
    server has revision 1 and nothing of revision 2, holds no lock, and keeps
    the dead run's row ``running`` until the next run marks it interrupted and
    converges.
    """
    flag = tmp_path / "crash-here"
    flag.touch()
    project = make_project(
        tmp_path,
        second_revision(
            "op.create_table('t2', sa.Column('id', sa.Integer))\n"
            f"import os\nif os.path.exists({str(flag)!r}):\n"
            "    op.execute('SELECT pg_sleep(600)')"
        ),
    )
    proc = engine(project, url, "upgrade", "--on-failure", "rollback")
    wait_until(lambda: in_pg_sleep(url), "revision 2 to sit in pg_sleep", proc)
    assert version(url) == {FIRST}
    server.stop("immediate")
    seconds, err, result = finished(proc)
    flag.unlink()

    assert proc.returncode == 6, err
    assert seconds < PROMPT_SECONDS
    assert result["reason"] == "DatabaseUnreachable"
    assert result["to"] == [FIRST], "the result says where the database is"
    assert [s["revision"] for s in result["applied"]] == [FIRST]
    error = result["error"]
    assert error.startswith(f"lost the connection to the database during {SECOND} ")
    assert f"{SECOND}'s open transaction was lost" in error
    assert f"1 revision(s) of this run had committed: the database is at {FIRST}" in error
    assert "Nothing was rolled back" in error
    assert "rolling back" not in err, "no rollback is tried without the session"

    server.start()
    assert version(url) == {FIRST}
    assert "t2" not in tables(url), "revision 2's uncommitted DDL died with the server"
    assert advisory_locks(url) == []
    assert [r["status"] for r in history_rows(url)] == ["running"]
    assert [s["revision"] for s in history_rows(url, "step")] == [FIRST]
    rerun_converges(project, url)


@pytest.mark.parametrize(
    "where",
    ["between-revisions", "mid-revision"],
)
def test_server_restart_never_lets_the_run_go_on_without_its_lock(
    url: str, server: PostgresCluster, tmp_path: Path, where: str
) -> None:
    """The server restarts while the engine is between revisions (or inside one): it stops.

    Revision 2's upgrade() waits on a flag: before any SQL (``between-revisions``:
    revision 1 committed, the session idle, nothing open, as far as the
    server can tell), or after creating its table (``mid-revision``: a
    transaction open). The server restarts meanwhile, and another session takes
    the migration lock, as a second runner would the moment the server is
    back. Then the flag goes. The engine's next statement finds its session
    gone. It must stop there: before the fix it reconnected and went on, with
    ``--on-failure rollback`` downgrading revision 1 and writing history on a
    session that held no lock while the other one did. Now: exit 6, the
    database at revision 1, nothing written, the other session still the only
    lock holder; and the next run converges.
    """
    flag, entered = tmp_path / "hold", tmp_path / "entered"
    flag.touch()
    wait = (
        f"import os, pathlib\npathlib.Path({str(entered)!r}).touch()\n"
        f"while os.path.exists({str(flag)!r}):\n    time.sleep(0.05)\n"
    )
    table = "op.create_table('t2', sa.Column('id', sa.Integer))\n"
    upgrade = wait + table if where == "between-revisions" else table + wait
    project = make_project(tmp_path, second_revision(upgrade))
    proc = engine(project, url, "upgrade", "--on-failure", "rollback")
    wait_until(entered.exists, "revision 2 to start", proc)
    assert version(url) == {FIRST}

    server.stop("immediate")
    server.start()
    key = lock_key(resolve_database(url=url), schema=None, table="alembic_version")
    other = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with other.connect() as holder:
        holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key.value})
        holder.commit()
        holder_pid = holder.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        flag.unlink()
        seconds, err, result = finished(proc)

        assert proc.returncode == 6, err
        assert seconds < PROMPT_SECONDS
        assert result["reason"] == "DatabaseUnreachable"
        assert result["to"] == [FIRST]
        assert f"the database is at {FIRST}" in result["error"]
        assert "rolling back" not in err
        assert version(url) == {FIRST}, "revision 1 was not rolled back by a lockless session"
        assert "t1" in tables(url) and "t2" not in tables(url)
        assert advisory_locks(url) == [holder_pid], "the other session alone holds the lock"
        assert [r["status"] for r in history_rows(url)] == ["running"]
        assert [s["revision"] for s in history_rows(url, "step")] == [FIRST]
        holder.rollback()
    other.dispose()
    rerun_converges(project, url)


def test_a_runs_connection_once_lost_is_never_replaced(url: str) -> None:
    """SQLAlchemy would reconnect after a disconnect; a run's engine refuses: the lock went.

    The engine's session is ended from outside (``pg_terminate_backend``, as a
    restart would). Its next statement fails as a disconnect; after the
    rollback SQLAlchemy would open a new connection for the one after, which
    for a run means a session without the advisory lock. The run's engine
    refuses that connection with an error that says why, and the server never
    sees a second session from it.
    """
    from revisor.connection import SESSION_LOST, run_with_connection

    seen: list[str] = []

    def work(conn: sa.Connection) -> None:
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        conn.commit()
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as other:
            other.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        engine.dispose()
        with pytest.raises(sa.exc.OperationalError):
            conn.execute(sa.text("SELECT 1"))
        assert conn.invalidated
        conn.rollback()
        before = connections(url)
        with pytest.raises(sa.exc.OperationalError) as refused:
            conn.execute(sa.text("SELECT 1"))
        seen.append(str(refused.value.orig))
        assert connections(url) == before, "no new session was opened"

    run_with_connection(resolve_database(url=url), work)
    assert seen == [SESSION_LOST]


def test_soak_30_alternating_runs_leak_no_connection_and_no_lock(url: str, tmp_path: Path) -> None:
    """30 CLI runs, upgrade head and downgrade base in turn: no session and no lock left behind.

    The short version of ``bench/soak.py`` (300 runs, each in its own process,
    with the RSS trend). Here the runs go through the CLI's entry point in
    this process, which goes on between them: a connection a run failed to
    close would still be open, where a process of its own would have closed it
    on exit. After every run the database has exactly the sessions it had
    before the first, and the server no advisory lock; every run succeeded
    and is recorded.
    """
    report = soak(url, tmp_path, runs=30, in_process=True)
    assert report.failures == [], report.failures
    assert report.runs == 30
    assert report.max_connections_between_runs == report.connections_before, report
    assert report.connections_after == report.connections_before, report
    assert report.locks_left == 0, report
    assert [r["status"] for r in history_rows(url)] == ["succeeded"] * 30
    assert version(url) == set(), "30 runs: the last one went down to base"
    assert connections(url) == report.connections_before
