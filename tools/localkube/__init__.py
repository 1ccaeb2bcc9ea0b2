"""localkube: a real Kubernetes control plane and a process-kubelet, for tests and demos.

``LocalCluster`` starts etcd, kube-apiserver, kube-controller-manager and
kube-scheduler on loopback plus a kubelet that runs pods' commands as local
processes. ``python -m localkube --help`` is the command-line face of the same.
"""

from localkube.binaries import KUBE_VERSION, Binaries, BinariesMissingError, find_binaries
from localkube.cluster import LocalCluster
from localkube.controlplane import ControlPlaneError

__all__ = [
    "KUBE_VERSION",
    "Binaries",
    "BinariesMissingError",
    "ControlPlaneError",
    "LocalCluster",
    "find_binaries",
]
