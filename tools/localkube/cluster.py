"""A whole local cluster: the control plane plus a process-kubelet, started and stopped as one.

The kubelet runs as a child process (``python -m localkube kubelet``), like
the other components, so a crash in it cannot take the caller down and it is
stopped the same way. ``start`` returns once the node is Ready; ``stop`` (also
registered with ``atexit``) leaves no process behind. Its image registry is
``images_dir`` (``localkube.images``): make a directory there to give an image
a root filesystem.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import urllib3

from localkube import processes
from localkube.api import ApiError
from localkube.binaries import Binaries, find_binaries
from localkube.controlplane import ControlPlane, ControlPlaneError, log_tail
from localkube.kubelet import DEFAULT_NODE_NAME

_TOOLS_DIR = Path(__file__).resolve().parent.parent


class LocalCluster:
    """``with LocalCluster(state_dir) as cluster:`` gives ``cluster.kubeconfig``.

    A started cluster can be found again by its kubeconfig (:meth:`running_for`),
    which is how a test that only has the kubeconfig restarts its API server.
    """

    #: Clusters started in this process and not stopped yet, by kubeconfig.
    _running: ClassVar[dict[Path, LocalCluster]] = {}

    def __init__(
        self,
        state_dir: Path,
        *,
        binaries: Binaries | None = None,
        kubelet: bool = True,
        node_name: str = DEFAULT_NODE_NAME,
    ) -> None:
        self.state_dir = state_dir.resolve()
        self.control_plane = ControlPlane(self.state_dir, binaries or find_binaries())
        self.with_kubelet = kubelet
        self.node_name = node_name
        self.startup_seconds = 0.0

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    @property
    def images_dir(self) -> Path:
        """The kubelet's image registry: ``localkube.images.image_dir(images_dir, ref)``."""
        return self.state_dir / "images"

    @property
    def server(self) -> str:
        return self.control_plane.server

    def start(self, *, timeout: float = 180.0) -> None:
        started = time.monotonic()
        atexit.register(self.stop)
        try:
            self.control_plane.start(timeout=timeout)
            if self.with_kubelet:
                self._start_kubelet(deadline=started + timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        LocalCluster._running[self.kubeconfig.resolve()] = self

    def stop(self) -> None:
        LocalCluster._running.pop(self.kubeconfig.resolve(), None)
        self.control_plane.stop()

    @classmethod
    def running_for(cls, kubeconfig: Path) -> LocalCluster | None:
        """The cluster this process started whose kubeconfig is ``kubeconfig``, if it runs."""
        return cls._running.get(Path(kubeconfig).resolve())

    def restart_apiserver(self, *, timeout: float = 60.0) -> None:
        """Stop and start kube-apiserver: same port, certificates and etcd (``ControlPlane``)."""
        self.control_plane.restart_apiserver(timeout=timeout)

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver alone, until :meth:`start_apiserver`."""
        self.control_plane.stop_apiserver()

    def start_apiserver(self, *, timeout: float = 60.0) -> None:
        """Start the stopped kube-apiserver again and wait until it is ready."""
        self.control_plane.start_apiserver(timeout=timeout)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _start_kubelet(self, *, deadline: float) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(_TOOLS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        argv = [
            sys.executable, "-m", "localkube", "kubelet",
            "--kubeconfig", str(self.kubeconfig),
            "--root", str(self.state_dir / "kubelet"),
            "--node-name", self.node_name,
            "--tls-cert", str(self.control_plane.pki_dir / "kubelet.crt"),
            "--tls-key", str(self.control_plane.pki_dir / "kubelet.key"),
            "--images-dir", str(self.images_dir),
        ]  # fmt: skip
        log = self.control_plane.logs / "kubelet.log"
        process = processes.spawn(argv, log=log, env=env, cwd=self.state_dir)
        # Registered last: stopped first, so it kills its containers while the API is still up.
        self.control_plane.started.append(("kubelet", process))
        api = self.control_plane.api()
        while True:
            self.control_plane.check_alive()
            try:
                node: dict[str, Any] = api.get(f"/api/v1/nodes/{self.node_name}")
            except (ApiError, urllib3.exceptions.HTTPError, OSError):
                node = {}  # not registered yet; retried until the deadline
            conditions = node.get("status", {}).get("conditions") or []
            # Scheduling waits for the node lifecycle controller to lift its not-ready taint too.
            taints = node.get("spec", {}).get("taints") or []
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
            if ready and not taints:
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"node {self.node_name} not Ready in time; kubelet log:\n" + log_tail(log)
                )
            time.sleep(0.1)
