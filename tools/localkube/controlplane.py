"""etcd, kube-apiserver, kube-controller-manager and kube-scheduler on loopback.

Real binaries, real flags, envtest's conventions (admin client certificate in
``system:masters``, RBAC, service-account signing keys, loopback only, etcd
without fsync) plus the two components envtest leaves out: the
controller-manager (job controller, garbage collector, service-account and
token controllers, root CA publisher) and the scheduler. Startup waits for
readiness (``/readyz``, the default namespace and ServiceAccount), never for
a fixed time.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import urllib3
import yaml

from localkube import processes
from localkube.api import Api, ApiError, Credentials
from localkube.binaries import Binaries
from localkube.certs import SERVICE_CLUSTER_IP_RANGE, Pki, make_pki

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


class ControlPlaneError(RuntimeError):
    """A component did not start; the message carries the tail of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_kubeconfig(path: Path, *, server: str, pki: Pki, name: str = "localkube") -> None:
    """A self-contained kubeconfig (certificates inline) for kubectl and the Python client."""

    def b64(file: Path) -> str:
        return base64.b64encode(file.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {"server": server, "certificate-authority-data": b64(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": f"{name}-admin",
                "user": {
                    "client-certificate-data": b64(pki.admin_cert),
                    "client-key-data": b64(pki.admin_key),
                },
            }
        ],
        "contexts": [
            {
                "name": name,
                "context": {"cluster": name, "user": f"{name}-admin", "namespace": "default"},
            }
        ],
        "current-context": name,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)


def log_tail(path: Path, *, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


@dataclass
class ControlPlane:
    """The four control-plane processes sharing one state directory."""

    state_dir: Path
    binaries: Binaries
    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    api_port: int = 0
    #: Each component's command line, as it was started (what a restart runs again).
    commands: dict[str, list[str]] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def start(self, *, timeout: float = 120.0) -> None:
        """Start everything; return once the API is ready and the default ServiceAccount exists."""
        deadline = time.monotonic() + timeout
        self.state_dir.mkdir(parents=True, exist_ok=True)
        pki = make_pki(self.pki_dir)
        etcd_port, peer_port, self.api_port = free_port(), free_port(), free_port()
        write_kubeconfig(self.kubeconfig, server=self.server, pki=pki)
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=localkube",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=localkube={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._spawn(
            "kube-apiserver",
            [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                f"--cert-dir={self.state_dir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-key-file={pki.service_account_pub}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                # The "kubernetes" Endpoints may not point at loopback: keep the Service, skip them.
                "--endpoint-reconciler-type=none",
                # `kubectl logs` goes through the API server to the process-kubelet's log server.
                f"--kubelet-client-certificate={pki.admin_cert}",
                f"--kubelet-client-key={pki.admin_key}",
                f"--kubelet-certificate-authority={pki.ca_cert}",
                "--kubelet-preferred-address-types=InternalIP",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
        )
        # The controller-manager gives up if the API server is not healthy within
        # about 10 s, which a cold start on a slow machine can exceed: start it after.
        self._wait_ready(deadline)
        component_kubeconfig = str(self.kubeconfig)
        self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries.kube_controller_manager),
                f"--kubeconfig={component_kubeconfig}",
                f"--authentication-kubeconfig={component_kubeconfig}",
                f"--authorization-kubeconfig={component_kubeconfig}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--controllers=*",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.binaries.kube_scheduler),
                f"--kubeconfig={component_kubeconfig}",
                f"--authentication-kubeconfig={component_kubeconfig}",
                f"--authorization-kubeconfig={component_kubeconfig}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._wait_for_default_service_account(deadline)

    def stop(self) -> None:
        """Stop every component; safe to call twice.

        The kubelet goes first, on its own, so it can kill its containers while
        the API is still up; the rest stop together.
        """
        kubelets = [process for name, process in self.started if name == "kubelet"]
        others = [process for name, process in self.started if name != "kubelet"]
        processes.stop_all(kubelets, grace=15.0)
        processes.stop_all(others, grace=5.0)
        self.started.clear()

    def stop_apiserver(self, *, grace: float = 15.0) -> None:
        """Stop kube-apiserver alone: etcd, the controllers, the scheduler and kubelet stay.

        Everything that talks to the API (the controllers, the kubelet, an
        operator, kubectl) sees connection errors until :meth:`start_apiserver`;
        what it stored stays in etcd.
        """
        process = self._process("kube-apiserver")
        processes.stop(process, grace=grace)

    def start_apiserver(self, *, timeout: float = 60.0) -> None:
        """Start kube-apiserver again as it first ran: same flags, port, certificates and etcd.

        Returns once ``/readyz`` is ok. Call it from a thread that outlives the
        cluster (the one that started it, or the main thread): the new process
        dies with the thread that forks it (``processes``).
        """
        name = "kube-apiserver"
        if self._process(name).poll() is None:
            raise ControlPlaneError(f"{name} is running; stop it first")
        process = processes.spawn(
            self.commands[name], log=self.logs / f"{name}.log", cwd=self.state_dir
        )
        self.started = [(n, process if n == name else p) for n, p in self.started]
        self._wait_ready(time.monotonic() + timeout)

    def restart_apiserver(self, *, timeout: float = 60.0) -> None:
        """:meth:`stop_apiserver`, then :meth:`start_apiserver`."""
        self.stop_apiserver()
        self.start_apiserver(timeout=timeout)

    def _process(self, name: str) -> subprocess.Popen[bytes]:
        for started, process in self.started:
            if started == name:
                return process
        raise ControlPlaneError(f"{name} was never started")

    def api(self) -> Api:
        return Api(
            Credentials(
                server=self.server,
                ca_file=self.pki_dir / "ca.crt",
                cert_file=self.pki_dir / "admin.crt",
                key_file=self.pki_dir / "admin.key",
            ),
            timeout=5.0,
        )

    def check_alive(self) -> None:
        """Raise with the component's log tail if any component has exited."""
        for name, process in self.started:
            if process.poll() is not None:
                log = self.logs / f"{name}.log"
                raise ControlPlaneError(
                    f"{name} exited with {process.returncode}; last lines of {log}:\n"
                    + log_tail(log)
                )

    def _spawn(self, name: str, argv: list[str]) -> None:
        process = processes.spawn(argv, log=self.logs / f"{name}.log", cwd=self.state_dir)
        self.started.append((name, process))
        self.commands[name] = list(argv)

    def _poll(self, deadline: float, what: str, probe: Callable[[], bool]) -> None:
        # A readiness check with a short retry interval, bounded by the overall deadline.
        while True:
            self.check_alive()
            try:
                if probe():
                    return
            except (ApiError, urllib3.exceptions.HTTPError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"timed out waiting for {what}; logs in {self.logs}")
            time.sleep(0.1)

    def _wait_ready(self, deadline: float) -> None:
        api = self.api()

        def ready() -> bool:
            return api.get_text("/readyz").strip() == "ok"

        self._poll(deadline, "kube-apiserver /readyz", ready)

    def _wait_for_default_service_account(self, deadline: float) -> None:
        api = self.api()

        def exists() -> bool:
            api.get("/api/v1/namespaces/default/serviceaccounts/default")
            return True

        self._poll(deadline, "the default ServiceAccount", exists)
