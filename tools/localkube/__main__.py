"""``python -m localkube``: a real Kubernetes control plane + process-kubelet on this machine.

Commands:

  up      start etcd, kube-apiserver, kube-controller-manager, kube-scheduler and a
          process-kubelet; wait until the node is Ready; print the kubeconfig path.
          Foreground until Ctrl-C / SIGTERM, or --detach to leave it running.
  down    stop what a detached ``up`` started in that state directory.
  status  say whether a detached cluster runs in that state directory.
  kubelet run only the process-kubelet against an existing API server.
  which   print the path of etcd, kube-apiserver, kube-controller-manager,
          kube-scheduler or kubectl (building them first if needed).

Example:

  python -m localkube up --state-dir .local/cluster --kubeconfig .local/kubeconfig --detach
  kubectl --kubeconfig .local/kubeconfig get nodes
  python -m localkube down --state-dir .local/cluster
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from localkube.binaries import NAMES, BinariesMissingError, find_binaries
from localkube.controlplane import ControlPlaneError

PID_FILE = "localkube.pid"
DAEMON_LOG = "localkube.log"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m localkube",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start a cluster (foreground, or --detach)")
    up.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".local/cluster"),
        help="where certificates, etcd data, logs and pods live "
        "(wiped on start; default: .local/cluster)",
    )
    up.add_argument(
        "--kubeconfig",
        type=Path,
        help="also write the admin kubeconfig here (always: STATE_DIR/kubeconfig)",
    )
    up.add_argument(
        "--detach",
        action="store_true",
        help="return once the node is Ready, leaving the cluster running",
    )
    up.add_argument("--no-kubelet", action="store_true", help="control plane only, no node")
    up.add_argument("--node-name", default="localkube")
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness")
    up.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)

    down = commands.add_parser("down", help="stop a detached cluster")
    down.add_argument("--state-dir", type=Path, default=Path(".local/cluster"))
    down.add_argument("--timeout", type=float, default=60.0)

    status = commands.add_parser("status", help="is a detached cluster running?")
    status.add_argument("--state-dir", type=Path, default=Path(".local/cluster"))

    kubelet = commands.add_parser("kubelet", help="run only the process-kubelet")
    kubelet.add_argument("--kubeconfig", type=Path, required=True)
    kubelet.add_argument("--root", type=Path, required=True, help="pods' directories go here")
    kubelet.add_argument("--node-name", default="localkube")
    kubelet.add_argument("--tls-cert", type=Path, help="serving certificate for `kubectl logs`")
    kubelet.add_argument("--tls-key", type=Path, help="its private key")
    kubelet.add_argument(
        "--images-dir",
        type=Path,
        help="image root filesystems: IMAGES_DIR/<quoted image reference>/ "
        "(see localkube.images; default: no image has one)",
    )

    which = commands.add_parser("which", help="path of a Kubernetes binary")
    which.add_argument("name", choices=NAMES)
    return parser


def _running_pid(state_dir: Path) -> int | None:
    """The pid of the daemon serving ``state_dir``, if it runs.

    Not just any process with the recorded pid: a pid is reused after the
    daemon is gone (a reboot, a SIGKILL), and ``down`` must never signal a
    stranger. A zombie, killed but not yet reaped, is not running either.
    """
    try:
        pid = int((state_dir / PID_FILE).read_text().strip())
        proc = Path(f"/proc/{pid}")
        state = proc.joinpath("stat").read_bytes().rpartition(b")")[2].split()[0]
        argv = proc.joinpath("cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    ours = b"localkube" in argv and b"up" in argv and os.fsencode(state_dir) in argv
    return pid if ours and state != b"Z" else None


def _up(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir.resolve()
    if _running_pid(state_dir) is not None:
        print(f"localkube: already running in {state_dir}", file=sys.stderr)
        print(state_dir / "kubeconfig")
        return 0
    if args.detach:
        return _detach(args, state_dir)
    from localkube.cluster import LocalCluster

    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
    cluster = LocalCluster(state_dir, kubelet=not args.no_kubelet, node_name=args.node_name)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        cluster.start(timeout=args.timeout)
        if args.kubeconfig:
            args.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cluster.kubeconfig, args.kubeconfig)
        print(
            f"localkube: ready in {cluster.startup_seconds:.1f} s at {cluster.server}",
            file=sys.stderr,
        )
        print(args.kubeconfig or cluster.kubeconfig, flush=True)
        if args.ready_fd is not None:
            os.write(args.ready_fd, b"ready\n")
            os.close(args.ready_fd)
        while not stopping.wait(1.0):
            cluster.control_plane.check_alive()
    finally:
        cluster.stop()
        (state_dir / PID_FILE).unlink(missing_ok=True)
    return 0


def _detach(args: argparse.Namespace, state_dir: Path) -> int:
    state_dir.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    argv = [sys.executable, "-m", "localkube", "up", "--state-dir", str(state_dir),
            "--node-name", args.node_name, "--timeout", str(args.timeout),
            "--ready-fd", str(write_end)]  # fmt: skip
    if args.kubeconfig:
        argv += ["--kubeconfig", str(args.kubeconfig.resolve())]
    if args.no_kubelet:
        argv.append("--no-kubelet")
    log = state_dir.parent / f"{state_dir.name}.{DAEMON_LOG}"
    with log.open("wb") as out:
        # Deliberately no death signal: a detached cluster outlives this command.
        daemon = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=(write_end,),
            env=os.environ.copy(),
        )
    os.close(write_end)
    # The daemon writes "ready" on the pipe; EOF without it means it died.
    ready, _, _ = select.select([read_end], [], [], args.timeout + 30)
    answer = os.read(read_end, 64) if ready else b""
    os.close(read_end)
    if answer.strip() != b"ready":
        daemon.kill()
        print(f"localkube: failed to start; see {log}", file=sys.stderr)
        print("\n".join(log.read_text(errors="replace").splitlines()[-30:]), file=sys.stderr)
        return 1
    (state_dir / PID_FILE).write_text(f"{daemon.pid}\n")
    kubeconfig = args.kubeconfig or state_dir / "kubeconfig"
    print(
        f"localkube: running (pid {daemon.pid}); stop with "
        f"`python -m localkube down --state-dir {args.state_dir}`",
        file=sys.stderr,
    )
    print(kubeconfig)
    return 0


def _down(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir.resolve()
    pid = _running_pid(state_dir)
    if pid is None:
        print(f"localkube: nothing running in {state_dir}", file=sys.stderr)
        (state_dir / PID_FILE).unlink(missing_ok=True)
        return 0
    handle = os.pidfd_open(pid)
    os.kill(pid, signal.SIGTERM)
    exited, _, _ = select.select([handle], [], [], args.timeout)
    if not exited:
        # Its children die with it (death signal), so killing the group is enough.
        os.killpg(pid, signal.SIGKILL)
        select.select([handle], [], [], 10)
    os.close(handle)
    (state_dir / PID_FILE).unlink(missing_ok=True)
    print(f"localkube: stopped (pid {pid})", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir.resolve()
    pid = _running_pid(state_dir)
    if pid is None:
        print(f"localkube: not running in {state_dir}")
        return 1
    print(f"localkube: running (pid {pid}); kubeconfig {state_dir / 'kubeconfig'}")
    return 0


def _kubelet(args: argparse.Namespace) -> int:
    from localkube.api import Api
    from localkube.kubelet import Kubelet

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.root.mkdir(parents=True, exist_ok=True)
    api = Api.from_kubeconfig(args.kubeconfig, scratch_dir=args.root / "credentials")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    tls = (args.tls_cert, args.tls_key) if args.tls_cert and args.tls_key else None
    kubelet = Kubelet(
        api, root=args.root, node_name=args.node_name, tls=tls, images_dir=args.images_dir
    )
    # The pod watch blocks in a read; it runs on a daemon thread so that stopping
    # never waits for the next event. The main thread stays free for signals.
    runner = threading.Thread(target=kubelet.run, args=(stop,), name="kubelet", daemon=True)
    runner.start()
    while not stop.wait(1.0):
        if not runner.is_alive():
            return 1
    kubelet.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "up":
            return _up(args)
        if args.command == "down":
            return _down(args)
        if args.command == "status":
            return _status(args)
        if args.command == "kubelet":
            return _kubelet(args)
        print(find_binaries().path(args.name))
        return 0
    except (BinariesMissingError, ControlPlaneError) as error:
        print(f"localkube: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
