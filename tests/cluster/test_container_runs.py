"""A container's whole process tree ends with it, and with the kubelet, however it forked.

No cluster: ``ContainerRun`` is driven directly, and a SIGKILLed kubelet is a
small Python process that started one and is then killed. The container
forks a child (same process group) and a daemon that double-forks and calls
``setsid`` (its own session, parent gone): the case a process-group kill and
death signals both miss.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

# tests/cluster/conftest.py puts tools/ on sys.path when the Makefile has not.
from localkube.containers import ContainerRun

from tests.support.kube import wait_for

TOOLS = Path(__file__).resolve().parents[2] / "tools"

# argv[1]: a file to write "leader child daemon" pids to; argv[2]: "exit" or "stay".
TREE = textwrap.dedent(
    """
    import os, sys, time
    out, mode = sys.argv[1], sys.argv[2]
    child = os.fork()
    if child == 0:
        time.sleep(300)
        os._exit(0)
    read, write = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.write(write, str(os.getpid()).encode())
            os.close(write)
            time.sleep(300)
        os._exit(0)
    os.close(write)
    daemon = int(os.read(read, 32))
    with open(out + ".tmp", "w") as f:
        f.write(f"{os.getpid()} {child} {daemon}")
    os.rename(out + ".tmp", out)
    if mode == "stay":
        time.sleep(300)
    """
)


def alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False  # gone; or gone between opening the file and reading it (ESRCH)
    return stat.rpartition(b")")[2].split()[0] != b"Z"


def _pids(out: Path) -> list[int]:
    """Leader, child and daemon, once the tree has written them."""
    wait_for(out.exists, bool, timeout=20, what=f"the tree to write {out}")
    pids = [int(p) for p in out.read_text().split()]
    assert len(pids) == 3
    return pids


def _run(tmp_path: Path, mode: str) -> tuple[ContainerRun, threading.Event]:
    exited = threading.Event()
    run = ContainerRun(
        argv=[sys.executable, "-c", TREE, str(tmp_path / "pids"), mode],
        env={"PATH": os.environ.get("PATH", os.defpath)},
        cwd=tmp_path / "cwd",
        log=tmp_path / "log",
        termination_file=tmp_path / "termination-log",
        message_policy="File",
        on_exit=exited.set,
    )
    return run, exited


def test_what_a_container_forked_goes_when_its_main_process_exits(tmp_path: Path) -> None:
    run, exited = _run(tmp_path, "exit")
    leader, child, daemon = _pids(tmp_path / "pids")
    assert run.pid == leader
    assert exited.wait(20), "the run did not end"
    assert run.exit is not None
    assert run.exit.exit_code == 0
    assert run.exit.reason == "Completed"
    # Reported only once everything it forked was gone, the escaped daemon too.
    assert not alive(child)
    assert not alive(daemon)


def test_killing_a_container_kills_its_group_and_what_left_it(tmp_path: Path) -> None:
    run, exited = _run(tmp_path, "stay")
    leader, child, daemon = _pids(tmp_path / "pids")
    assert all(alive(pid) for pid in (leader, child, daemon))
    run.kill()
    assert exited.wait(20), "the run did not end"
    assert run.exit is not None
    assert (run.exit.exit_code, run.exit.signal) == (137, signal.SIGKILL)
    assert not any(alive(pid) for pid in (leader, child, daemon))


def test_missing_entrypoint_is_a_start_error(tmp_path: Path) -> None:
    exited = threading.Event()
    run = ContainerRun(
        argv=["/nonexistent/revisor", "upgrade"],
        env={"PATH": os.defpath},
        cwd=tmp_path / "cwd",
        log=tmp_path / "log",
        termination_file=tmp_path / "termination-log",
        message_policy="File",
        on_exit=exited.set,
    )
    assert exited.is_set()
    assert run.exit is not None
    assert (run.exit.exit_code, run.exit.reason) == (128, "StartError")
    assert "/nonexistent/revisor" in run.exit.message


# argv[1]: a directory; argv[2]: the tree; argv[3]: "main" or "thread" (started from a
# thread that has ended before the kubelet dies, as a pod worker's may have).
KUBELET = textwrap.dedent(
    """
    import os, sys, threading, time
    from pathlib import Path
    from localkube.containers import ContainerRun
    tmp, tree, where = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    def start():
        ContainerRun(
            argv=[sys.executable, "-c", tree, str(tmp / "pids"), "stay"],
            env={"PATH": os.environ["PATH"]},
            cwd=tmp / "cwd",
            log=tmp / "log",
            termination_file=tmp / "termination-log",
            message_policy="File",
            on_exit=lambda: None,
        )
    if where == "thread":
        worker = threading.Thread(target=start)
        worker.start()
        worker.join()
    else:
        start()
    time.sleep(300)
    """
)


@pytest.mark.parametrize("where", ["main", "thread"])
def test_sigkilled_kubelet_leaves_no_container_process_behind(tmp_path: Path, where: str) -> None:
    """The kernel closes the lifeline of a dead kubelet; the shim then kills the whole tree."""
    path = os.pathsep.join(filter(None, [str(TOOLS), os.environ.get("PYTHONPATH")]))
    kubelet = subprocess.Popen(
        [sys.executable, "-c", KUBELET, str(tmp_path), TREE, where],
        env={**os.environ, "PYTHONPATH": path},
    )
    try:
        pids = _pids(tmp_path / "pids")
        assert all(alive(pid) for pid in pids)
    finally:
        kubelet.kill()
        kubelet.wait()
    wait_for(
        lambda: [pid for pid in pids if alive(pid)],
        lambda left: not left,
        timeout=10,
        what="every process of the container to die with the kubelet",
    )
