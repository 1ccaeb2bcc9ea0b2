"""Fixtures for the real-world histories: fresh databases, processes, and cached references.

Everything runs as a separate process, the way a user runs it: the project's
own tool, and Revisor (``.venv/bin/revisor``, or this checkout's engine inside
the project's own virtualenv). What several tests compare against, the schema
the project's own tool builds and Revisor's single-runner upgrade in each
mode, is built once per session and kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest

from tests.realworld import histories, venvs
from tests.realworld.histories import History, Installed
from tests.realworld.schema import schema_of
from tests.support.mariadb import MariaDBServer
from tests.support.postgres import PostgresServer

#: A bound for one process on a loaded 2-core machine: a hang guard, not a measurement.
PROCESS_TIMEOUT_SECONDS = 240
#: SQLite files on tmpfs when there is one: a history of 120 revisions commits 240 times,
#: and on this machine's disk that is most of a run's wall time.
SHM = Path("/dev/shm")


@dataclass(frozen=True)
class Run:
    """A finished process."""

    argv: list[str]
    code: int
    out: str
    err: str
    seconds: float

    @property
    def result(self) -> dict[str, Any]:
        """Revisor's result document (``--output json``: the last stdout line)."""
        lines = self.out.strip().splitlines()
        assert lines, f"no result document on stdout; stderr:\n{self.err[-3000:]}"
        return dict(json.loads(lines[-1]))

    def explain(self) -> str:
        return f"$ {' '.join(self.argv)}\nexit {self.code}\n{self.err[-4000:]}"


def run(argv: list[str], *, env: dict[str, str], cwd: Path | None = None) -> Run:
    started = time.monotonic()
    done = subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_SECONDS,
        check=False,
    )
    return Run(argv, done.returncode, done.stdout, done.stderr, time.monotonic() - started)


class Bench:
    """Fresh databases on either backend and the processes that migrate them."""

    def __init__(self, request: pytest.FixtureRequest, root: Path) -> None:
        self._request = request
        self._root = root
        self._pg_databases: list[str] = []
        self._pg_server: PostgresServer | None = None
        self._mariadb_databases: list[str] = []
        self._mariadb_server: MariaDBServer | None = None

    def _server(self) -> PostgresServer:
        if self._pg_server is None:
            self._pg_server = self._request.getfixturevalue("postgres_server")
        return self._pg_server

    def _mariadb(self) -> MariaDBServer:
        if self._mariadb_server is None:
            self._mariadb_server = self._request.getfixturevalue("mariadb_server")
        return self._mariadb_server

    def home(self) -> Path:
        """A fresh directory for a tool's home, config and logs."""
        return Path(tempfile.mkdtemp(prefix="home-", dir=self._root))

    def database(self, history: History, backend: str) -> str:
        """A fresh, empty database, as a URL with the driver ``history`` uses there."""
        driver = history.drivers[backend]
        if backend == "postgresql":
            server = self._server()
            name = server.create_database(prefix=history.name)
            self._pg_databases.append(name)
            return server.url(name, driver=driver)
        if backend == "mariadb":
            mariadb = self._mariadb()
            name = mariadb.create_database(prefix=history.name)
            self._mariadb_databases.append(name)
            return mariadb.url(name, driver=driver)
        directory = Path(tempfile.mkdtemp(prefix=f"{history.name}-", dir=self._root))
        return f"{driver}:///{directory / 'app.db'}"

    def environment(self, history: History, url: str, home: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env.pop("PYTHONPATH", None)
        added = history.python_path(url)
        if added is not None:
            env["PYTHONPATH"] = str(added)
        return {**env, "HOME": str(home), **history.environment(url, home)}

    def own(self, history: History, backend: str) -> tuple[str, Run]:
        """A fresh database built by the project's own tool."""
        installed = history.installed()
        url = self.database(history, backend)
        home = self.home()
        command = history.own(installed, url, home)
        done = run(
            command.argv,
            env={**self.environment(history, url, home), **command.env},
            cwd=command.cwd or home,
        )
        assert done.code == 0, f"the project's own tool failed:\n{done.explain()}"
        return url, done

    def revisor(self, history: History, backend: str, mode: str, url: str, *command: str) -> Run:
        """Revisor in ``mode`` on ``url``: ``command`` is e.g. ("upgrade", "head")."""
        installed: Installed = history.installed()
        home = self.home()
        args = history.revisor_args(installed, backend, mode, home)
        argv = [*installed.revisor(), *args.argv, "--database-url", url, "--output", "json"]
        env = installed.revisor_env(self.environment(history, url, home))
        return run([*argv, *command], env=env, cwd=args.cwd or home)

    def drop_all(self) -> None:
        """Drop this bench's databases (gone anyway if the throwaway servers are)."""
        server, names = self._pg_server, list(self._pg_databases)
        self._pg_databases.clear()
        if server is not None:
            for name in names:
                with contextlib.suppress(psycopg.OperationalError):
                    server.drop_database(name)
        mariadb, names = self._mariadb_server, list(self._mariadb_databases)
        self._mariadb_databases.clear()
        if mariadb is not None:
            for name in names:
                with contextlib.suppress(pymysql.err.OperationalError):
                    mariadb.drop_database(name)


@dataclass(frozen=True)
class Upgraded:
    """A database one Revisor run upgraded to head from empty, and its schema."""

    url: str
    run: Run
    schema: list[str]


class References:
    """What several tests compare with, built once per session and kept.

    Its databases live until the session ends: the down-and-back test goes
    down and up again on the database of the single-runner upgrade (whose
    schema is kept here) instead of building another.
    """

    def __init__(self, bench: Bench) -> None:
        self._bench = bench
        self.own: dict[tuple[str, str], list[str]] = {}
        self.upgraded: dict[tuple[str, str, str], Upgraded] = {}

    def own_schema(self, bench: Bench, history: History, backend: str) -> list[str]:
        """The schema the project's own tool builds (on a database dropped with ``bench``)."""
        key = (history.name, backend)
        if key not in self.own:
            url, _ = bench.own(history, backend)
            self.own[key] = schema_of(url)
        return self.own[key]

    def upgrade(self, bench: Bench, history: History, backend: str, mode: str) -> Upgraded:
        """Revisor's single-runner ``upgrade head`` in ``mode`` on an empty database."""
        key = (history.name, backend, mode)
        if key not in self.upgraded:
            url = self._bench.database(history, backend)
            done = self._bench.revisor(history, backend, mode, url, "upgrade", history.top(backend))
            self.upgraded[key] = Upgraded(url, done, schema_of(url) if done.code == 0 else [])
        return self.upgraded[key]


@pytest.fixture(scope="session")
def _bench_root() -> Iterator[Path]:
    base = SHM if SHM.is_dir() and os.access(SHM, os.W_OK) else None
    root = Path(tempfile.mkdtemp(prefix="revisor-realworld-", dir=base))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def references(request: pytest.FixtureRequest, _bench_root: Path) -> Iterator[References]:
    bench = Bench(request, _bench_root)
    yield References(bench)
    bench.drop_all()


@pytest.fixture
def bench(request: pytest.FixtureRequest, _bench_root: Path) -> Iterator[Bench]:
    """For one test: its PostgreSQL databases are dropped when it ends."""
    bench = Bench(request, _bench_root)
    yield bench
    bench.drop_all()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the virtualenvs the selected tests need now, outside any test's timeout.

    The first build of Langflow's takes minutes (about 330 packages from PyPI);
    after that it is found in the cache at once. A failed build is kept and
    raised by each test that needs it.
    """
    if session.config.option.collectonly:
        return
    needed = {
        item.callspec.params["history"]
        for item in session.items
        if hasattr(item, "callspec") and isinstance(item.callspec.params.get("history"), History)
    }
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    backends = {
        (item.callspec.params["history"].name, item.callspec.params.get("backend"))
        for item in session.items
        if hasattr(item, "callspec") and isinstance(item.callspec.params.get("history"), History)
    }
    for history in sorted(needed, key=lambda h: h.name):
        for backend in sorted(b for name, b in backends if name == history.name and b):
            history.build_target(backend)  # a failure is raised by the tests that need it
        if history.requirements is None:
            continue
        started = time.monotonic()
        try:
            history.installed()
        except Exception as exc:
            histories.remember_failure(history, exc)
            continue
        if reporter is not None and time.monotonic() - started > 5:
            reporter.write_line(
                f"tests/realworld: {history.name}'s virtualenv took "
                f"{time.monotonic() - started:.0f}s (built once, then cached under "
                f"{venvs.cache_root()})"
            )
