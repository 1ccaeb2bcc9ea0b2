"""SQLite's migration lock (an exclusive ``flock`` on a file beside the database) and busy timeout.

The kernel drops a ``flock`` when its process dies, so a killed runner never
leaves a stale lock. The holder writes its pid into the file, so the next
runner can say who it waits for. Stdlib only: the SQLite dialect and the
quick answer of a run with nothing to do take the same lock through this.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

from revisor.errors import BadInput
from revisor.locks import gave_up
from revisor.polling import poll, waiting_phrase

#: Appended to the database file's path to name its lock file.
SUFFIX = ".revisor-lock"


def busy_timeout(ddl_lock_timeout: float | None) -> float:
    """Seconds a statement waits for another writer of the file (``PRAGMA busy_timeout``).

    SQLite has no table locks: ``--ddl-lock-timeout`` bounds this wait, 30 s by default.
    """
    return ddl_lock_timeout or 30.0


class LockFile:
    """The lock file of one SQLite database; :meth:`acquire` polls until its deadline."""

    def __init__(self, database_path: str) -> None:
        self.path = f"{database_path}{SUFFIX}"
        self._handle: IO[str] | None = None

    def acquire(
        self, *, timeout: float | None, on_wait: Callable[[str], None] | None = None
    ) -> None:
        """Take the lock or raise :class:`LockTimeout` (``timeout`` 0 tries once)."""
        try:
            handle = Path(self.path).open("a")  # noqa: SIM115 - held for the whole run
        except OSError as exc:
            raise BadInput(
                f"cannot create the lock file {self.path}: {exc.strerror}",
                hint="the directory of the SQLite database must be writable",
            ) from None

        def try_once() -> bool:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                return False
            return True

        def waiting() -> None:
            if on_wait is not None:
                on_wait(waiting_phrase(timeout, f"the lock file {self.path}{self._holder()}"))

        try:
            acquired = poll(try_once, timeout=timeout, on_first_miss=waiting)
        except OSError:
            handle.close()
            raise
        if not acquired:
            handle.close()
            raise gave_up(f"the lock file {self.path}{self._holder()}", timeout)
        with contextlib.suppress(OSError):
            # The holder's pid, for the next runner's "held by" (the lock is the flock).
            handle.truncate(0)
            handle.write(f"{os.getpid()}\n")
            handle.flush()
        self._handle = handle

    def _holder(self) -> str:
        """`` (held by pid N)`` from the lock file, or empty when it names nobody."""
        try:
            pid = Path(self.path).read_text().split()[-1]
        except (OSError, IndexError):
            return ""
        return f" (held by pid {pid})" if pid.isdigit() else ""

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
