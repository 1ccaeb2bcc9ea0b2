"""A local cluster started by hand stops completely: after `down`, and after its daemon is SIGKILLed.

``make cluster-up`` / ``make cluster-down`` are driven through their scripts,
pointed at a temporary directory; the SIGKILL case uses ``python -m localkube
up --detach`` itself. Each cluster runs a pod whose container forks a child
and a daemon that leaves its session: after the stop, no process of the
control plane, the kubelet or that pod may remain. Two start-ups (~10 s each).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import config

# tests/cluster/conftest.py puts tools/ on sys.path when the Makefile has not.
from localkube import BinariesMissingError, find_binaries

from tests.cluster.test_container_runs import TREE, alive
from tests.support.kube import apply, existing_kubeconfig, localkube, wait_for

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet")


@pytest.fixture(scope="module", autouse=True)
def _binaries() -> None:
    """The local binaries; on an existing cluster only if already there (no build for this)."""
    try:
        find_binaries(build=existing_kubeconfig(os.environ) is None)
    except BinariesMissingError as error:
        pytest.skip(f"needs the local Kubernetes binaries: {error}")


def processes_of(state_dir: Path) -> dict[int, str]:
    """Live processes started for ``state_dir``: it is in their argv or holds their cwd."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not alive(int(entry.name)):
            continue
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = (entry / "cwd").readlink()
        except OSError:
            continue  # gone meanwhile, or not ours to look at
        if str(state_dir) in argv or Path(cwd).is_relative_to(state_dir):
            found[int(entry.name)] = argv
    return found


def _component(argv: str) -> str | None:
    for name in COMPONENTS:
        if f"/{name} " in argv or f" {name} " in argv:
            return name
    return None


def _start_pod_tree(kubeconfig: Path, out: Path) -> list[int]:
    """A pod whose container forks a child and an escaped daemon; their pids once running."""
    api = config.new_client_from_config(config_file=str(kubeconfig))
    out.parent.mkdir(parents=True, exist_ok=True)
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "tree"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "x",
                    "command": [sys.executable, "-c", TREE, f"/out/{out.name}", "stay"],
                    "volumeMounts": [{"name": "out", "mountPath": "/out"}],
                }
            ],
            # hostPath means this machine's path: the test reads the pids the tree wrote.
            "volumes": [{"name": "out", "hostPath": {"path": str(out.parent)}}],
        },
    }
    try:
        apply(api, pod, namespace="default")
        wait_for(out.exists, bool, timeout=60, what=f"pod tree to write {out}")
    finally:
        api.close()
    pids = [int(pid) for pid in out.read_text().split()]
    assert len(pids) == 3 and all(alive(pid) for pid in pids)
    return pids


def _assert_whole_cluster_runs(state_dir: Path, pod_pids: list[int]) -> None:
    """Prove the /proc scan sees every part, so that seeing none later means something."""
    running = processes_of(state_dir)
    assert {_component(argv) for argv in running.values()} >= set(COMPONENTS), running
    assert set(pod_pids) <= set(running), running


@pytest.fixture
def leftovers() -> Iterator[list[Path]]:
    """State directories whose processes are SIGKILLed after the test, should it fail."""
    dirs: list[Path] = []
    yield dirs
    for state_dir in dirs:
        for pid in processes_of(state_dir):
            if pid != os.getpid():
                os.kill(pid, signal.SIGKILL)


def _script(name: str, *, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """One of the project's ``scripts/``, as ``make`` runs it."""
    return subprocess.run(
        [str(REPO / "scripts" / name)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def test_cluster_down_after_cluster_up_leaves_no_process(
    tmp_path: Path, leftovers: list[Path]
) -> None:
    local = tmp_path / "local"
    env = {**os.environ, "REVISOR_LOCAL_DIR": str(local), "PY": sys.executable}
    state_dir = local / "cluster"
    leftovers.append(state_dir)
    up = _script("cluster-up.sh", env=env, timeout=300)
    assert up.returncode == 0, up.stderr
    assert "Cluster is up." in up.stdout
    node_line = up.stdout.strip().splitlines()[-1]  # `kubectl get nodes`, through the kubeconfig
    assert node_line.split()[:2] == ["localkube", "Ready"], up.stdout
    kubeconfig = local / "kubeconfig"
    pod_pids = _start_pod_tree(kubeconfig, tmp_path / "out" / "pids")
    _assert_whole_cluster_runs(state_dir, pod_pids)

    down = _script("cluster-down.sh", env=env, timeout=120)
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stderr
    # `down` returns once the daemon has exited, and the daemon once all it started has.
    assert processes_of(state_dir) == {}
    assert not any(alive(pid) for pid in pod_pids)
    assert not (state_dir / "localkube.pid").exists()


def test_sigkilled_daemon_takes_every_process_with_it(
    tmp_path: Path, leftovers: list[Path]
) -> None:
    state_dir = tmp_path / "cluster"
    leftovers.append(state_dir)
    up = localkube("up", "--state-dir", str(state_dir), "--detach", timeout=300)
    assert up.returncode == 0, up.stderr
    kubeconfig = Path(up.stdout.strip())
    assert kubeconfig == state_dir / "kubeconfig"
    pod_pids = _start_pod_tree(kubeconfig, tmp_path / "out" / "pids")
    _assert_whole_cluster_runs(state_dir, pod_pids)
    daemon = int((state_dir / "localkube.pid").read_text())

    os.kill(daemon, signal.SIGKILL)

    # Death signals take the components; the kubelet's death breaks the shims' lifeline.
    left = wait_for(
        lambda: processes_of(state_dir),
        lambda running: not running,
        timeout=20,
        what=f"every process of {state_dir} to be gone",
    )
    assert left == {}
    assert not any(alive(pid) for pid in pod_pids)
    status = localkube("status", "--state-dir", str(state_dir))
    assert status.returncode == 1
    assert "not running" in status.stdout
