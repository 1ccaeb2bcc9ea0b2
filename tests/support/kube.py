"""Helpers for tests against a real Kubernetes API: apply manifests, wait for conditions.

``apply`` takes dicts or YAML (one or many documents, CRDs and cluster-scoped
objects included) and server-side-applies them, so a test states the objects
it needs the way a user would. ``wait_for`` polls a fetch function until a
predicate holds and, on timeout, fails with the last object it saw: the
object is the diagnosis.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError
from revisor_operator import GROUP, PLURAL, VERSION

T = TypeVar("T")
Manifest = Mapping[str, Any]
FIELD_MANAGER = "revisor-tests"
TOOLS = Path(__file__).resolve().parents[2] / "tools"


def present(value: T | None, what: str = "the field") -> T:
    """``value``, asserted set: the client types nearly every field of its models Optional."""
    assert value is not None, f"the API left {what} unset"
    return value


def as_dict(value: object) -> dict[str, Any]:
    """A custom object (or list of them) as the client returns it: a JSON object, typed ``object``."""
    assert isinstance(value, dict), f"expected a JSON object, got {type(value).__name__}"
    return value


def documents(manifests: str | Manifest | Iterable[Manifest]) -> list[dict[str, Any]]:
    """Normalise YAML text, one dict or several into a list of dicts (empty documents dropped)."""
    if isinstance(manifests, str):
        return [dict(doc) for doc in yaml.safe_load_all(manifests) if doc]
    if isinstance(manifests, Mapping):
        return [dict(manifests)]
    return [dict(doc) for doc in manifests]


def _resource(dyn: dynamic.DynamicClient, api_version: str, kind: str) -> Any:
    try:
        return dyn.resources.get(api_version=api_version, kind=kind)
    except ResourceNotFoundError:
        # A CRD applied a moment ago is not in the cached discovery yet.
        dyn.resources.invalidate_cache()
        return dyn.resources.get(api_version=api_version, kind=kind)


def apply(
    api: client.ApiClient,
    manifests: str | Manifest | Iterable[Manifest],
    *,
    namespace: str | None = None,
) -> list[dict[str, Any]]:
    """Server-side apply each object (namespaced ones into ``namespace`` unless they say).

    A CustomResourceDefinition is waited on until Established, so the next
    document may be an object of the kind it defines.
    """
    dyn = dynamic.DynamicClient(api)
    applied = []
    for body in documents(manifests):
        resource = _resource(dyn, body["apiVersion"], body["kind"])
        target_ns = None
        if resource.namespaced:
            target_ns = body.get("metadata", {}).get("namespace") or namespace
            if target_ns is None:
                raise ValueError(f"{body['kind']} {body['metadata']['name']} needs a namespace")
        result = dyn.server_side_apply(
            resource,
            body=body,
            name=body["metadata"]["name"],
            namespace=target_ns,
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        ).to_dict()
        applied.append(result)
        if body["kind"] == "CustomResourceDefinition":
            wait_for(
                partial(
                    get,
                    api,
                    "apiextensions.k8s.io/v1",
                    "CustomResourceDefinition",
                    body["metadata"]["name"],
                ),
                lambda crd: condition(crd, "Established") == "True",
                timeout=30,
                what=f"CRD {body['metadata']['name']} Established",
            )
            dyn.resources.invalidate_cache()
    return applied


def get(
    api: client.ApiClient,
    api_version: str,
    kind: str,
    name: str,
    namespace: str | None = None,
) -> dict[str, Any] | None:
    """The object as a dict, or None when it does not exist."""
    dyn = dynamic.DynamicClient(api)
    try:
        obj = _resource(dyn, api_version, kind).get(name=name, namespace=namespace)
    except NotFoundError:
        return None
    return dict(obj.to_dict())


def condition(obj: Mapping[str, Any] | None, kind: str) -> str | None:
    """The status ("True"/"False"/"Unknown") of condition ``kind`` in ``obj``, or None."""
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return str(item.get("status"))
    return None


def wait_for(
    fetch: Callable[[], T],
    predicate: Callable[[T], bool],
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    what: str = "condition",
) -> T:
    """Call ``fetch`` until ``predicate(result)`` holds; fail with the last result on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        last = fetch()
        if predicate(last):
            return last
        if time.monotonic() > deadline:
            shown = yaml.safe_dump(_plain(last), sort_keys=False) if last is not None else "None"
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; last seen:\n{shown}"
            )
        time.sleep(interval)


def _plain(value: Any) -> Any:
    # Objects from the generated client: make them dumpable for the failure message.
    if hasattr(value, "to_dict"):
        return _plain(value.to_dict())
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def create_namespace(api: client.ApiClient, prefix: str, test: str) -> str:
    """A fresh namespace ``<prefix>-<test>-<random>``, once its default ServiceAccount exists.

    Pods are refused until the ServiceAccount controller has created "default".
    """
    slug = re.sub(r"[^a-z0-9-]+", "-", test.lower()).strip("-")[:36].strip("-")
    name = f"{prefix}-{slug}-{uuid.uuid4().hex[:4]}"
    core = client.CoreV1Api(api)
    core.create_namespace(
        client.V1Namespace.model_validate(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )
    )
    wait_for(
        lambda: core.list_namespaced_service_account(name).items,
        lambda accounts: any(present(a.metadata).name == "default" for a in accounts),
        timeout=30,
        what=f"ServiceAccount {name}/default",
    )
    return name


def _unless_gone(call: Callable[..., T], *args: Any) -> T | None:
    """``call(*args)``, where a 404 (already gone, or never there) is None, not an error."""
    try:
        return call(*args)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        return None


def delete_namespace(api: client.ApiClient, name: str) -> None:
    """Delete a test's namespace, its DatabaseMigrations first, finalizers and all.

    The operator that would release their finalizer may stop before the
    namespace controller reaches them (a module's operator ends with its
    module). Left behind, they keep the namespace terminating and show up in
    later tests' cluster-wide lists. Deleted first, so an operator that is
    still running does not put its finalizer back.
    """
    custom = client.CustomObjectsApi(api)
    # No CRD, or no namespace: nothing to release.
    found = _unless_gone(custom.list_namespaced_custom_object, GROUP, VERSION, name, PLURAL)
    for item in as_dict(found or {}).get("items", []):
        where = (GROUP, VERSION, name, PLURAL, item["metadata"]["name"])
        _unless_gone(custom.delete_namespaced_custom_object, *where)
        _unless_gone(
            custom.patch_namespaced_custom_object, *where, {"metadata": {"finalizers": None}}
        )
    client.CoreV1Api(api).delete_namespace(name, propagation_policy="Background")


def existing_kubeconfig(environ: Mapping[str, str]) -> Path | None:
    """The kubeconfig of an existing cluster to test on instead of a local one, or None.

    ``REVISOR_TEST_KUBECONFIG`` names it. ``KUBECONFIG`` counts only with
    ``REVISOR_TEST_USE_KUBECONFIG=1``: the everyday kubeconfig of whoever runs
    the suite must never become its target by accident. Of a ``KUBECONFIG``
    list, the first file is taken (empty entries skipped, as kubectl does).
    """
    explicit = environ.get("REVISOR_TEST_KUBECONFIG", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    if environ.get("REVISOR_TEST_USE_KUBECONFIG", "").strip().lower() not in {"1", "true", "yes"}:
        return None
    listed = [entry for entry in environ.get("KUBECONFIG", "").split(os.pathsep) if entry.strip()]
    return Path(listed[0]).expanduser() if listed else None


def kubectl(environ: Mapping[str, str] = os.environ) -> str:
    """A kubectl for the cluster under test.

    On an existing cluster, the kubectl on PATH when there is one: that
    machine need not have Go, and must not wait minutes for a build. Otherwise
    the pinned one ``scripts/kube-binaries.sh`` provides (building it if needed).
    """
    if existing_kubeconfig(environ) is not None:
        on_path = shutil.which("kubectl", path=environ.get("PATH"))
        if on_path:
            return on_path
    from localkube.binaries import find_binaries  # tools/ is on sys.path (conftest)

    return str(find_binaries().kubectl)


def localkube(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m localkube ARGS`` as ``make cluster-up``/``cluster-down`` run it; output kept."""
    path = os.pathsep.join(filter(None, [str(TOOLS), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "localkube", *args],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def pod_finished(
    api: client.ApiClient, namespace: str, name: str, *, timeout: float = 30, what: str = ""
) -> Any:
    """The pod once its phase is Succeeded or Failed (read through the API, polled)."""
    return wait_for(
        lambda: client.CoreV1Api(api).read_namespaced_pod(name, namespace),
        lambda pod: present(pod.status).phase in {"Succeeded", "Failed"},
        timeout=timeout,
        what=what or f"pod {name} to finish",
    )


def token_kubeconfig(
    api: client.ApiClient, admin_kubeconfig: Path, namespace: str, account: str, path: Path
) -> Path:
    """A kubeconfig that authenticates as ServiceAccount ``namespace/account`` (TokenRequest)."""
    token = client.CoreV1Api(api).create_namespaced_service_account_token(
        account,
        namespace,
        client.AuthenticationV1TokenRequest.model_validate({"spec": {"expirationSeconds": 3600}}),
    )
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = dict(admin["clusters"][0]["cluster"])
    if "certificate-authority" in cluster:  # a file next to the admin's kubeconfig
        ca = (admin_kubeconfig.parent / cluster.pop("certificate-authority")).read_bytes()
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    path.write_text(
        yaml.safe_dump({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": account, "user": {"token": present(token.status).token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "c", "user": account}}],
            "current-context": "sa",
        })
    )  # fmt: skip
    return path


def can(api: client.ApiClient, verb: str, resource: str, namespace: str = "") -> bool:
    """SelfSubjectAccessReview: may the caller ``verb`` ``resource`` ("[group:]plural[/sub]")?"""
    group, _, rest = resource.rpartition(":")
    plural, _, sub = rest.partition("/")
    attributes: dict[str, Any] = {"verb": verb, "group": group, "resource": plural}
    if sub:
        attributes["subresource"] = sub
    if namespace:
        attributes["namespace"] = namespace
    review = client.AuthorizationV1Api(api).create_self_subject_access_review(
        client.V1SelfSubjectAccessReview.model_validate(
            {"spec": {"resourceAttributes": attributes}}
        )
    )
    return bool(present(review.status).allowed)


def namespace_free(api: client.ApiClient, name: str, *, timeout: float = 120) -> bool:
    """No namespace ``name``, once one being deleted (an earlier test's) is gone."""

    def phase() -> str | None:
        try:
            found = client.CoreV1Api(api).read_namespace(name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return str(present(found.status).phase)

    last = wait_for(phase, lambda now: now != "Terminating", timeout=timeout,
                    what=f"namespace {name} to finish terminating")  # fmt: skip
    return last is None
