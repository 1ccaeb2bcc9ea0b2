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

    run_user = "nobody" if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="revisor-pg-"))
    data, sock = base / "data", base / "sock"
    pwfile = base / "pwfile"
    pwfile.write_text(PASSWORD)
    sock.mkdir()
    if run_user is not None:
        entry = pwd.getpwnam(run_user)
        for path in (base, sock, pwfile):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    port = free_port()
    _run_as(
        run_user,
        [_find_bin("initdb"), "-D", str(data), "-U", SUPERUSER, "--pwfile", str(pwfile),
         "-A", "scram-sha-256", "-E", "UTF8", "--no-sync"],
    )  # fmt: skip
    log = base / "postgres.log"
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sock} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        "-c max_connections=200 -c shared_buffers=64MB"
    )
    _run_as(
        run_user,
        [_find_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60",
         "start"],
    )  # fmt: skip
    server = PostgresServer(host="127.0.0.1", port=port, user=SUPERUSER, password=PASSWORD)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(server.libpq(), connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _run_as(
                run_user, [_find_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
            )
        shutil.rmtree(base, ignore_errors=True)
