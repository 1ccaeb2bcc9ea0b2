"""The throwaway MariaDB server works, and what MariaDB's named locks really do.

The first half proves the fixtures (tests/support/mariadb.py): every driver
the engine installs connects, each test gets its own empty database, the app
user logs in over loopback (no anonymous account in the way), and the server
is Debian's MariaDB 10.11. The second half pins down GET_LOCK's behaviour as
measured on that server, the facts a MariaDB/MySQL run lock builds on.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeAlias

import pymysql
import pymysql.cursors
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support import mariadb
from tests.support.mariadb import MariaDBServer

pytestmark = pytest.mark.mariadb

Conn: TypeAlias = "pymysql.Connection[pymysql.cursors.Cursor]"

EXTERNAL = bool(os.environ.get("REVISOR_TEST_MYSQL_URL"))


def _roundtrip(url: str) -> tuple[str, list[tuple[int, str]]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE things (id INT PRIMARY KEY, name VARCHAR(20))"))
            conn.execute(sa.text("INSERT INTO things VALUES (1, 'ü-one'), (2, 'two')"))
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, name FROM things ORDER BY id")).all()
            assert sa.inspect(conn).get_table_names() == ["things"]
        return engine.dialect.name, [tuple(r) for r in rows]
    finally:
        engine.dispose()


@pytest.mark.parametrize("driver", ["mysql+pymysql", "mariadb+pymysql"])
def test_sqlalchemy_creates_a_table_in_a_fresh_database(mysql_url: str, driver: str) -> None:
    url = make_url(mysql_url).set(drivername=driver).render_as_string(hide_password=False)
    dialect, rows = _roundtrip(url)
    assert dialect == driver.partition("+")[0]
    assert rows == [(1, "ü-one"), (2, "two")]


def test_the_async_engine_connects_with_aiomysql(mysql_url: str) -> None:
    url = make_url(mysql_url).set(drivername="mysql+aiomysql")

    async def run() -> tuple[str, list[tuple[int, str]]]:
        engine = create_async_engine(url, poolclass=sa.pool.NullPool)
        try:
            async with engine.begin() as conn:
                await conn.execute(sa.text("CREATE TABLE things (id INT PRIMARY KEY, name TEXT)"))
                await conn.execute(sa.text("INSERT INTO things VALUES (1, 'one')"))
            async with engine.connect() as conn:
                version = (await conn.execute(sa.text("SELECT VERSION()"))).scalar_one()
                rows = (await conn.execute(sa.text("SELECT id, name FROM things"))).all()
                tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            assert tables == ["things"]
            return version, [tuple(r) for r in rows]
        finally:
            await engine.dispose()

    version, rows = asyncio.run(run())
    assert "MariaDB" in version
    assert rows == [(1, "one")]


_seen: dict[int, str] = {}


@pytest.mark.parametrize("n", [0, 1])
def test_each_test_gets_its_own_empty_database(
    mysql_url: str, mariadb_server: MariaDBServer, n: int
) -> None:
    """Run twice; each run sees an empty database the other never touched, then dropped."""
    name = make_url(mysql_url).database
    assert name
    with mariadb_server.connect(name) as conn, conn.cursor() as cur:
        cur.execute("SHOW TABLES")
        assert cur.fetchall() == ()
        cur.execute("CREATE TABLE marker (n INT)")
        cur.execute("SHOW DATABASES")
        databases = {row[0] for row in cur.fetchall()}
    for other_n, other in _seen.items():
        assert other != name, f"test {other_n} had the same database"
        assert other not in databases, f"test {other_n}'s database was not dropped"
    _seen[n] = name


def test_the_app_user_logs_in_over_loopback_and_no_anonymous_account_exists(
    mariadb_server: MariaDBServer,
) -> None:
    with mariadb_server.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER(), USER()")
        current, user = cur.fetchone()
        assert current.split("@")[0] == mariadb_server.user
        assert user.startswith(f"{mariadb_server.user}@")
        cur.execute("SELECT User, Host FROM mysql.user WHERE User = ''")
        assert cur.fetchall() == ()
    with pytest.raises(pymysql.err.OperationalError, match="Access denied"):
        pymysql.connect(
            host=mariadb_server.host,
            port=mariadb_server.port,
            user=mariadb_server.user,
            password="wrong",
        )


def test_the_server_is_mariadb_10_11(mariadb_server: MariaDBServer) -> None:
    engine = sa.create_engine(mariadb_server.url("mysql"), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            version = conn.execute(sa.text("SELECT VERSION()")).scalar_one()
            charset = conn.execute(sa.text("SELECT @@character_set_server")).scalar_one()
        assert engine.dialect.is_mariadb  # type: ignore[attr-defined]
    finally:
        engine.dispose()
    assert "MariaDB" in version
    if not EXTERNAL:
        assert version.startswith("10.11."), version
        assert charset == "utf8mb4"


def test_missing_binaries_say_how_to_get_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("REVISOR_TEST_MYSQL_URL", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(mariadb, "SEARCH_DIRS", ())
    with (
        pytest.raises(RuntimeError, match=r"run scripts/ensure-mariadb\.sh"),
        mariadb.throwaway_mariadb(),
    ):
        pass


# What GET_LOCK does: the facts a MariaDB run lock is built on. Lock names are
# server-wide (not per database), so each test uses a fresh one.


@pytest.fixture
def lock_name() -> str:
    return f"revisor-test:{uuid.uuid4().hex}"


@pytest.fixture
def sessions(mariadb_server: MariaDBServer) -> Iterator[list[Conn]]:
    """Two independent sessions (connections) as the app user."""
    conns = [mariadb_server.connect(), mariadb_server.connect()]
    yield conns
    for conn in conns:
        conn.close()


def _one(conn: Conn, sql: str, *args: object) -> object:
    with conn.cursor() as cur:
        cur.execute(sql, args or None)
        row = cur.fetchone()
        assert row is not None
        return row[0]


def test_get_lock_blocks_a_second_session_which_gets_0_after_its_timeout(
    sessions: list[Conn],
    lock_name: str,
) -> None:
    a, b = sessions
    assert _one(a, "SELECT GET_LOCK(%s, 0)", lock_name) == 1
    start = time.monotonic()
    assert _one(b, "SELECT GET_LOCK(%s, 1)", lock_name) == 0
    waited = time.monotonic() - start
    assert 0.9 <= waited < 5, waited
    # Fractional timeouts are honoured too.
    start = time.monotonic()
    assert _one(b, "SELECT GET_LOCK(%s, 0.3)", lock_name) == 0
    assert 0.25 <= time.monotonic() - start < 1.5
    assert _one(b, "SELECT IS_USED_LOCK(%s)", lock_name) == _one(a, "SELECT CONNECTION_ID()")
    assert _one(b, "SELECT IS_FREE_LOCK(%s)", lock_name) == 0
    # Only the holder can release; releasing someone else's lock says 0.
    assert _one(b, "SELECT RELEASE_LOCK(%s)", lock_name) == 0
    assert _one(a, "SELECT RELEASE_LOCK(%s)", lock_name) == 1
    assert _one(b, "SELECT IS_USED_LOCK(%s)", lock_name) is None
    assert _one(b, "SELECT RELEASE_LOCK(%s)", lock_name) is None  # nobody holds it
    assert _one(b, "SELECT GET_LOCK(%s, 0)", lock_name) == 1


def test_a_waiting_get_lock_gets_the_lock_as_soon_as_it_is_released(
    sessions: list[Conn],
    lock_name: str,
) -> None:
    a, b = sessions
    assert _one(a, "SELECT GET_LOCK(%s, 0)", lock_name) == 1
    timer = threading.Timer(0.5, lambda: _one(a, "SELECT RELEASE_LOCK(%s)", lock_name))
    timer.start()
    start = time.monotonic()
    assert _one(b, "SELECT GET_LOCK(%s, 3600)", lock_name) == 1
    assert 0.4 <= time.monotonic() - start < 5
    timer.join()


def test_a_negative_or_null_timeout_is_no_wait_for_ever_but_null_at_once(
    sessions: list[Conn],
    lock_name: str,
) -> None:
    """Unlike MySQL 5.7+ (where a negative timeout waits for ever), MariaDB says NULL.

    Even on a free lock: warning 1411, "Incorrect timeout value". Waiting
    "for ever" takes a large timeout instead.
    """
    a, b = sessions
    for timeout in (-1, None):
        assert _one(b, "SELECT GET_LOCK(%s, %s)", lock_name, timeout) is None
        with b.cursor() as cur:
            cur.execute("SHOW WARNINGS")
            assert [row[1] for row in cur.fetchall()] == [1411]
    assert _one(a, "SELECT GET_LOCK(%s, 0)", lock_name) == 1  # nobody took it
    start = time.monotonic()
    assert _one(b, "SELECT GET_LOCK(%s, -1)", lock_name) is None
    assert time.monotonic() - start < 0.5


def test_get_lock_is_reentrant_per_session_and_outlives_transactions(
    sessions: list[Conn],
    lock_name: str,
) -> None:
    a, b = sessions
    a_id = _one(a, "SELECT CONNECTION_ID()")
    assert _one(a, "SELECT GET_LOCK(%s, 0)", lock_name) == 1
    assert _one(a, "SELECT GET_LOCK(%s, 0)", lock_name) == 1  # again: a second hold
    a.begin()
    a.rollback()
    a.begin()
    a.commit()
    assert _one(b, "SELECT IS_USED_LOCK(%s)", lock_name) == a_id
    assert _one(a, "SELECT RELEASE_LOCK(%s)", lock_name) == 1
    assert _one(b, "SELECT IS_USED_LOCK(%s)", lock_name) == a_id  # one hold left
    assert _one(a, "SELECT RELEASE_LOCK(%s)", lock_name) == 1
    assert _one(b, "SELECT IS_USED_LOCK(%s)", lock_name) is None


def test_lock_names_are_server_wide_not_per_database(
    mariadb_server: MariaDBServer, lock_name: str
) -> None:
    one, two = mariadb_server.create_database(), mariadb_server.create_database()
    try:
        with mariadb_server.connect(one) as a, mariadb_server.connect(two) as b:
            assert _one(a, "SELECT GET_LOCK(%s, 0)", lock_name) == 1
            assert _one(b, "SELECT GET_LOCK(%s, 0)", lock_name) == 0
    finally:
        mariadb_server.drop_database(one)
        mariadb_server.drop_database(two)


def test_lock_names_longer_than_64_characters_are_accepted(
    sessions: list[Conn],
) -> None:
    """MySQL 5.7+ rejects names over 64 characters; MariaDB 10.11 takes them."""
    a, b = sessions
    name = "revisor:" + "d" * 64 + ":" + "s" * 64 + ":alembic_version"
    assert _one(a, "SELECT GET_LOCK(%s, 0)", name) == 1
    assert _one(b, "SELECT IS_USED_LOCK(%s)", name) == _one(a, "SELECT CONNECTION_ID()")
    assert _one(a, "SELECT RELEASE_LOCK(%s)", name) == 1


HOLDER = textwrap.dedent(
    """
    import sys, time, pymysql
    host, port, user, password, name = sys.argv[1:]
    conn = pymysql.connect(host=host, port=int(port), user=user, password=password)
    with conn.cursor() as cur:
        cur.execute("SELECT GET_LOCK(%s, 0), CONNECTION_ID()", (name,))
        got, conn_id = cur.fetchone()
    print(got, conn_id, flush=True)
    time.sleep(600)
    """
)


def _wait_until_free(conn: Conn, name: str, within: float) -> float:
    start = time.monotonic()
    while _one(conn, "SELECT IS_FREE_LOCK(%s)", name) != 1:
        assert time.monotonic() - start < within, f"{name} still held after {within} s"
        time.sleep(0.01)
    return time.monotonic() - start


def test_killing_the_holders_process_frees_its_lock(
    mariadb_server: MariaDBServer,
    sessions: list[Conn],
    lock_name: str,
) -> None:
    _, b = sessions
    server = mariadb_server
    argv = [sys.executable, "-c", HOLDER, server.host, str(server.port), server.user]
    with subprocess.Popen(
        [*argv, server.password, lock_name], stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None
            got, conn_id = holder.stdout.readline().split()
            assert got == "1"
            assert _one(b, "SELECT IS_USED_LOCK(%s)", lock_name) == int(conn_id)
            assert _one(b, "SELECT GET_LOCK(%s, 0)", lock_name) == 0
            holder.send_signal(signal.SIGKILL)
            holder.wait()
            # The kernel closes the dead process's socket; the server ends that
            # session and its locks go with it, at once.
            _wait_until_free(b, lock_name, within=5)
            assert _one(b, "SELECT GET_LOCK(%s, 5)", lock_name) == 1
        finally:
            holder.kill()  # a no-op once it is dead


def test_kill_connection_frees_the_lock_of_the_killed_session(
    sessions: list[Conn],
    lock_name: str,
) -> None:
    a, b = sessions
    assert _one(a, "SELECT GET_LOCK(%s, 0)", lock_name) == 1
    with b.cursor() as cur:
        cur.execute("KILL CONNECTION %s", (_one(a, "SELECT CONNECTION_ID()"),))
    _wait_until_free(b, lock_name, within=5)


def test_an_idle_session_past_wait_timeout_is_dropped_and_loses_its_lock(
    sessions: list[Conn],
    lock_name: str,
) -> None:
    """A lock held on an otherwise idle connection lasts only as long as wait_timeout."""
    a, b = sessions
    with a.cursor() as cur:
        cur.execute("SET SESSION wait_timeout = 1")
    assert _one(a, "SELECT GET_LOCK(%s, 0)", lock_name) == 1
    _wait_until_free(b, lock_name, within=15)
    with pytest.raises(pymysql.err.OperationalError):
        _one(a, "SELECT 1")
