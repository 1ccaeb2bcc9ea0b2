"""One run of one container: a local process, its log and its termination message.

The image is never pulled: ``command`` + ``args`` run from this machine's
environment (the kubelet's PATH, so the project's virtualenv). A run ends
when its process exits; a waiter thread reports that to the pod worker at
once, so nothing polls for exits.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from localkube import processes
from localkube.node import now

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
    ) -> None:
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
        self.process: subprocess.Popen[bytes] | None = None
        try:
            self.process = processes.spawn(argv, log=log, env=env, cwd=cwd)
        except OSError as error:
            # What a runtime reports for a missing or non-executable entrypoint.
            self._ended(exit_code=128, reason="StartError", message=f"{argv[0]}: {error}")
            return
        threading.Thread(target=self._wait, name=f"wait-{self.process.pid}", daemon=True).start()

    @property
    def running(self) -> bool:
        return self.exit is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def terminate(self) -> None:
        if self.process is not None:
            processes.signal_group(self.process, signal.SIGTERM)

    def kill(self) -> None:
        if self.process is not None:
            processes.signal_group(self.process, signal.SIGKILL)

    def wait(self, timeout: float | None) -> bool:
        """Wait until the run has ended and ``exit`` is set; True if it has."""
        return self._exited.wait(timeout)

    def _wait(self) -> None:
        assert self.process is not None
        code = self.process.wait()
        # Whatever the leader forked must not linger after the container "exited".
        processes.signal_group(self.process, signal.SIGKILL)
        sig = -code if code < 0 else None
        exit_code = 128 + sig if sig is not None else code
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
