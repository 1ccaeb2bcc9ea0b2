"""The process-kubelet: a Node whose pods run as local processes.

It registers a Ready node, keeps its Lease, and watches the pods the real
scheduler binds to it (``spec.nodeName``), handing each to a ``PodWorker``.
Terminal pods that get deleted are removed at once (zero-grace delete), as a
kubelet does. Processes run as the kubelet's own user. Logs are files under
``<root>/pods/<namespace>_<name>_<uid>/logs/``, served to ``kubectl logs``
by ``logserver``; ``exec``, ``attach`` and ``port-forward`` do not work.
Images are not pulled: with ``images_dir``, an image that has a directory
there has that root filesystem (``images``); the Node's annotation
``localkube.dev/images-dir`` says where it is. Every container gets the
``kubernetes`` Service's variables (``KUBERNETES_SERVICE_HOST``/``_PORT``,
pointing at the API server itself) and, as root, its pod's ServiceAccount
token at the standard path (``privatemounts``): a program that uses the
standard in-cluster configuration runs here unchanged.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import urllib3

from localkube.api import Api, ApiError
from localkube.images import IMAGES_DIR_ANNOTATION, ImageRegistry
from localkube.logserver import LogServer
from localkube.node import NodeAgent
from localkube.podworker import Host, PodWorker
from localkube.privatemounts import SERVICE_ACCOUNT_DIR, check_support
from localkube.sources import ApiSources, Pod

DEFAULT_NODE_NAME = "localkube"
# What a container inherits from the kubelet's environment; the rest comes from the pod spec.
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR")
RELIST_BACKOFF = 1.0

log = logging.getLogger("localkube.kubelet")


def service_env(server: str) -> dict[str, str]:
    """The ``kubernetes`` Service variables, pointing at the API server's real address."""
    url = urlparse(server)
    host, port = url.hostname or "127.0.0.1", str(url.port or 443)
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        "KUBERNETES_SERVICE_PORT_HTTPS": port,
        "KUBERNETES_PORT": f"tcp://{host}:{port}",
    }


def inherited_env(environ: Mapping[str, str], *, python_bin: str) -> dict[str, str]:
    """The kubelet's variables a container sees, with our Python's bin dir first on PATH.

    "The image" is this project's environment: ``revisor`` and ``python`` must
    resolve to the virtualenv the kubelet runs from, even when it was not activated.
    """
    env = {name: environ[name] for name in INHERITED_ENV if name in environ}
    path = [entry for entry in env.get("PATH", os.defpath).split(os.pathsep) if entry]
    env["PATH"] = os.pathsep.join([python_bin, *(p for p in path if p != python_bin)])
    return env


class Kubelet:
    """Runs until ``stop`` is set, then kills every container it started."""

    def __init__(
        self,
        api: Api,
        *,
        root: Path,
        node_name: str = DEFAULT_NODE_NAME,
        tls: tuple[Path, Path] | None = None,
        images_dir: Path | None = None,
    ) -> None:
        """``tls`` (certificate, key) enables the log server behind ``kubectl logs``.

        ``images_dir`` is the registry of image root filesystems (``images``).
        """
        images_dir = images_dir.resolve() if images_dir else None
        unsupported = check_support()
        if unsupported is None:
            log.info(
                "containers with a volume under /var/run/secrets get a mount namespace of "
                "their own with it mounted there (the ServiceAccount token at %s)",
                SERVICE_ACCOUNT_DIR,
            )
        else:
            log.warning(
                "containers cannot have mount namespaces of their own here (%s): a "
                "ServiceAccount token reaches a container only through paths in its argv "
                "and env, so in-cluster clients, which read %s, find none",
                unsupported,
                SERVICE_ACCOUNT_DIR,
            )
        self.api = api
        self.node_name = node_name
        self.root = root
        self.host = Host(
            api=api,
            sources=ApiSources(api),
            root=root,
            base_env=inherited_env(os.environ, python_bin=str(Path(sys.executable).parent)),
            service_env=service_env(api.credentials.server),
            images=ImageRegistry(images_dir),
            mount_namespaces=unsupported is None,
        )
        self.log_server = (
            LogServer(root=root, cert_file=tls[0], key_file=tls[1], is_running=self._is_running)
            if tls
            else None
        )
        port = self.log_server.port if self.log_server else 0
        # Always named, so that a kubelet without a registry removes a predecessor's.
        annotations = {IMAGES_DIR_ANNOTATION: str(images_dir) if images_dir else None}
        self.node = NodeAgent(api, node_name=node_name, kubelet_port=port, annotations=annotations)
        self._workers: dict[str, PodWorker] = {}
        self._finished: set[str] = set()
        self._lock = threading.Lock()

    def run(self, stop: threading.Event) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.host.images.directory is not None:
            self.host.images.directory.mkdir(parents=True, exist_ok=True)
        if self.log_server is not None:
            self.log_server.start()
        self.node.register()
        heartbeat = threading.Thread(
            target=self.node.heartbeat, args=(stop,), name="heartbeat", daemon=True
        )
        heartbeat.start()
        log.info("node %s registered and Ready", self.node_name)
        try:
            while not stop.is_set():
                try:
                    self._list_and_watch(stop)
                except (ApiError, urllib3.exceptions.HTTPError, OSError) as error:
                    log.warning("pod watch interrupted (%s); relisting", error)
                    stop.wait(RELIST_BACKOFF)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Kill every container now; the workers report nothing more."""
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.remove()
        for worker in workers:
            worker.join(timeout=30)

    def _is_running(self, namespace: str, name: str) -> bool:
        with self._lock:
            return any(w.key == f"{namespace}/{name}" for w in self._workers.values())

    def _list_and_watch(self, stop: threading.Event) -> None:
        selector = f"spec.nodeName={self.node_name}"
        listing = self.api.get("/api/v1/pods", fieldSelector=selector)
        seen = set()
        for pod in listing.get("items") or []:
            seen.add(pod["metadata"]["uid"])
            self._dispatch(pod)
        with self._lock:
            vanished = [w for uid, w in self._workers.items() if uid not in seen]
        for worker in vanished:
            worker.remove()
        version = listing["metadata"]["resourceVersion"]
        while not stop.is_set():
            for event in self.api.watch(
                "/api/v1/pods", resource_version=version, stop=stop, fieldSelector=selector
            ):
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        return  # resourceVersion too old: relist
                    raise ApiError(
                        status=int(obj.get("code", 500)),
                        method="WATCH",
                        path="/api/v1/pods",
                        body=str(obj),
                    )
                version = obj["metadata"]["resourceVersion"]
                if kind == "DELETED":
                    self._deleted(obj)
                elif kind in {"ADDED", "MODIFIED"}:
                    self._dispatch(obj)

    def _dispatch(self, pod: Pod) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            worker = self._workers.get(uid)
            if worker is not None:
                worker.update(pod)
                return
            terminal = pod.get("status", {}).get("phase") in {"Succeeded", "Failed"}
            if uid in self._finished or terminal:
                if pod["metadata"].get("deletionTimestamp"):
                    self._delete_now(pod)
                return
            worker = PodWorker(self.host, pod, on_finished=self._worker_finished)
            self._workers[uid] = worker
        log.info("pod %s/%s: starting", pod["metadata"]["namespace"], pod["metadata"]["name"])
        worker.start()

    def _deleted(self, pod: Pod) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            worker = self._workers.get(uid)
            self._finished.discard(uid)
        if worker is not None:
            worker.remove()

    def _worker_finished(self, worker: PodWorker) -> None:
        with self._lock:
            self._workers.pop(worker.uid, None)
            self._finished.add(worker.uid)
        # A deletion that arrived while the worker was finishing has to be honoured here.
        if worker.pod["metadata"].get("deletionTimestamp") and not worker.removed:
            self._delete_now(worker.pod)

    def _delete_now(self, pod: Pod) -> None:
        meta = pod["metadata"]
        try:
            self.api.delete(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            )
        except ApiError as error:
            if error.status not in {404, 409}:
                log.warning("pod %s/%s: delete failed: %s", meta["namespace"], meta["name"], error)
