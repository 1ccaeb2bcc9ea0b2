"""The local control plane behaves like Kubernetes: schemas, Jobs, GC, RBAC, pods' inputs.

These tests prove the machinery the operator's tests stand on: the real
apiserver validates, the real job controller and garbage collector act, and
the process-kubelet runs a pod's command with its env and volumes and reports
what happened the way a kubelet does.
"""

from __future__ import annotations

import sys
import textwrap
import uuid
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster.conftest import Kube
from tests.support.kube import apply, as_dict, condition, get, pod_finished, present, wait_for

pytestmark = pytest.mark.cluster

PYTHON = sys.executable


def _job(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    container = {
        "name": "main",
        "image": "revisor:dev",
        "command": command,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            **spec,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
        },
    }


def _pods(kube: Kube, namespace: str, selector: str) -> list[Any]:
    return list(
        client.CoreV1Api(kube.api).list_namespaced_pod(namespace, label_selector=selector).items
    )


def _terminated(pod: Any) -> Any:
    statuses = pod.status.container_statuses or []
    return statuses[0].state.terminated if statuses else None


def test_crd_schema_rejects_invalid_object_and_accepts_valid_one(
    kube: Kube, namespace: str
) -> None:
    group = f"g{uuid.uuid4().hex[:6]}.revisor.test"
    apply(
        kube.api,
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"widgets.{group}"},
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "properties": {
                                    "spec": {
                                        "type": "object",
                                        "required": ["size"],
                                        "properties": {"size": {"type": "integer", "minimum": 1}},
                                    }
                                },
                            }
                        },
                    }
                ],
            },
        },
    )
    custom = client.CustomObjectsApi(kube.api)

    def widget(size: object) -> dict[str, Any]:
        return {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": f"w{size}".lower()},
            "spec": {"size": size},
        }

    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(group, "v1", namespace, "widgets", widget(0))
    assert refused.value.status == 422
    assert "spec.size" in str(refused.value.body)

    created = as_dict(
        custom.create_namespaced_custom_object(group, "v1", namespace, "widgets", widget(3))
    )
    assert created["spec"]["size"] == 3
    client.ApiextensionsV1Api(kube.api).delete_custom_resource_definition(f"widgets.{group}")


def test_job_completes_and_pod_reports_termination_message(
    process_kubelet: Kube, namespace: str
) -> None:
    script = "import sys; print(42); open(sys.argv[1], 'w').write('42')"
    apply(
        process_kubelet.api,
        _job("answer", [PYTHON, "-c", script, "/dev/termination-log"]),
        namespace=namespace,
    )
    job = wait_for(
        lambda: get(process_kubelet.api, "batch/v1", "Job", "answer", namespace),
        lambda job: condition(job, "Complete") == "True" or condition(job, "Failed") == "True",
        timeout=60,
        what="Job answer to finish",
    )
    assert condition(job, "Complete") == "True"
    assert present(job)["status"]["succeeded"] == 1
    (pod,) = _pods(process_kubelet, namespace, "job-name=answer")
    assert pod.status.phase == "Succeeded"
    terminated = _terminated(pod)
    assert terminated.exit_code == 0
    assert terminated.reason == "Completed"
    assert terminated.message == "42"
    assert pod.status.pod_ip == "127.0.0.1"
    # `kubectl logs` path: API server -> the process-kubelet's log server.
    core = client.CoreV1Api(process_kubelet.api)
    assert core.read_namespaced_pod_log(pod.metadata.name, namespace) == "42\n"


def test_failing_job_fails_after_backoff_limit_with_log_as_message(
    process_kubelet: Kube, namespace: str
) -> None:
    script = "import sys; print('migration exploded', file=sys.stderr); sys.exit(3)"
    apply(
        process_kubelet.api,
        _job("doomed", [PYTHON, "-c", script], backoffLimit=1),
        namespace=namespace,
    )
    job = wait_for(
        lambda: get(process_kubelet.api, "batch/v1", "Job", "doomed", namespace),
        lambda job: condition(job, "Failed") == "True",
        timeout=90,
        what="Job doomed to fail",
    )
    failed = next(c for c in present(job)["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    pods = _pods(process_kubelet, namespace, "job-name=doomed")
    assert len(pods) == 2  # the first try and one retry: backoffLimit 1
    for pod in pods:
        assert pod.status.phase == "Failed"
        terminated = _terminated(pod)
        assert terminated.exit_code == 3
        assert terminated.reason == "Error"
        assert "migration exploded" in terminated.message


def test_deleting_owner_garbage_collects_job(kube: Kube, namespace: str) -> None:
    core = client.CoreV1Api(kube.api)
    owner = core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap.model_validate(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}}
        ),
    )
    job = _job("owned", ["true"])
    job["spec"]["suspend"] = True  # the garbage collector is under test, not the pod
    uid = present(owner.metadata).uid
    job["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
    ]
    apply(kube.api, job, namespace=namespace)
    assert get(kube.api, "batch/v1", "Job", "owned", namespace) is not None

    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")

    wait_for(
        lambda: get(kube.api, "batch/v1", "Job", "owned", namespace),
        lambda found: found is None,
        timeout=60,
        what="the garbage collector to delete Job owned",
    )


def test_service_account_needs_role_binding_for_access(kube: Kube, namespace: str) -> None:
    core = client.CoreV1Api(kube.api)
    core.create_namespaced_service_account(
        namespace,
        client.V1ServiceAccount.model_validate(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}}
        ),
    )
    requested = core.create_namespaced_service_account_token(
        "reader",
        namespace,
        client.AuthenticationV1TokenRequest.model_validate(
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": 600},
            }
        ),
    )
    token = present(requested.status).token
    configuration = client.Configuration()
    configuration.host = kube.api.configuration.host
    configuration.ssl_ca_cert = kube.api.configuration.ssl_ca_cert
    configuration.api_key = {"authorization": f"Bearer {token}"}
    as_reader = client.CoreV1Api(client.ApiClient(configuration))

    with pytest.raises(ApiException) as denied:
        as_reader.list_namespaced_config_map(namespace)
    assert denied.value.status == 403

    apply(
        kube.api,
        f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: read-configmaps}}
rules:
- {{apiGroups: [""], resources: [configmaps], verbs: [get, list]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: reader-reads-configmaps}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-configmaps}}
subjects:
- {{kind: ServiceAccount, name: reader, namespace: {namespace}}}
""",
        namespace=namespace,
    )

    def allowed() -> bool:
        try:
            as_reader.list_namespaced_config_map(namespace)
        except ApiException as error:
            assert error.status == 403
            return False
        return True

    wait_for(allowed, bool, timeout=60, what="the RoleBinding to take effect")
    with pytest.raises(ApiException) as still_denied:
        as_reader.list_namespaced_secret(namespace)
    assert still_denied.value.status == 403


CHECK_INPUTS = textwrap.dedent(
    """
    import os, pathlib, sys
    config_dir, secret_dir, info_dir, scratch = map(pathlib.Path, sys.argv[1:5])
    checks = {
        "env literal": os.environ["GREETING"] == "hello world",
        "env expanded": os.environ["DERIVED"] == "hello world!",
        "secretKeyRef": os.environ["DB_PASSWORD"] == "s3cret",
        "configMapKeyRef": os.environ["MODE"] == "strict",
        "fieldRef name": os.environ["POD_NAME"] == "inputs",
        "fieldRef namespace": os.environ["POD_NAMESPACE"] == sys.argv[5],
        "fieldRef podIP": os.environ["POD_IP"] == "127.0.0.1",
        "envFrom configMapRef": os.environ["CFG_mode"] == "strict",
        "envFrom secretRef": os.environ["SECRET_password"] == "s3cret",
        "envFrom secretRef, no prefix": os.environ["password"] == "s3cret",
        "configMap items": (config_dir / "app" / "settings.ini").read_text() == "[app]\\nx=1\\n",
        "configMap unlisted key absent": not (config_dir / "mode").exists(),
        "secret volume": (secret_dir / "password").read_text() == "s3cret",
        "env path mapped": os.environ["SETTINGS"] == str(config_dir / "app" / "settings.ini"),
        "downwardAPI": (info_dir / "labels").read_text() == 'app="inputs"',
        "emptyDir writable": scratch.is_dir() and (scratch / "f").write_text("x") == 1,
        "cwd is private": pathlib.Path.cwd() != pathlib.Path("/"),
    }
    failed = [name for name, ok in checks.items() if not ok]
    print("failed checks:", failed)
    sys.exit(1 if failed else 0)
    """
)


def test_pod_sees_secret_and_configmap_volumes_and_env(
    process_kubelet: Kube, namespace: str
) -> None:
    apply(
        process_kubelet.api,
        """
apiVersion: v1
kind: Secret
metadata: {name: db}
stringData: {password: s3cret}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: app}
data:
  mode: strict
  settings: "[app]\\nx=1\\n"
""",
        namespace=namespace,
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "inputs", "labels": {"app": "inputs"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "check",
                    "image": "revisor:dev",
                    "command": [PYTHON, "-c", CHECK_INPUTS],
                    "args": ["/etc/app", "/etc/db", "/etc/info", "/scratch", "$(POD_NAMESPACE)"],
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "env": [
                        {"name": "GREETING", "value": "hello world"},
                        {"name": "DERIVED", "value": "$(GREETING)!"},
                        {"name": "SETTINGS", "value": "/etc/app/app/settings.ini"},
                        {
                            "name": "DB_PASSWORD",
                            "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}},
                        },
                        {
                            "name": "MODE",
                            "valueFrom": {"configMapKeyRef": {"name": "app", "key": "mode"}},
                        },
                        {
                            "name": "POD_NAME",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                        },
                        {
                            "name": "POD_NAMESPACE",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                        },
                        {
                            "name": "POD_IP",
                            "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                        },
                    ],
                    "envFrom": [
                        {"prefix": "CFG_", "configMapRef": {"name": "app"}},
                        {"prefix": "SECRET_", "secretRef": {"name": "db"}},
                        {"secretRef": {"name": "db"}},
                    ],
                    "volumeMounts": [
                        {"name": "config", "mountPath": "/etc/app"},
                        {"name": "secret", "mountPath": "/etc/db", "readOnly": True},
                        {"name": "info", "mountPath": "/etc/info"},
                        {"name": "scratch", "mountPath": "/scratch"},
                    ],
                }
            ],
            "volumes": [
                {
                    "name": "config",
                    "configMap": {
                        "name": "app",
                        "items": [{"key": "settings", "path": "app/settings.ini"}],
                    },
                },
                {"name": "secret", "secret": {"secretName": "db"}},
                {
                    "name": "info",
                    "downwardAPI": {
                        "items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]
                    },
                },
                {"name": "scratch", "emptyDir": {}},
            ],
        },
    }
    apply(process_kubelet.api, pod, namespace=namespace)
    done = pod_finished(process_kubelet.api, namespace, "inputs", timeout=60)
    terminated = _terminated(done)
    assert done.status.phase == "Succeeded", terminated.message if terminated else done.status
    assert terminated.exit_code == 0


def test_active_deadline_kills_long_pod(process_kubelet: Kube, namespace: str) -> None:
    apply(
        process_kubelet.api,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "sleeper"},
            "spec": {
                "restartPolicy": "Never",
                "activeDeadlineSeconds": 2,
                "containers": [{"name": "main", "image": "x", "command": ["sleep", "300"]}],
            },
        },
        namespace=namespace,
    )
    pod = pod_finished(
        process_kubelet.api,
        namespace,
        "sleeper",
        timeout=30,
        what="pod sleeper to be stopped by its deadline",
    )
    assert pod.status.phase == "Failed"
    assert pod.status.reason == "DeadlineExceeded"
    terminated = _terminated(pod)
    assert terminated.exit_code == 137  # SIGKILL
