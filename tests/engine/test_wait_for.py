"""``revisor wait-for``: an app's init container waits until its schema is there.

Real databases throughout: it returns at once when the database is at (or
past) the awaited revision, waits while a migration runs, gives up with exit
9 saying where the database is, keeps trying a database that cannot be
reached yet (exit 6 if it never can), and never takes the migration lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from revisor.connection import resolve_database
from revisor.dialects import lock_key

from tests.engine.conftest import history_rows, version
from tests.support.postgres import PostgresServer, free_port
from tests.support.projects import chain, make_project

HEADS = "0002t0000000"


def started(args: list[str], log: Path) -> subprocess.Popen[str]:
    with log.open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "revisor", *args], stdout=subprocess.PIPE, stderr=err, text=True
        )


def wait_for_line(log: Path, text: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120  # a hang guard for a loaded machine, not a measurement
    while text not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        assert proc.poll() is None, log.read_text()
        time.sleep(0.05)


def test_at_the_heads_it_returns_at_once_and_writes_nothing(
    revisor, any_db_url, tmp_path: Path
) -> None:
    project = make_project(tmp_path, chain(2))
    args = [*project.args(), "--database-url", any_db_url]
    assert revisor(*args, "upgrade").code == 0
    runs = history_rows(any_db_url)
    run = revisor(*args, "--output", "json", "wait-for")
    assert run.code == 0, run.err
    assert run.result["reason"] == "AtRevision"
    assert run.result["to"] == [HEADS] and run.result["target"] == "heads"
    assert run.result["details"]["awaited"] == [HEADS]
    assert run.err == "", "nothing to say when there is nothing to wait for"
    text = revisor(*args, "wait-for")
    assert text.out.startswith(f"at {HEADS} (waited ") and text.out.endswith("s for heads)\n")
    assert history_rows(any_db_url) == runs, "no run recorded, nothing written"


def test_it_waits_while_the_database_is_migrated(revisor, db_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(2))
    args = [*project.args(), "--database-url", db_url]
    log = tmp_path / "wait.log"
    waiter = started([*args, "--output", "json", "wait-for", "--timeout", "300"], log)
    wait_for_line(log, "waiting up to 300s for the database to reach", waiter)
    assert f"to reach {HEADS} (or a later revision); it is at base" in log.read_text()
    assert revisor(*args, "upgrade", "0001").code == 0
    wait_for_line(log, "the database is at 0001t0000000 now", waiter)
    assert revisor(*args, "upgrade").code == 0
    out, _ = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, log.read_text()
    result = json.loads(out)
    assert result["from"] == [] and result["to"] == [HEADS]
    assert log.read_text().count("waiting up to") == 1, "said once"


def test_a_timeout_is_exit_9_saying_where_the_database_is(
    revisor, any_db_url, tmp_path: Path
) -> None:
    project = make_project(tmp_path, chain(2))
    args = [*project.args(), "--database-url", any_db_url, "--output", "json"]
    assert revisor(*args, "upgrade", "0001").code == 0
    started_at = time.monotonic()
    run = revisor(*args, "wait-for", "--timeout", "1")
    assert 0.9 < time.monotonic() - started_at < 60
    assert run.code == 9
    assert run.result["reason"] == "WaitTimeout" and run.result["exitCode"] == 9
    assert run.result["error"].startswith(
        f"the database did not reach {HEADS} within 1s: it is at 0001t0000000\nhint: "
    )
    assert run.result["to"] == ["0001t0000000"] and run.result["details"]["awaited"] == [HEADS]
    assert "waiting up to 1s for the database to reach" in run.err
    once = revisor(*args, "wait-for", "--timeout", "0")
    assert once.code == 9 and "waiting" not in once.err, "0 looks once and does not wait"
    assert version(any_db_url) == {"0001t0000000"}


def test_at_or_past_a_revision_by_the_scripts_graph(revisor, db_url, tmp_path: Path) -> None:
    """An app built at X starts on a database at X or later; not on one before X."""
    project = make_project(tmp_path, chain(3))
    args = [*project.args(), "--database-url", db_url, "--output", "json"]
    assert revisor(*args, "upgrade", "0002").code == 0
    for awaited in ("0001t0000000", "0002", "0002t0000000"):
        run = revisor(*args, "wait-for", "--revision", awaited, "--timeout", "0")
        assert run.code == 0, (awaited, run.err)
        assert run.result["target"] == awaited
    for awaited in ("0003t0000000", "heads", "head"):
        run = revisor(*args, "wait-for", "--revision", awaited, "--timeout", "0")
        assert run.code == 9, awaited
        assert run.result["details"]["awaited"] == ["0003t0000000"]


def test_a_revision_these_scripts_do_not_have_is_not_taken_for_later(
    revisor, db_url, tmp_path: Path
) -> None:
    """A newer release migrated the database; the graph of older scripts cannot place it."""
    newer = make_project(tmp_path / "newer", chain(3))
    assert revisor(*newer.args(), "--database-url", db_url, "upgrade").code == 0
    older = make_project(tmp_path / "older", chain(2))
    run = revisor(
        *older.args(), "--database-url", db_url, "--output", "json", "wait-for", "--timeout", "0.5"
    )
    assert run.code == 9
    assert "it is at 0003t0000000 (0003t0000000 is not in these scripts" in run.result["error"]
    assert run.err.count("is not in these scripts") == 2, "said once, and in the error"


@pytest.mark.parametrize(
    ("revision", "said"),
    [
        ("ffff", "wait-for --revision ffff: No such revision or branch 'ffff'"),
        ("-1", "wait-for --revision '-1': name a revision"),
        ("base", "wait-for --revision 'base': name a revision"),
    ],
)
def test_a_bad_revision_is_exit_2(revisor, tmp_path: Path, revision: str, said: str) -> None:
    project = make_project(tmp_path, chain(2))
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    run = revisor(
        *project.args(), "--database-url", url, "--output", "json", "wait-for",
        f"--revision={revision}",
    )  # fmt: skip
    assert run.code == 2
    assert run.result["reason"] == "InvalidTarget"
    assert said in run.result["error"]


def test_it_takes_no_lock_sqlite(revisor, tmp_path: Path) -> None:
    """A waiter while a runner holds the migration lock: it reads, and is done."""
    project = make_project(tmp_path, chain(2))
    db = tmp_path / "app.db"
    args = [*project.args(), "--database-url", f"sqlite:///{db}"]
    assert revisor(*args, "upgrade").code == 0
    with (tmp_path / "app.db.revisor-lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        run = revisor(*args, "wait-for", "--timeout", "0")
    assert run.code == 0, run.err


@pytest.mark.postgres
def test_it_takes_no_lock_postgres(revisor, pg_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(2))
    args = [*project.args(), "--database-url", pg_url]
    assert revisor(*args, "upgrade").code == 0
    key = lock_key(resolve_database(url=pg_url), schema=None, table="alembic_version")
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.connect() as holder:
        holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key.value})
        holder.commit()
        run = revisor(*args, "wait-for", "--timeout", "0")
    engine.dispose()
    assert run.code == 0, run.err


class Doorway:
    """A local port that refuses connections until :meth:`open`, then forwards to a server.

    Stands for a database that is not up yet (its Service has no endpoint,
    the server is starting): a connection is refused, as then.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []

    def open(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        self._listener = listener
        self._spawn(self._accept, listener)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept(self, listener: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                server = socket.create_connection(self.target)
                self._sockets += [client, server]
                self._spawn(self._pump, client, server)
                self._spawn(self._pump, server, client)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Refuse new connections and cut the open ones, as a server that went away."""
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone
            # would leave the port taking connections that nobody serves.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._sockets.clear()


@pytest.fixture
def doorway(postgres_server: PostgresServer) -> Iterator[Doorway]:
    door = Doorway(postgres_server.host, postgres_server.port)
    yield door
    door.close()


@pytest.mark.postgres
def test_a_database_unreachable_at_first_is_waited_for(
    revisor, pg_url, doorway: Doorway, tmp_path: Path
) -> None:
    project = make_project(tmp_path, chain(2))
    assert revisor(*project.args(), "--database-url", pg_url, "upgrade").code == 0
    url = sa.engine.make_url(pg_url).set(port=doorway.port).render_as_string(hide_password=False)
    log = tmp_path / "wait.log"
    waiter = started(
        [
            *project.args(),
            "--database-url",
            url,
            "--output",
            "json",
            "wait-for",
            "--timeout",
            "300",
        ],
        log,
    )
    wait_for_line(log, "; retrying for up to 300s", waiter)
    assert "cannot connect to postgresql+psycopg://revisor:***@127.0.0.1:" in log.read_text()
    doorway.open()
    out, _ = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, log.read_text()
    assert json.loads(out)["to"] == [HEADS]
    assert log.read_text().count("retrying") == 1, "said once"


@pytest.mark.postgres
def test_a_connection_lost_while_waiting_is_opened_again(
    revisor, pg_url, doorway: Doorway, tmp_path: Path
) -> None:
    project = make_project(tmp_path, chain(2))
    assert revisor(*project.args(), "--database-url", pg_url, "upgrade", "0001").code == 0
    url = sa.engine.make_url(pg_url).set(port=doorway.port).render_as_string(hide_password=False)
    doorway.open()
    log = tmp_path / "wait.log"
    waiter = started([*project.args(), "--database-url", url, "wait-for", "--timeout", "300"], log)
    wait_for_line(log, "waiting up to 300s for the database to reach", waiter)
    doorway.close()
    wait_for_line(log, "; retrying for up to 300s", waiter)
    assert "lost the connection to the database (" in log.read_text()
    doorway.open()
    assert revisor(*project.args(), "--database-url", pg_url, "upgrade").code == 0
    out, _ = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, log.read_text()
    assert out.startswith(f"at {HEADS} (waited ")


def test_a_sqlite_file_that_cannot_be_opened_yet_is_waited_for(revisor, tmp_path: Path) -> None:
    """The volume is not mounted yet: then it is, and then it is migrated."""
    project = make_project(tmp_path, chain(2))
    url = f"sqlite:///{tmp_path / 'volume' / 'app.db'}"
    log = tmp_path / "wait.log"
    waiter = started([*project.args(), "--database-url", url, "wait-for", "--timeout", "300"], log)
    wait_for_line(log, "unable to open database file; retrying for up to 300s", waiter)
    (tmp_path / "volume").mkdir()
    wait_for_line(log, "waiting up to 300s for the database to reach", waiter)
    assert revisor(*project.args(), "--database-url", url, "upgrade").code == 0
    out, _ = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, log.read_text()
    assert out.startswith(f"at {HEADS} (waited ")


def test_a_database_never_reached_is_exit_6(revisor, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(1))
    url = f"postgresql://nobody:secret-pw@127.0.0.1:{free_port()}/app"
    run = revisor(
        *project.args(), "--database-url", url, "--output", "json", "wait-for", "--timeout", "1"
    )
    assert run.code == 6
    assert run.result["reason"] == "DatabaseUnreachable"
    assert run.result["error"].startswith("gave up after 1s: cannot connect to ")
    assert "secret-pw" not in run.out + run.err
    assert run.err.count("retrying for up to 1s") == 1


def test_a_version_table_dropped_while_waiting_is_base_again(
    revisor, db_url, tmp_path: Path
) -> None:
    project = make_project(tmp_path, chain(2))
    args = [*project.args(), "--database-url", db_url]
    assert revisor(*args, "upgrade", "0001").code == 0
    log = tmp_path / "wait.log"
    waiter = started([*args, "wait-for", "--timeout", "300"], log)
    wait_for_line(log, "it is at 0001t0000000", waiter)
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE alembic_version")
    engine.dispose()
    wait_for_line(log, "the database is at base now", waiter)
    assert revisor(*args, "stamp", "0001").code == 0
    assert revisor(*args, "upgrade").code == 0
    out, _ = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, log.read_text()
    assert out.startswith(f"at {HEADS} (waited ")


@pytest.mark.postgres
def test_a_version_table_it_may_not_read_is_exit_2(
    revisor, pg_url, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    project = make_project(tmp_path, chain(1))
    assert revisor(*project.args(), "--database-url", pg_url, "upgrade").code == 0
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'nosy') THEN "
            "CREATE ROLE nosy LOGIN PASSWORD 'nosy-pw'; END IF; END$$"
        )
    engine.dispose()
    url = sa.engine.make_url(pg_url).set(username="nosy", password="nosy-pw")
    run = revisor(
        *project.args(), "--database-url", url.render_as_string(hide_password=False),
        "--output", "json", "wait-for", "--timeout", "5",
    )  # fmt: skip
    assert run.code == 2
    assert run.result["error"].startswith(
        "the database refused an operation: permission denied for table alembic_version"
    )


def test_sigterm_ends_a_waiter_at_once(tmp_path: Path) -> None:
    """A waiter has nothing to finish: no waiting for a revision to end, as a run does."""
    import signal

    project = make_project(tmp_path, chain(1))
    log = tmp_path / "wait.log"
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    waiter = started([*project.args(), "--database-url", url, "wait-for", "--timeout", "300"], log)
    wait_for_line(log, "waiting up to 300s", waiter)
    waiter.send_signal(signal.SIGTERM)
    waiter.communicate(timeout=30)
    assert waiter.returncode == -signal.SIGTERM
