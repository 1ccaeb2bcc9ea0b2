"""Child processes that cannot outlive their parent.

Everything localkube starts (etcd, the control plane, the process-kubelet,
and the kubelet's containers) runs in its own process group, so a signal
reaches the whole tree a command may fork, and with ``PR_SET_PDEATHSIG`` so
the kernel kills it if its parent dies without cleaning up (SIGKILL, OOM, a
crashed test run). Orderly shutdown is SIGTERM to the group, a grace period,
then SIGKILL.

Trap: the death signal fires when the *thread* that forked the child exits,
not the process. Start children from a thread that lives as long as they do.
And it is not inherited: what a child forks needs more (see ``shim``, which
the kubelet's containers run under).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_prctl = _libc.prctl


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: only async-signal-safe work here.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    pass_fds: Sequence[int] = (),
    die_with_parent: bool = True,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session with its stdout+stderr appended to ``log``.

    ``die_with_parent=False`` is for a process that must clean up after itself
    when this one dies (a SIGKILL could not be handled): it needs its own way
    to notice, like the shim's lifeline.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=stdin,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,  # noqa: PLW1509 - a prctl call only
            pass_fds=tuple(pass_fds),
            close_fds=True,
        )


def signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to the process group led by ``process`` (ignoring a group already gone)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def stop(process: subprocess.Popen[bytes], *, grace: float = 10.0) -> int:
    """SIGTERM the group, wait ``grace`` seconds, then SIGKILL; return the exit code."""
    if process.poll() is None:
        signal_group(process, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    # Children that ignored SIGTERM or outlived their leader go too.
    signal_group(process, signal.SIGKILL)
    return process.wait()


def stop_all(processes: Sequence[subprocess.Popen[bytes]], *, grace: float = 10.0) -> None:
    """SIGTERM all groups at once, give them ``grace`` seconds together, then SIGKILL the rest."""
    for process in processes:
        if process.poll() is None:
            signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        signal_group(process, signal.SIGKILL)
        process.wait()
