"""The process-kubelet's Node object and its heartbeat.

The scheduler binds pods only to a Ready node with allocatable resources,
and the controller-manager's node lifecycle controller taints a node (and
evicts its pods) when neither its Lease in ``kube-node-lease`` nor its Ready
condition has been renewed within the grace period. So the node is
registered Ready, its Lease is renewed every ``LEASE_RENEW_SECONDS``, and the
Ready condition's heartbeat is refreshed every ``STATUS_RENEW_SECONDS``.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from localkube.api import Api, ApiError
from localkube.binaries import KUBE_VERSION

LEASE_DURATION_SECONDS = 40
LEASE_RENEW_SECONDS = 10.0
STATUS_RENEW_SECONDS = 60.0
CAPACITY = {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "20Gi"}

log = logging.getLogger("localkube.node")


def now() -> str:
    """RFC 3339 timestamp with seconds precision, as metav1.Time serialises."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    """RFC 3339 timestamp with microseconds, as metav1.MicroTime (Lease renewTime) wants."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _node_status(*, kubelet_port: int) -> dict[str, Any]:
    stamp = now()

    def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }

    return {
        "capacity": CAPACITY,
        "allocatable": CAPACITY,
        "conditions": [
            condition("Ready", "True", "KubeletReady", "process-kubelet is posting ready status"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": "localhost"},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "nodeInfo": {
            "machineID": "localkube",
            "systemUUID": "localkube",
            "bootID": "localkube",
            "kernelVersion": "",
            "osImage": "process-kubelet",
            "containerRuntimeVersion": "process://local",
            "kubeletVersion": KUBE_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }


class NodeAgent:
    """Registers the node and keeps it alive until ``stop`` is set."""

    def __init__(
        self,
        api: Api,
        *,
        node_name: str,
        kubelet_port: int = 0,
        annotations: dict[str, str | None] | None = None,
    ) -> None:
        """``annotations`` describe this kubelet on its Node; a None value removes one."""
        self._api = api
        self.node_name = node_name
        self._kubelet_port = kubelet_port
        self._annotations = dict(annotations or {})

    def register(self) -> None:
        """Create the Node (or take over an existing one) and mark it Ready."""
        metadata: dict[str, Any] = {
            "name": self.node_name,
            "labels": {
                "kubernetes.io/hostname": self.node_name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "localkube.dev/process-kubelet": "true",
            },
        }
        annotations = {key: value for key, value in self._annotations.items() if value is not None}
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {**metadata, "annotations": annotations},
            "spec": {},
        }
        try:
            self._api.post("/api/v1/nodes", body)
        except ApiError as error:
            if error.status != 409:
                raise
            # Taken over: what this kubelet says about itself replaces what the last one said.
            patch = {"metadata": {**metadata, "annotations": self._annotations}}
            self._api.patch(f"/api/v1/nodes/{self.node_name}", patch)
        self._post_status()
        self._renew_lease()

    def heartbeat(self, stop: threading.Event) -> None:
        """Renew the Lease (and now and then the Ready condition) until ``stop`` is set."""
        since_status = 0.0
        while not stop.wait(LEASE_RENEW_SECONDS):
            since_status += LEASE_RENEW_SECONDS
            try:
                self._renew_lease()
                if since_status >= STATUS_RENEW_SECONDS:
                    self._post_status()
                    since_status = 0.0
            except Exception:
                log.exception("node heartbeat failed; retrying")

    def _post_status(self) -> None:
        self._api.patch(
            f"/api/v1/nodes/{self.node_name}/status",
            {"status": _node_status(kubelet_port=self._kubelet_port)},
        )

    def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        spec = {
            "holderIdentity": self.node_name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": micro_now(),
        }
        try:
            self._api.patch(path, {"spec": spec})
        except ApiError as error:
            if error.status != 404:
                raise
            node = self._api.get(f"/api/v1/nodes/{self.node_name}")
            owner = {
                "apiVersion": "v1",
                "kind": "Node",
                "name": self.node_name,
                "uid": node["metadata"]["uid"],
            }
            self._api.post(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.node_name, "ownerReferences": [owner]},
                    "spec": spec,
                },
            )
