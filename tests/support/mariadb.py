"""A throwaway MariaDB server for the test suite, started as an unprivileged user.

Mirrors tests/support/postgres.py: the data directory is initialised and the
server started as ``nobody`` (or the current user when that is not root), on
loopback and a free port, in a temporary directory (on /dev/shm when there
is room: a tmpfs makes its many fsyncs free) removed at the end. The
server runs in its own session (outside the test run's job table) and is
stopped cleanly, or killed when it will not stop. ``REVISOR_TEST_MYSQL_URL``
points the suite at an existing server instead (a URL whose user may create
databases). The binaries come from Debian's mariadb-server: scripts/ensure-mariadb.sh.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pymysql
import pymysql.cursors
from sqlalchemy.engine import URL, make_url

from tests.support.postgres import free_port

APP_USER = "revisor"
PASSWORD = "revisor-test-pw"

# Small and quick: a test server holds a few tiny databases, and durability
# across a crash of the machine does not matter.
SERVER_OPTIONS = [
    "--skip-name-resolve",
    "--performance-schema=OFF",
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=16M",
    "--innodb-temp-data-file-path=ibtmp1:1M:autoextend",
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-doublewrite=0",
    "--max-connections=200",
    # What Debian's own configuration sets; the compiled-in default is latin1.
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
]


# Where Debian puts them, when PATH (a non-root user's, say) lacks /usr/sbin.
SEARCH_DIRS = ("/usr/sbin", "/usr/bin")


def _find_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for directory in SEARCH_DIRS:
        candidate = Path(directory) / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    raise RuntimeError(
        f"MariaDB's {name!r} was not found on PATH, /usr/sbin or /usr/bin; run "
        "scripts/ensure-mariadb.sh (as root it installs Debian's mariadb-server) "
        "or set REVISOR_TEST_MYSQL_URL"
    )


def _scratch_dir() -> str | None:
    """Where the data directory goes: /dev/shm when it has room, else the usual temp dir.

    On a tmpfs the install's ~1,000 fsyncs cost nothing: mariadb-install-db
    takes 0.5-0.8 s there instead of 1.5-3.3 s on this ext4 disk. A small
    /dev/shm (64 MiB in a default Docker container) is passed over.
    """
    shm = "/dev/shm"
    try:
        stat = os.statvfs(shm)
    except OSError:
        return None
    roomy = stat.f_bavail * stat.f_frsize >= 1 << 30
    return shm if roomy and os.access(shm, os.W_OK | os.X_OK) else None


@dataclass(frozen=True)
class MariaDBServer:
    """A running server: ``user`` may create and drop databases."""

    host: str
    port: int
    user: str
    password: str

    def url(self, database: str, driver: str = "mysql+pymysql") -> str:
        return URL.create(
            driver,
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=database,
        ).render_as_string(hide_password=False)

    def connect(self, database: str | None = None) -> pymysql.Connection[pymysql.cursors.Cursor]:
        """A plain PyMySQL connection (autocommit) as the app user."""
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=database,
            autocommit=True,
            connect_timeout=5,
        )

    def create_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        return name

    def drop_database(self, name: str) -> None:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@dataclass(frozen=True)
class _Identity:
    """Popen's ``user``/``group``/``extra_groups``: run as ``name``, or as we are (None)."""

    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] | None = None

    @classmethod
    def of(cls, name: str | None) -> _Identity:
        if name is None:
            return cls()
        entry = pwd.getpwnam(name)
        return cls(entry.pw_uid, entry.pw_gid, ())


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _root(sock: Path) -> pymysql.Connection[pymysql.cursors.Cursor]:
    """The install's passwordless root@localhost, over the server's Unix socket."""
    return pymysql.connect(unix_socket=str(sock), user="root", autocommit=True, connect_timeout=10)


def _accepts(sock: Path) -> bool:
    """Whether the server listens on its Unix socket yet (a bare connect, no login)."""
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(sock))
        except OSError:
            return False
        return True


def _wait_until_ready(proc: subprocess.Popen[bytes], sock: Path, log: Path) -> None:
    deadline = time.monotonic() + 60
    while not _accepts(sock):
        if proc.poll() is not None:
            raise RuntimeError(
                f"mariadbd exited with status {proc.returncode} while starting:\n{_tail(log)}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"mariadbd did not accept connections in 60 s:\n{_tail(log)}")
        time.sleep(0.05)


def _create_app_user(sock: Path) -> None:
    """``revisor`` with every privilege, from anywhere and from localhost; no anonymous users.

    An anonymous ``''@'localhost'`` is more specific than ``'revisor'@'%'`` and
    would win for local logins. mariadb-install-db creates the anonymous
    accounts with the test database (skipped here); any that exist all the
    same are dropped, and ``'revisor'@'localhost'`` exists too.
    """
    with _root(sock) as conn, conn.cursor() as cur:
        cur.execute("SELECT User, Host FROM mysql.user WHERE User = ''")
        for user, host in cur.fetchall():
            cur.execute("DROP USER %s@%s", (user, host))
        for host in ("%", "localhost"):
            cur.execute("CREATE USER %s@%s IDENTIFIED BY %s", (APP_USER, host, PASSWORD))
            cur.execute("GRANT ALL PRIVILEGES ON *.* TO %s@%s WITH GRANT OPTION", (APP_USER, host))


def _stop(proc: subprocess.Popen[bytes], *, cleanly: bool) -> None:
    if proc.poll() is not None:
        return
    if cleanly:
        proc.send_signal(signal.SIGTERM)  # mariadbd's normal shutdown
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
            return
    proc.kill()
    proc.wait()


@contextlib.contextmanager
def throwaway_mariadb() -> Iterator[MariaDBServer]:
    """Start a server for the duration of the block (or use the one configured)."""
    existing = os.environ.get("REVISOR_TEST_MYSQL_URL")
    if existing:
        url = make_url(existing)
        yield MariaDBServer(
            host=url.host or "127.0.0.1",
            port=url.port or 3306,
            user=url.username or "root",
            password=url.password or "",
        )
        return

    install_db, mariadbd = _find_bin("mariadb-install-db"), _find_bin("mariadbd")
    who = _Identity.of("nobody" if os.geteuid() == 0 else None)
    base = Path(tempfile.mkdtemp(prefix="revisor-mariadb-", dir=_scratch_dir()))
    data, sock, log = base / "data", base / "data" / "sock", base / "mariadbd.log"
    if who.uid is not None and who.gid is not None:
        os.chown(base, who.uid, who.gid)
    port = free_port()
    proc: subprocess.Popen[bytes] | None = None
    started = False
    try:
        install = subprocess.run(
            [
                install_db,
                "--no-defaults",
                f"--datadir={data}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *SERVER_OPTIONS,
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            cwd=base,
            user=who.uid,
            group=who.gid,
            extra_groups=who.groups,
        )
        if install.returncode != 0:
            raise RuntimeError(
                f"mariadb-install-db failed ({install.returncode}):\n"
                f"{install.stdout[-3000:]}{install.stderr[-3000:]}"
            )
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    mariadbd,
                    "--no-defaults",
                    f"--datadir={data}",
                    f"--socket={sock}",
                    f"--port={port}",
                    "--bind-address=127.0.0.1",
                    f"--pid-file={data}/mariadbd.pid",
                    *SERVER_OPTIONS,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=base,
                start_new_session=True,  # its own session: not in the test run's job table
                user=who.uid,
                group=who.gid,
                extra_groups=who.groups,
            )
        _wait_until_ready(proc, sock, log)
        _create_app_user(sock)
        started = True
        yield MariaDBServer(host="127.0.0.1", port=port, user=APP_USER, password=PASSWORD)
    finally:
        if proc is not None:
            _stop(proc, cleanly=started)
        shutil.rmtree(base, ignore_errors=True)
