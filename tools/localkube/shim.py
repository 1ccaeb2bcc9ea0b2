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

A few paths are compiled into programs rather than passed to them: the
in-cluster ServiceAccount token (``/var/run/secrets/kubernetes.io/serviceaccount``)
above all. Path rewriting (``volumes.MountMap``) cannot reach those, so the
shim can also give the container its own *mount namespace* in which such a
path is a bind mount of the pod's volume directory (``--bind``), or an empty
read-only tmpfs that hides what this machine has there (``--mask``). The
namespace is the shim's and the container's only; its mounts are made after
the whole tree is marked slave, so none propagates to the host, and the
kernel drops them when the last process in it, the shim, exits.

Protocol (``python -I -S shim.py LIFELINE_FD STATUS_FD [OPTION...] -- ARGV...``,
options ``--bind SOURCE TARGET``, ``--bind-ro SOURCE TARGET``, ``--mask
TARGET``): on STATUS_FD it writes ``started <pid>`` or ``error <message>``,
then ``exited <code>`` or ``signaled <number>``. The container runs in its own
session (its pid is its process group); the kubelet signals that group itself
for a graceful or forced stop. ``python -I -S shim.py --check TARGET`` tries a
bind onto TARGET in a throwaway namespace and says why it cannot (exit 1), so
the kubelet learns once whether this machine allows it (root, or
CAP_SYS_ADMIN, is needed). Standard library only: it runs isolated (``-I -S``)
so the pod's PYTHONPATH cannot change how it behaves.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_CLONE_NEWNS = 0x00020000
_MS_RDONLY = 0x1
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_NOEXEC = 0x8
_MS_REMOUNT = 0x20
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_SLAVE = 0x80000
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


@dataclass(frozen=True)
class PrivateMounts:
    """What the container's own mount namespace shows differently from the host."""

    #: (host directory, path in the container, read-only)
    binds: tuple[tuple[str, str, bool], ...] = ()
    #: Paths covered by an empty read-only tmpfs.
    masks: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.binds or self.masks)

    def options(self) -> list[str]:
        """The shim's command-line options that ask for these mounts (``parse_mounts``)."""
        found: list[str] = []
        for source, target, read_only in self.binds:
            found += ["--bind-ro" if read_only else "--bind", source, target]
        for target in self.masks:
            found += ["--mask", target]
        return found


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    def raw(text: str | None) -> bytes | None:
        return None if text is None else os.fsencode(text)

    if _libc.mount(raw(source), raw(target), raw(fstype), flags, raw(data) if data else None):
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {target}: {os.strerror(errno)}")


def why(error: OSError) -> str:
    """``error`` in one line: what failed, on which path."""
    reason = error.strerror or str(error)
    return f"{reason}: {error.filename}" if error.filename else reason


def enter_private_mounts(mounts: PrivateMounts) -> None:
    """Move this process into a mount namespace of its own and make ``mounts`` there.

    Everything is marked slave first: the host's mounts still reach the
    container (a filesystem mounted later, say), but nothing mounted here
    reaches the host, whatever the host's propagation (systemd makes ``/``
    shared). A missing mount point is created, on the host's filesystem.
    """
    if _libc.unshare(_CLONE_NEWNS):
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare(CLONE_NEWNS): {os.strerror(errno)}")
    _mount(None, "/", None, _MS_REC | _MS_SLAVE)
    for source, target, read_only in mounts.binds:
        Path(target).mkdir(parents=True, exist_ok=True)
        _mount(source, target, None, _MS_BIND)
        if read_only:
            _mount(None, target, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY)
    for target in mounts.masks:
        Path(target).mkdir(parents=True, exist_ok=True)
        hidden = _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
        _mount("tmpfs", target, "tmpfs", hidden, "size=4k,mode=0755")


def check(target: str) -> int:
    """Can a container see a directory of ours at ``target``? Exit 0, or 1 saying why not."""
    with tempfile.TemporaryDirectory(prefix="localkube-check-") as source:
        Path(source, "probe").write_text("seen")
        try:
            enter_private_mounts(PrivateMounts(binds=((source, target, True),)))
            seen = Path(target, "probe").read_text()
        except OSError as error:
            print(why(error), file=sys.stderr)
            return 1
        if seen != "seen":
            print(f"{target} does not show the bound directory", file=sys.stderr)
            return 1
    return 0


def _report(status_fd: int, line: str) -> None:
    # The kubelet may be gone: then nobody listens, and that is fine.
    with contextlib.suppress(OSError):
        os.write(status_fd, line.encode(errors="replace") + b"\n")


def _die_with_shim() -> None:
    # Between fork and exec in a single-threaded process: a prctl call only.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def run(
    lifeline: int, status_fd: int, argv: Sequence[str], mounts: PrivateMounts | None = None
) -> int:
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    if mounts:
        try:
            enter_private_mounts(mounts)
        except OSError as error:
            _report(status_fd, f"error private mounts: {why(error)}")
            return 0
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


_USAGE = (
    "usage: shim.py LIFELINE_FD STATUS_FD [--bind SRC DST | --bind-ro SRC DST | --mask DST]..."
    " -- ARGV...\n       shim.py --check TARGET"
)


def parse_mounts(options: Sequence[str]) -> PrivateMounts:
    """The ``--bind``/``--bind-ro``/``--mask`` options; ValueError on anything else."""
    binds: list[tuple[str, str, bool]] = []
    masks: list[str] = []
    rest = list(options)
    while rest:
        option = rest.pop(0)
        if option in {"--bind", "--bind-ro"} and len(rest) >= 2:
            binds.append((rest.pop(0), rest.pop(0), option == "--bind-ro"))
        elif option == "--mask" and rest:
            masks.append(rest.pop(0))
        else:
            raise ValueError(f"unexpected {option!r}")
    return PrivateMounts(binds=tuple(binds), masks=tuple(masks))


def main(args: Sequence[str]) -> int:
    if len(args) == 2 and args[0] == "--check":
        return check(args[1])
    try:
        separator = list(args).index("--", 2)
        mounts = parse_mounts(args[2:separator])
    except ValueError:
        print(_USAGE, file=sys.stderr)
        return 2
    argv = args[separator + 1 :]
    if not argv:
        print(_USAGE, file=sys.stderr)
        return 2
    return run(int(args[0]), int(args[1]), argv, mounts)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
