"""The supervisor of one container: nothing the container forks outlives it or the kubelet.

A container is a process tree, and a tree cannot be held by signals alone:
``PR_SET_PDEATHSIG`` is cleared in every child a container forks, and a
grandchild may leave the container's process group (``setsid``). With the
kubelet SIGKILLed, such processes used to live on, reparented to init. Real
runtimes solve this with a shim per container (containerd-shim, conmon);
this is ours, in the same spirit:

- it is a *child subreaper* (``PR_SET_CHILD_SUBREAPER``), so every orphan of
  the container is reparented to it, never to init: the whole tree stays
  below it, however it forks;
- it holds the read end of the kubelet's *lifeline* pipe, whose write end only
  the kubelet process holds: the kernel closes it when the kubelet dies, by
  any death, so EOF on it means "kill everything now" (unlike a death signal,
  it does not depend on which thread started the process);
- once the container's main process has exited (or the lifeline broke), it
  SIGKILLs the container's group and then every remaining descendant, as a
  container's end kills everything in it, and reports how the main process
  ended.

Protocol (``python -I -S shim.py LIFELINE_FD STATUS_FD -- ARGV...``): on
STATUS_FD it writes ``started <pid>`` or ``error <message>``, then
``exited <code>`` or ``signaled <number>``. The container runs in its own
session (its pid is its process group); the kubelet signals that group itself
for a graceful or forced stop. Standard library only: it runs isolated
(``-I -S``) so the pod's PYTHONPATH cannot change how it behaves.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
# The interpreter's own symbols include libc's: no ``find_library``, which
# would run ``ldconfig -p`` at every container start.
_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}, {value})")


def _children(parent: int) -> list[int]:
    """Pids whose parent is ``parent`` (from /proc; works without CONFIG_PROC_CHILDREN)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            fields = (entry / "stat").read_bytes().rpartition(b")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if len(fields) > 1 and int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


def kill_tree(group: int) -> None:
    """SIGKILL ``group`` and every descendant of this process; return once all are reaped.

    Each descendant whose parent dies is reparented here (we are the subreaper),
    so repeating "kill all children, reap one" ends exactly when none is left.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)
    me = os.getpid()
    while True:
        try:
            reaped, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # nothing left: the usual case, without a scan of /proc
        if reaped:
            continue
        for pid in _children(me):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _report(status_fd: int, line: str) -> None:
    # The kubelet may be gone: then nobody listens, and that is fine.
    with contextlib.suppress(OSError):
        os.write(status_fd, line.encode(errors="replace") + b"\n")


def _die_with_shim() -> None:
    # Between fork and exec in a single-threaded process: a prctl call only.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def run(lifeline: int, status_fd: int, argv: Sequence[str]) -> int:
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    try:
        container = subprocess.Popen(
            list(argv),
            start_new_session=True,
            preexec_fn=_die_with_shim,  # noqa: PLW1509 - single-threaded; a prctl call only
            close_fds=True,
        )
    except OSError as error:
        _report(status_fd, f"error {argv[0]}: {error}")
        return 0

    def forward(signum: int, _frame: object) -> None:
        # Someone stopping the shim (not the kubelet's way) stops the container gracefully.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(container.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    _report(status_fd, f"started {container.pid}")
    exited = os.pidfd_open(container.pid)
    # poll, not select: the lifeline keeps the kubelet's descriptor number,
    # which may be above select's limit of 1024.
    poller = select.poll()
    poller.register(exited, select.POLLIN)
    poller.register(lifeline, select.POLLIN | select.POLLHUP)
    while True:
        ready = {fd for fd, _ in poller.poll()}
        if exited in ready:
            break
        if not os.read(lifeline, 1):  # EOF: the kubelet is gone, by whatever death
            with contextlib.suppress(ProcessLookupError):
                os.killpg(container.pid, signal.SIGKILL)
            break
    code = container.wait()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    kill_tree(container.pid)
    _report(status_fd, f"signaled {-code}" if code < 0 else f"exited {code}")
    return 0


def main(args: Sequence[str]) -> int:
    if len(args) < 4 or args[2] != "--":
        print("usage: shim.py LIFELINE_FD STATUS_FD -- ARGV...", file=sys.stderr)
        return 2
    return run(int(args[0]), int(args[1]), args[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
