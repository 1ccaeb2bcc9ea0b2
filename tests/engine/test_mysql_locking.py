"""The MySQL/MariaDB run lock: ``GET_LOCK`` on the migration connection, polled.

Concurrent runners serialise on it; a waiter holds no transaction and no
metadata lock while it waits (so the holder's DDL never queues behind it);
a killed runner's lock is freed by the server at once; a lock held too long
is exit 3 naming the session that holds it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pymysql
import pytest
from revisor.connection import resolve_database
from revisor.dialects import LockKey, lock_key
from revisor.dialects.mysql import LOCK_NAME_LIMIT, lock_name
from sqlalchemy.engine import make_url

from tests.engine.conftest import history_rows, tables, version
from tests.engine.test_locking import slow_chain
from tests.support.mariadb import MariaDBServer
from tests.support.projects import Rev, chain, make_project, revisor_process


def test_a_lock_name_is_kept_when_it_fits_and_hashed_when_it_does_not() -> None:
    """MySQL refuses names over 64 characters; two long names must still differ."""
    short = LockKey(name="revisor:shop::alembic_version", value=0)
    assert lock_name(short) == "revisor:shop::alembic_version"
    long_a = LockKey(name="revisor:" + "d" * 60 + ":a:alembic_version", value=0)
    long_b = LockKey(name="revisor:" + "d" * 60 + ":b:alembic_version", value=0)
    assert len(lock_name(long_a)) == LOCK_NAME_LIMIT == len(lock_name(long_b))
    assert lock_name(long_a) != lock_name(long_b)
    assert lock_name(long_a).startswith("revisor:ddd") and lock_name(long_a) == lock_name(long_a)


def _lock_of(url: str, table: str = "alembic_version") -> str:
    return lock_name(lock_key(resolve_database(url=url), schema=None, table=table))


def _session(server: MariaDBServer, database: str | None = None) -> pymysql.Connection:
    return server.connect(database)


def _one(conn: pymysql.Connection, sql: str, *args: object) -> object:
    with conn.cursor() as cur:
        cur.execute(sql, args or None)
        row = cur.fetchone()
        return None if row is None else row[0]


pytestmark = [pytest.mark.mariadb]


@pytest.mark.slow
def test_concurrent_runners_exactly_one_applies_while_the_others_wait_for_its_lock(
    mysql_url: str, tmp_path: Path
) -> None:
    """Five processes race on one database: one migrates, four wait, find nothing, exit 0.

    As on PostgreSQL and SQLite (test_locking.py): the winner's second
    revision holds until every other runner has said it waits for the lock,
    each naming the winner's connection.
    """
    flag = tmp_path / "hold"
    flag.touch()
    project = make_project(tmp_path, slow_chain(flag))
    argv = [sys.executable, "-m", "revisor", *project.args(), "--database-url", mysql_url]
    argv += ["--output", "json", "upgrade", "--lock-timeout", "600"]
    logs = [tmp_path / f"runner-{i}.log" for i in range(5)]
    procs = []
    for log in logs:
        with log.open("w") as stderr:
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True))

    def waiting() -> list[Path]:
        return [log for log in logs if "for the lock" in log.read_text()]

    deadline = time.monotonic() + 240  # a hang guard for a loaded machine, not a measurement
    while len(waiting()) < 4:
        assert time.monotonic() < deadline, [log.read_text() for log in logs]
        assert all(p.poll() is None for p in procs), "a runner finished while the winner held"
        time.sleep(0.1)
    flag.unlink()
    results = [json.loads(p.communicate(timeout=240)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0] * 5, [log.read_text() for log in logs]
    winners = [i for i, r in enumerate(results) if r["applied"]]
    assert len(winners) == 1 and len(results[winners[0]]["applied"]) == 3
    assert waiting() == [log for i, log in enumerate(logs) if i not in winners]
    for i, result in enumerate(results):
        if i not in winners:
            text = logs[i].read_text()
            assert result["from"] == ["0003t0000000"], "planned only after the winner's commit"
            assert "nothing to do" in text
            assert f"the lock {_lock_of(mysql_url)} (held by connection " in text
    assert version(mysql_url) == {"0003t0000000"}
    runs = history_rows(mysql_url)
    assert len(runs) == 1 and runs[0]["status"] == "succeeded"


def test_lock_timeout_is_exit_3_and_names_the_holder(
    revisor, mariadb_server: MariaDBServer, mysql_url: str, tmp_path: Path
) -> None:
    project = make_project(tmp_path, chain(1))
    args = (*project.args(), "--database-url", mysql_url, "--output", "json", "upgrade")
    name = _lock_of(mysql_url)
    with _session(mariadb_server) as holder:
        assert _one(holder, "SELECT GET_LOCK(%s, 0)", name) == 1
        holder_id = _one(holder, "SELECT CONNECTION_ID()")
        started = time.monotonic()
        run = revisor(*args, "--lock-timeout", "0.5")
        waited = time.monotonic() - started
        tried = revisor(*args, "--lock-timeout", "0")
    assert run.code == 3
    assert run.result["reason"] == "LockTimeout"
    assert f"another migration holds the lock {name} (held by connection {holder_id} (" in run.err
    assert f"{mariadb_server.user}@127.0.0.1:" in run.err and "gave up after 0.5s" in run.err
    assert "waiting for up to 0.5s for the lock" in run.err
    assert 0.4 < waited < 10
    assert tried.code == 3 and "waiting" not in tried.err, "0 tries once, without waiting"
    assert version(mysql_url) == set()
    assert "revisor_history" not in tables(mysql_url), (
        "a run that never held the lock writes nothing"
    )


def test_the_lock_of_another_database_on_the_same_server_is_not_this_ones(
    revisor, mariadb_server: MariaDBServer, mysql_url: str, tmp_path: Path
) -> None:
    """Lock names are server-wide; the database in the name keeps tenants apart."""
    other = mariadb_server.create_database()
    try:
        project = make_project(tmp_path, chain(1))
        with _session(mariadb_server) as holder:
            assert _one(holder, "SELECT GET_LOCK(%s, 0)", _lock_of(mariadb_server.url(other))) == 1
            run = revisor(
                *project.args(), "--database-url", mysql_url, "upgrade", "--lock-timeout", "0"
            )
        assert run.code == 0, run.err
    finally:
        mariadb_server.drop_database(other)


@pytest.mark.slow
def test_a_killed_runner_frees_the_lock_at_once_and_leaves_its_committed_ddl(
    mariadb_server: MariaDBServer, mysql_url: str, tmp_path: Path
) -> None:
    """SIGKILL inside revision 2: the lock is free at once, the version at revision 1.

    Unlike PostgreSQL, revision 2's CREATE TABLE stays: MariaDB committed it
    as it ran, and a killed runner cannot record that. The next run marks
    the killed one interrupted and trips over the table; once a person
    drops it, a run converges.
    """
    flag = tmp_path / "hold"
    flag.touch()
    project = make_project(tmp_path, slow_chain(flag))
    args = (*project.args(), "--database-url", mysql_url)
    proc = revisor_process(*args, "upgrade", start_new_session=True)
    deadline = time.monotonic() + 60
    while version(mysql_url) != {"0001t0000000"} or "t2" not in tables(mysql_url):
        assert time.monotonic() < deadline, "revision 2 never started"
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    name = _lock_of(mysql_url)
    with _session(mariadb_server) as probe:
        assert _one(probe, "SELECT IS_USED_LOCK(%s)", name) is not None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        started = time.monotonic()
        while _one(probe, "SELECT IS_FREE_LOCK(%s)", name) != 1:
            assert time.monotonic() - started < 5, "the server kept a dead runner's lock"
            time.sleep(0.01)
    assert version(mysql_url) == {"0001t0000000"}
    assert "t2" in tables(mysql_url), "committed as it ran: no transactional DDL"
    flag.unlink()
    again = revisor_process(*args, "--output", "json", "upgrade", "--lock-timeout", "0")
    out, err = again.communicate(timeout=60)
    assert again.returncode == 4, err
    assert "Table 't2' already exists" in json.loads(out)["error"]
    assert "marked 1 run(s) left by a stopped runner as interrupted" in err
    with _session(mariadb_server, make_url(mysql_url).database) as person:
        _one(person, "DROP TABLE t2")
    rerun = revisor_process(*args, "upgrade", "--lock-timeout", "0")
    _, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    assert version(mysql_url) == {"0003t0000000"}
    assert [r["status"] for r in history_rows(mysql_url)] == ["interrupted", "failed", "succeeded"]


def ddl_while_waited_for(flag: Path, second: Path, done: Path) -> list[Rev]:
    """Revision 2 waits for ``flag``, runs DDL on the tables a runner reads, then for ``second``."""
    return [
        *chain(1),
        Rev(
            id="0002w0000000",
            down="0001t0000000",
            message="ddl while another runner waits",
            upgrade=f"""
                import os
                from pathlib import Path
                while os.path.exists({str(flag)!r}):
                    time.sleep(0.05)
                op.add_column('t1', sa.Column('note', sa.Text))
                op.execute("ALTER TABLE alembic_version COMMENT 'checked'")
                op.execute("ALTER TABLE revisor_history COMMENT 'checked'")
                Path({str(done)!r}).touch()
                while os.path.exists({str(second)!r}):
                    time.sleep(0.05)
            """,
            downgrade="op.drop_column('t1', 'note')",
        ),
    ]


@pytest.mark.slow
def test_a_waiting_runner_holds_no_transaction_and_no_metadata_lock(
    mariadb_server: MariaDBServer, mysql_url: str, tmp_path: Path
) -> None:
    """While a waiter waits, the holder's DDL on the tables a runner reads goes through.

    The holder gives its DDL 5 s (--ddl-lock-timeout): a waiter that had read
    alembic_version or revisor_history inside a transaction would hold their
    metadata locks, and the ALTERs would fail. Sampled meanwhile, the
    waiter's session is never inside GET_LOCK ("User lock"), never waiting
    for a metadata lock, and has no InnoDB transaction.
    """
    flag, second, done = tmp_path / "hold", tmp_path / "hold-2", tmp_path / "ddl-done"
    flag.touch()
    second.touch()
    project = make_project(tmp_path, ddl_while_waited_for(flag, second, done))
    base = [sys.executable, "-m", "revisor", *project.args(), "--database-url", mysql_url]
    logs = [tmp_path / "holder.log", tmp_path / "waiter.log"]
    argv = [*base, "upgrade", "--lock-timeout", "600", "--ddl-lock-timeout", "5"]
    procs = []
    with logs[0].open("w") as stderr:
        procs.append(subprocess.Popen(argv, stderr=stderr, text=True))
    deadline = time.monotonic() + 120
    while version(mysql_url) != {"0001t0000000"}:
        assert time.monotonic() < deadline and procs[0].poll() is None, logs[0].read_text()
        time.sleep(0.05)
    with logs[1].open("w") as stderr:
        procs.append(subprocess.Popen(argv, stderr=stderr, text=True))
    while "for the lock" not in logs[1].read_text():
        assert time.monotonic() < deadline and procs[1].poll() is None, logs[1].read_text()
        time.sleep(0.05)
    database = make_url(mysql_url).database
    samples = []
    with _session(mariadb_server) as probe, probe.cursor() as cur:
        holder = _one(probe, "SELECT IS_USED_LOCK(%s)", _lock_of(mysql_url))

        def sample() -> None:
            cur.execute(
                "SELECT p.COMMAND, p.STATE, x.trx_id FROM information_schema.PROCESSLIST p "
                "LEFT JOIN information_schema.INNODB_TRX x ON x.trx_mysql_thread_id = p.ID "
                "WHERE p.DB = %s AND p.ID NOT IN (%s, CONNECTION_ID())",
                (database, holder),
            )
            samples.extend(cur.fetchall())
            time.sleep(0.02)

        until = time.monotonic() + 1.0  # across several of the waiter's tries
        while time.monotonic() < until:
            sample()
        flag.unlink()  # the holder's DDL starts while the waiter waits
        while not done.exists():
            assert time.monotonic() < deadline and procs[0].poll() is None, logs[0].read_text()
            sample()
        assert procs[1].poll() is None and "nothing to do" not in logs[1].read_text()
    second.unlink()
    for proc in procs:
        proc.wait(timeout=120)
    assert [p.returncode for p in procs] == [0, 0], [log.read_text() for log in logs]
    assert "nothing to do" in logs[1].read_text()
    assert len(samples) >= 20, "the waiter's session was seen, many times"
    assert {trx for _, _, trx in samples} == {None}, samples
    assert not [s for s in samples if "metadata lock" in (s[1] or "")], samples
    # A try is a moment: sampled, the waiter sleeps idle, never inside GET_LOCK.
    idle = [s for s in samples if s[:2] == ("Sleep", "")]
    assert len(idle) >= 0.9 * len(samples), samples
    assert version(mysql_url) == {"0002w0000000"}
