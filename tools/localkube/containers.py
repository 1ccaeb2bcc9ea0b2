"""One run of one container: a local process, its log and its termination message.

The image is never pulled: ``command`` + ``args`` run from this machine's
environment (the kubelet's PATH, so the project's virtualenv); an image with
a root filesystem only lends its files, by path (``images``). Each run is
started under ``shim``, its supervisor, so nothing it forks outlives it or
the kubelet; the shim also gives it a mount namespace of its own when it
needs one (``privatemounts``). A run ends when its process exits; a waiter
thread reports that to the pod worker at once (the shim says so on a pipe),
so nothing polls.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from localkube import processes
from localkube.node import now
from localkube.shim import PrivateMounts

SHIM = Path(__file__).resolve().with_name("shim.py")

MAX_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048


@dataclass(frozen=True)
class Exit:
    """How a run ended, in the terms of ``ContainerStateTerminated``."""

    exit_code: int
    reason: str
    message: str
    started_at: str
    finished_at: str
    signal: int | None = None

    def as_state(self) -> dict[str, object]:
        state: dict[str, object] = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
        }
        if self.message:
            state["message"] = self.message
        if self.signal is not None:
            state["signal"] = self.signal
        return state


_lifeline_lock = threading.Lock()
_lifeline: int | None = None


def lifeline() -> int:
    """The read end of this process's lifeline: EOF on it once this process has died.

    The write end is never written, never closed and never inherited (pipes
    are close-on-exec): only this process's death closes it.
    """
    global _lifeline
    with _lifeline_lock:
        if _lifeline is None:
            _lifeline, _ = os.pipe()
        return _lifeline


def log_tail(log: Path, *, since: int) -> str:
    """The last lines the current run wrote, as FallbackToLogsOnError reports them."""
    try:
        with log.open("rb") as handle:
            handle.seek(since)
            data = handle.read()
    except FileNotFoundError:
        return ""
    text = b"\n".join(data.splitlines()[-FALLBACK_LOG_LINES:])[-FALLBACK_LOG_BYTES:]
    return text.decode(errors="replace")


class ContainerRun:
    """A started container process; ``exit`` is set once it has ended."""

    def __init__(
        self,
        *,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        log: Path,
        termination_file: Path,
        message_policy: str,
        on_exit: Callable[[], None],
        mounts: PrivateMounts | None = None,
    ) -> None:
        """``mounts``: what the run sees in a mount namespace of its own (``privatemounts``)."""
        self._termination_file = termination_file
        self._message_policy = message_policy
        self._log = log
        self._on_exit = on_exit
        cwd.mkdir(parents=True, exist_ok=True)
        termination_file.parent.mkdir(parents=True, exist_ok=True)
        termination_file.write_bytes(b"")
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log_offset = log.stat().st_size if log.exists() else 0
        self.started_at = now()
        self.exit: Exit | None = None
        self._exited = threading.Event()
        #: The container's main process (its pid is also its process group).
        self.pid: int | None = None
        self._shim: subprocess.Popen[bytes] | None = None
        started = self._start_shim(argv, env=env, cwd=cwd, log=log, mounts=mounts)
        if started is None:
            return
        threading.Thread(
            target=self._wait, args=(started,), name=f"wait-{self.pid}", daemon=True
        ).start()

    def _start_shim(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        log: Path,
        mounts: PrivateMounts | None,
    ) -> IO[str] | None:
        """Start the run under its shim; return the shim's status pipe once the run has begun."""
        status_read, status_write = os.pipe()
        fd = lifeline()
        options = mounts.options() if mounts else []
        shim_argv = [sys.executable, "-I", "-S", str(SHIM), str(fd), str(status_write), *options]
        shim_argv.append("--")
        try:
            # No death signal: the shim must outlive a SIGKILLed kubelet to clean up.
            self._shim = processes.spawn(
                [*shim_argv, *argv],
                log=log,
                env=env,
                cwd=cwd,
                pass_fds=(fd, status_write),
                die_with_parent=False,
            )
        except OSError as error:
            os.close(status_read)
            self._ended(exit_code=128, reason="StartError", message=f"{argv[0]}: {error}")
            return None
        finally:
            os.close(status_write)
        status = os.fdopen(status_read, "r", errors="replace")
        kind, _, detail = status.readline().strip().partition(" ")
        if kind == "started":
            self.pid = int(detail)
            return status
        status.close()
        code = self._shim.wait()
        # What a runtime reports for a missing or non-executable entrypoint.
        message = detail if kind == "error" else f"container supervisor exited with {code}"
        self._ended(exit_code=128, reason="StartError", message=message)
        return None

    @property
    def running(self) -> bool:
        return self.exit is None

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        # The container's group; the shim, outside it, then reaps what is left.
        if self.pid is not None and self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def wait(self, timeout: float | None) -> bool:
        """Wait until the run has ended and ``exit`` is set; True if it has."""
        return self._exited.wait(timeout)

    def _wait(self, status: IO[str]) -> None:
        assert self._shim is not None
        with status:
            # The shim's last word, once the run and all it forked are gone.
            last = ""
            for line in status:
                last = line.strip()
        self._shim.wait()
        kind, _, value = last.partition(" ")
        if kind == "exited":
            sig, exit_code = None, int(value)
        elif kind == "signaled":
            sig = int(value)
            exit_code = 128 + sig
        else:  # the shim itself was killed: the run went with it
            sig, exit_code = signal.SIGKILL, 128 + signal.SIGKILL
        self._ended(
            exit_code=exit_code,
            reason="Completed" if exit_code == 0 else "Error",
            message=self._message(exit_code),
            signal=sig,
        )

    def _ended(
        self, *, exit_code: int, reason: str, message: str, signal: int | None = None
    ) -> None:
        self.exit = Exit(
            exit_code=exit_code,
            reason=reason,
            message=message,
            started_at=self.started_at,
            finished_at=now(),
            signal=signal,
        )
        self._exited.set()
        self._on_exit()

    def _message(self, exit_code: int) -> str:
        try:
            data = self._termination_file.read_bytes()[:MAX_MESSAGE_BYTES]
        except OSError:
            data = b""
        message = data.decode(errors="replace")
        if (
            not message.strip()
            and exit_code != 0
            and self._message_policy == "FallbackToLogsOnError"
        ):
            message = log_tail(self._log, since=self._log_offset)
        return message
