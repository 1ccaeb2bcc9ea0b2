"""What the fleet's cluster tests share (no tests here): sets, tenants, and a Job counter.

A test states a fleet the way a user would: tenants' Secrets (labelled), the
revision files in a ConfigMap, a ``DatabaseMigrationSet``. It reads the
outcome from the set's status, its children, their Jobs, its Events and the
databases themselves.
"""

from __future__ import annotations

import base64
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from revisor_operator import GROUP, SET_PLURAL, VERSION

from tests.cluster.conftest import Kube
from tests.support.kube import apply, as_dict, kubectl, wait_for

SET_CRD = Path(__file__).parents[2] / "manifests" / "crd" / "revisor.dev_databasemigrationsets.yaml"
SETTLED = ("Succeeded", "Failed", "Halted")


def install_set_crd(kube: Kube) -> None:
    apply(kube.api, SET_CRD.read_text())


def migration_set(name: str, *, template: Mapping[str, Any] | None = None,
                  **spec: Any) -> dict[str, Any]:  # fmt: skip
    """A ``DatabaseMigrationSet`` over Secrets labelled ``tenant=yes`` (unless ``targets``)."""
    body: dict[str, Any] = {
        "template": dict(template or {"source": {"configMap": {"name": "app-migrations"}}}),
        "targets": {"secretSelector": {"matchLabels": {"tenant": "yes"}}},
    }
    body.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DatabaseMigrationSet",
        "metadata": {"name": name},
        "spec": body,
    }


def create_set(kube: Kube, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
    api = client.CustomObjectsApi(kube.api)
    return as_dict(
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, SET_PLURAL, dict(body))
    )


def read_set(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    api = client.CustomObjectsApi(kube.api)
    return as_dict(api.get_namespaced_custom_object(GROUP, VERSION, namespace, SET_PLURAL, name))


def patch_set(kube: Kube, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
    api = client.CustomObjectsApi(kube.api)
    return as_dict(
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, SET_PLURAL, name, dict(patch))
    )


def delete_set(kube: Kube, namespace: str, name: str) -> None:
    client.CustomObjectsApi(kube.api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, SET_PLURAL, name, propagation_policy="Background"
    )


def set_gone(kube: Kube, namespace: str, name: str) -> bool:
    try:
        read_set(kube, namespace, name)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def phase_is(*phases: str) -> Any:
    return lambda obj: (obj.get("status") or {}).get("phase") in phases


def set_reaches(
    kube: Kube, namespace: str, name: str, *phases: str, timeout: float = 180
) -> dict[str, Any]:
    """The set once its phase is one of ``phases`` for its current generation."""

    def done(obj: Mapping[str, Any]) -> bool:
        status = obj.get("status") or {}
        return (
            status.get("phase") in phases
            and status.get("observedGeneration") == obj["metadata"]["generation"]
        )

    return wait_for(
        lambda: read_set(kube, namespace, name),
        done,
        timeout=timeout,
        interval=0.3,
        what=f"dbmset {namespace}/{name} to reach {'/'.join(phases)}",
    )


def ready_message(obj: Mapping[str, Any]) -> str:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == "Ready":
            return str(c.get("message", ""))
    return ""


def tenant_secret(
    kube: Kube, namespace: str, name: str, url: str, labels: Mapping[str, str] | None = None
) -> None:
    """A tenant's database Secret (key ``url``), labelled ``tenant=yes`` unless told."""
    client.CoreV1Api(kube.api).create_namespaced_secret(namespace, client.V1Secret.model_validate({
        "metadata": {"name": name, "labels": dict(labels if labels is not None else {"tenant": "yes"})},
        "data": {"url": base64.b64encode(url.encode()).decode()},
    }))  # fmt: skip


def label_secret(kube: Kube, namespace: str, name: str, labels: Mapping[str, str | None]) -> None:
    client.CoreV1Api(kube.api).patch_namespaced_secret(
        name, namespace, {"metadata": {"labels": dict(labels)}}
    )


def children(kube: Kube, namespace: str, set_name: str) -> list[dict[str, Any]]:
    """The set's children, as `kubectl get dbm -l revisor.dev/set=NAME` lists them."""
    api = client.CustomObjectsApi(kube.api)
    found = as_dict(
        api.list_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "databasemigrations",
            label_selector=f"revisor.dev/set={set_name}",
        )
    )
    items: list[dict[str, Any]] = found["items"]
    return items


def child_of(kube: Kube, namespace: str, set_name: str, target: str) -> dict[str, Any] | None:
    for item in children(kube, namespace, set_name):
        if item["metadata"]["annotations"].get("fleet.revisor.dev/target") == target:
            return item
    return None


def kubectl_get(kube: Kube, namespace: str, *what: str) -> str:
    """`kubectl get ...` as a user sees it (printer columns)."""
    done = subprocess.run(
        [kubectl(), "--kubeconfig", str(kube.kubeconfig), "-n", namespace, "get", *what],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


class JobCounter:
    """Every Job of a set, as a watch delivers it: the most running at once, and per child.

    A Job counts as running from its creation until it is finished (Complete or
    Failed) or deleted. The watch resumes where it was when the server ends it.
    """

    def __init__(self, kube: Kube, namespace: str, set_name: str) -> None:
        self.running: set[str] = set()
        self.max_running = 0
        self.created: dict[str, str] = {}  # job -> its child (or set, for query Jobs)
        self._namespace, self._selector = namespace, f"revisor.dev/set={set_name}"
        self._api = config.new_client_from_config(config_file=str(kube.kubeconfig))
        self._watch = watch.Watch()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._record, daemon=True)
        self._thread.start()

    def _record(self) -> None:
        batch = client.BatchV1Api(self._api)
        version: str | None = None
        while not self._stopped.is_set():
            try:
                for event in self._watch.stream(
                    batch.list_namespaced_job,
                    self._namespace,
                    label_selector=self._selector,
                    resource_version=version,
                    timeout_seconds=300,
                ):
                    self._see(event["type"], event["object"])
                    version = event["object"].metadata.resource_version
            except Exception:
                time.sleep(0.1)

    def _see(self, kind: str, job: Any) -> None:
        name = job.metadata.name
        conditions = (job.status.conditions if job.status else None) or []
        finished = any(c.type in ("Complete", "Failed") and c.status == "True" for c in conditions)
        owners = job.metadata.owner_references or []
        with self._lock:
            self.created.setdefault(name, owners[0].name if owners else "")
            if kind == "DELETED" or finished:
                self.running.discard(name)
            else:
                self.running.add(name)
            self.max_running = max(self.max_running, len(self.running))

    def per_child(self) -> dict[str, int]:
        with self._lock:
            counts: dict[str, int] = {}
            for owner in self.created.values():
                counts[owner] = counts.get(owner, 0) + 1
            return counts

    def stop(self) -> None:
        self._stopped.set()
        self._watch.stop()
        self._api.close()


def names_of(items: Iterable[Mapping[str, Any]]) -> list[str]:
    return sorted(str(i["metadata"]["name"]) for i in items)
