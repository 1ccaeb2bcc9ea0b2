"""A throwaway PostgreSQL cluster for the test suite, started as an unprivileged user.

PostgreSQL refuses to run as root and CI runs as root, so the cluster is
initialised and started as ``nobody`` (or the current user when that is not
root), on loopback and a free port, in a temporary directory removed at the
end. ``REVISOR_TEST_POSTGRES_URL`` points the suite at an existing server
instead (a URL whose user may create databases).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

SUPERUSER = "revisor"
PASSWORD = "revisor-test-pw"


def _find_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise RuntimeError(
        f"PostgreSQL's {name!r} was not found on PATH or under /usr/lib/postgresql; "
        "install PostgreSQL (apt-get install postgresql) or set REVISOR_TEST_POSTGRES_URL"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class PostgresServer:
    """A running server: ``admin_url`` can create databases."""

    host: str
    port: int
    user: str
    password: str

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def libpq(self, database: str = "postgres") -> str:
        return (
            f"host={self.host} port={self.port} user={self.user} "
            f"password={self.password} dbname={database}"
        )

    def create_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.libpq(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.libpq(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run_as(
    user: str | None, argv: list[str], **kwargs: object
) -> subprocess.CompletedProcess[str]:
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(argv, check=True, text=True, capture_output=True, **kwargs)  # type: ignore[call-overload, no-any-return]


@dataclass
class PostgresCluster:
    """A cluster of its own (initdb'd in ``base``) that can be stopped and started again.

    Started and stopped with ``pg_ctl`` as the unprivileged user that owns it,
    always on the same port and data directory: a client that reconnects after
    :meth:`start` finds the same server, with whatever had committed before
    :meth:`stop`. The fault tests stop it under a running migration
    (``mode="immediate"`` is a crash: no shutdown checkpoint, every session
    killed at once, crash recovery on the next start).
    """

    base: Path
    port: int
    run_user: str | None
    #: ``synchronous_commit=on``: a COMMIT returns only once its WAL is written, so a
    #: crash (``stop("immediate")``) loses nothing that had committed. The suite's
    #: shared server runs without it, for speed; a fault test needs it, or the
    #: server itself would lose the last revision a runner saw commit.
    durable: bool = False

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    @property
    def server(self) -> PostgresServer:
        return PostgresServer(host="127.0.0.1", port=self.port, user=SUPERUSER, password=PASSWORD)

    @classmethod
    def create(cls, *, durable: bool = False) -> PostgresCluster:
        """initdb a new cluster in a temporary directory, on a free port (not started)."""
        run_user = "nobody" if os.geteuid() == 0 else None
        base = Path(tempfile.mkdtemp(prefix="revisor-pg-"))
        cluster = cls(base=base, port=free_port(), run_user=run_user, durable=durable)
        sock, pwfile = base / "sock", base / "pwfile"
        pwfile.write_text(PASSWORD)
        sock.mkdir()
        if run_user is not None:
            entry = pwd.getpwnam(run_user)
            for path in (base, sock, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        _run_as(
            run_user,
            [_find_bin("initdb"), "-D", str(cluster.data), "-U", SUPERUSER, "--pwfile",
             str(pwfile), "-A", "scram-sha-256", "-E", "UTF8", "--no-sync"],
        )  # fmt: skip
        return cluster

    def start(self, *, timeout: float = 60) -> None:
        """Start the server and return once it accepts connections."""
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.base / 'sock'} "
            # fsync=off loses nothing when only the server crashes (the kernel keeps
            # what it wrote); synchronous_commit=off would (see ``durable``).
            f"-c fsync=off -c synchronous_commit={'on' if self.durable else 'off'} "
            "-c full_page_writes=off -c max_connections=200 -c shared_buffers=64MB"
        )
        _run_as(
            self.run_user,
            [_find_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
             "-w", "-t", str(int(timeout)), "start"],
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.server.libpq(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self, mode: str = "immediate") -> None:
        """``pg_ctl stop -m MODE`` and wait until the server is gone (its port closed)."""
        _run_as(
            self.run_user,
            [_find_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"],
        )

    def running(self) -> bool:
        """Whether ``pg_ctl status`` finds the server running."""
        argv = [_find_bin("pg_ctl"), "-D", str(self.data), "status"]
        if self.run_user is not None:
            argv = ["runuser", "-u", self.run_user, "--", *argv]
        return subprocess.run(argv, capture_output=True, check=False).returncode == 0

    def remove(self) -> None:
        """Stop the server if it runs, and delete the cluster's directory."""
        if self.running():
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def dedicated_postgres(*, durable: bool = False) -> Iterator[PostgresCluster]:
    """A started cluster of the block's own, which the block may stop and start; removed after.

    Never the server of ``REVISOR_TEST_POSTGRES_URL``: a test that stops its
    server needs one nobody else uses. ``durable``: see :attr:`PostgresCluster.durable`.
    """
    cluster = PostgresCluster.create(durable=durable)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[PostgresServer]:
    """Start a cluster for the duration of the block (or use the one configured)."""
    existing = os.environ.get("REVISOR_TEST_POSTGRES_URL")
    if existing:
        from sqlalchemy.engine import make_url

        url = make_url(existing)
        yield PostgresServer(
            host=url.host or "127.0.0.1",
            port=url.port or 5432,
            user=url.username or "postgres",
            password=url.password or "",
        )
        return
    with dedicated_postgres() as cluster:
        yield cluster.server
