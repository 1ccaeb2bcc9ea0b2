"""The process-kubelet runs pods the way the operator's Jobs and Deployments expect.

Init containers in order, restarts under ``restartPolicy: Always``,
readiness probes that keep a pod unready, and graceful deletion that
signals the process and removes the API object.
"""

from __future__ import annotations

import socket
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.cluster.conftest import Kube
from tests.support.kube import apply, pod_finished, present, wait_for

pytestmark = pytest.mark.cluster

PYTHON = sys.executable


def _pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": containers, **spec},
    }


def _read(kube: Kube, namespace: str, name: str) -> Any:
    return client.CoreV1Api(kube.api).read_namespaced_pod(name, namespace)


def _condition(pod: Any, kind: str) -> str | None:
    return next((c.status for c in pod.status.conditions or [] if c.type == kind), None)


def test_init_containers_run_in_order_before_containers(
    process_kubelet: Kube, namespace: str
) -> None:
    append = "import sys; open(sys.argv[1], 'a').write(sys.argv[2])"
    check = textwrap.dedent(
        """
        import sys
        seen = open(sys.argv[1]).read()
        print(seen)
        sys.exit(0 if seen == "12" else 1)
        """
    )
    pod = _pod(
        "ordered",
        [
            {
                "name": "main",
                "image": "x",
                "command": [PYTHON, "-c", check, "/data/order"],
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "volumeMounts": [{"name": "work", "mountPath": "/data"}],
            }
        ],
        restartPolicy="Never",
        initContainers=[
            {
                "name": f"init-{step}",
                "image": "x",
                "command": [PYTHON, "-c", append, "/data/order", step],
                "volumeMounts": [{"name": "work", "mountPath": "/data"}],
            }
            for step in ("1", "2")
        ],
        volumes=[{"name": "work", "emptyDir": {}}],
    )
    apply(process_kubelet.api, pod, namespace=namespace)
    done = pod_finished(process_kubelet.api, namespace, "ordered", timeout=60)
    assert done.status.phase == "Succeeded", done.status.container_statuses
    inits = done.status.init_container_statuses
    assert [s.name for s in inits] == ["init-1", "init-2"]
    assert all(s.state.terminated.exit_code == 0 for s in inits)
    assert _condition(done, "Initialized") == "True"


def test_readiness_follows_the_probe(process_kubelet: Kube, namespace: str, tmp_path: Path) -> None:
    flag = tmp_path / "ready"
    # hostPath means this machine's path: the test decides when the probe starts passing.
    passes_once_flagged = ["test", "-f", "/gate/ready"]

    def server(probe_command: list[str]) -> dict[str, Any]:
        return {
            "name": "main",
            "image": "x",
            "command": ["sleep", "300"],
            "readinessProbe": {"exec": {"command": probe_command}, "periodSeconds": 1},
            "volumeMounts": [{"name": "gate", "mountPath": "/gate"}],
        }

    volumes = [{"name": "gate", "hostPath": {"path": str(tmp_path)}}]
    apply(
        process_kubelet.api,
        [
            _pod("later", [server(passes_once_flagged)], volumes=volumes),
            _pod("sick", [server(["false"])], volumes=volumes),
        ],
        namespace=namespace,
    )
    running = wait_for(
        lambda: _read(process_kubelet, namespace, "later"),
        lambda pod: pod.status.phase == "Running",
        timeout=30,
        what="pod later to run",
    )
    assert running.status.container_statuses[0].ready is False
    assert _condition(running, "Ready") == "False"

    flag.write_text("go")
    ready = wait_for(
        lambda: _read(process_kubelet, namespace, "later"),
        lambda pod: _condition(pod, "Ready") == "True",
        timeout=30,
        what="pod later to become Ready once its probe passes",
    )
    assert ready.status.container_statuses[0].ready is True

    # "sick" was probed all along, with the same period, and never passed.
    sick = wait_for(
        lambda: _read(process_kubelet, namespace, "sick"),
        lambda pod: pod.status.phase == "Running" and bool(pod.status.container_statuses),
        timeout=30,
        what="pod sick to run",
    )
    assert sick.status.container_statuses[0].state.running is not None
    assert sick.status.container_statuses[0].ready is False
    assert _condition(sick, "Ready") == "False"


def test_restart_policy_always_restarts_exited_container(
    process_kubelet: Kube, namespace: str
) -> None:
    pod = _pod(
        "flapping",
        [{"name": "main", "image": "x", "command": [PYTHON, "-c", "raise SystemExit(2)"]}],
        restartPolicy="Always",
        terminationGracePeriodSeconds=1,
    )
    apply(process_kubelet.api, pod, namespace=namespace)
    restarted = wait_for(
        lambda: _read(process_kubelet, namespace, "flapping"),
        lambda pod: (
            bool(pod.status.container_statuses)
            and pod.status.container_statuses[0].restart_count >= 2
        ),
        timeout=30,
        what="pod flapping to restart twice",
    )
    status = restarted.status.container_statuses[0]
    assert status.last_state.terminated.exit_code == 2
    assert restarted.status.phase in {"Running", "Pending"}


def test_deleting_pod_stops_process_gracefully_and_removes_object(
    process_kubelet: Kube, namespace: str, tmp_path: Path
) -> None:
    on_term = textwrap.dedent(
        """
        import pathlib, signal, sys, time
        out = pathlib.Path(sys.argv[1])
        def bye(*_):
            (out / "stopped").write_text("got SIGTERM")
            sys.exit(0)
        if sys.argv[2] == "handle":
            signal.signal(signal.SIGTERM, bye)
        else:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        (out / "started").write_text("yes")
        time.sleep(300)
        """
    )

    def pod(name: str, mode: str, grace: int) -> dict[str, Any]:
        (tmp_path / name).mkdir()
        return _pod(
            name,
            [
                {
                    "name": "main",
                    "image": "x",
                    "command": [PYTHON, "-c", on_term, "/out", mode],
                    "volumeMounts": [{"name": "out", "mountPath": "/out"}],
                }
            ],
            restartPolicy="Never",
            terminationGracePeriodSeconds=grace,
            # hostPath means this machine's path: the test reads what the process wrote.
            volumes=[{"name": "out", "hostPath": {"path": str(tmp_path / name)}}],
        )

    apply(
        process_kubelet.api,
        [pod("graceful", "handle", 30), pod("stubborn", "ignore", 1)],
        namespace=namespace,
    )
    core = client.CoreV1Api(process_kubelet.api)
    for name in ("graceful", "stubborn"):
        wait_for(
            (tmp_path / name / "started").exists,
            bool,
            timeout=30,
            what=f"pod {name} to start",
        )

    def gone(name: str) -> bool:
        try:
            core.read_namespaced_pod(name, namespace)
        except client.exceptions.ApiException as error:
            assert error.status == 404
            return True
        return False

    started = time.monotonic()
    core.delete_namespaced_pod("graceful", namespace)
    core.delete_namespaced_pod("stubborn", namespace)
    wait_for(lambda: gone("graceful"), bool, timeout=15, what="pod graceful to be removed")
    # Well inside its 30 s grace period: the process handled SIGTERM and exited.
    assert (tmp_path / "graceful" / "stopped").read_text() == "got SIGTERM"
    wait_for(lambda: gone("stubborn"), bool, timeout=15, what="pod stubborn to be removed")
    # SIGTERM ignored: killed once its 1 s grace period ran out.
    assert time.monotonic() - started >= 1
    assert not (tmp_path / "stubborn" / "stopped").exists()


def test_missing_command_fails_pod_with_start_error(process_kubelet: Kube, namespace: str) -> None:
    pod = _pod(
        "nocommand",
        [{"name": "main", "image": "x", "command": ["/nonexistent/revisor"]}],
        restartPolicy="Never",
    )
    apply(process_kubelet.api, pod, namespace=namespace)
    failed = pod_finished(
        process_kubelet.api, namespace, "nocommand", timeout=30, what="pod nocommand to fail"
    )
    assert failed.status.phase == "Failed"
    terminated = failed.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 128
    assert terminated.reason == "StartError"
    assert "/nonexistent/revisor" in terminated.message


def test_http_readiness_probe_checks_the_local_port(process_kubelet: Kube, namespace: str) -> None:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]

    def server(name: str, path: str) -> dict[str, Any]:
        return _pod(
            name,
            [
                {
                    "name": "web",
                    "image": "x",
                    "command": [PYTHON, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                    "ports": [{"name": "http", "containerPort": port}],
                    "readinessProbe": {
                        "httpGet": {"path": path, "port": "http"},
                        "periodSeconds": 1,
                    },
                }
            ],
            terminationGracePeriodSeconds=1,
        )

    apply(process_kubelet.api, server("web", "/"), namespace=namespace)
    wait_for(
        lambda: _read(process_kubelet, namespace, "web"),
        lambda pod: _condition(pod, "Ready") == "True",
        timeout=30,
        what="pod web to become Ready through its HTTP probe",
    )
    client.CoreV1Api(process_kubelet.api).delete_namespaced_pod("web", namespace)
    wait_for(
        lambda: [
            present(p.metadata).name
            for p in client.CoreV1Api(process_kubelet.api).list_namespaced_pod(namespace).items
        ],
        lambda names: "web" not in names,
        timeout=15,
        what="pod web to go away",
    )
    # Same server, but the probed path answers 404: running, never Ready.
    apply(process_kubelet.api, server("web404", "/missing"), namespace=namespace)
    running = wait_for(
        lambda: _read(process_kubelet, namespace, "web404"),
        lambda pod: pod.status.phase == "Running",
        timeout=30,
        what="pod web404 to run",
    )
    # Proving a negative: there is no event to wait for, so give the probe two
    # periods in which it would have passed if 404 counted as success.
    time.sleep(2.5)
    running = _read(process_kubelet, namespace, "web404")
    assert running.status.container_statuses[0].state.running is not None
    assert _condition(running, "Ready") == "False"


def test_node_is_ready_with_capacity_and_keeps_its_lease_fresh(process_kubelet: Kube) -> None:
    """The scheduler binds to a Ready node with room; the node lifecycle controller needs the Lease."""
    core = client.CoreV1Api(process_kubelet.api)
    (node,) = core.list_node(label_selector="localkube.dev/process-kubelet=true").items
    status, meta = present(node.status), present(node.metadata)
    conditions = present(status.conditions)
    ready = next(c for c in conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("True", "KubeletReady")
    for pressure in ("MemoryPressure", "DiskPressure", "PIDPressure"):
        assert next(c.status for c in conditions if c.type == pressure) == "False"
    assert not present(node.spec).taints  # no not-ready or unreachable taint: pods get scheduled
    for resources in (present(status.capacity), present(status.allocatable)):
        assert resources["cpu"] == "4"
        assert resources["memory"] == "8Gi"
        assert resources["pods"] == "110"

    leases = client.CoordinationV1Api(process_kubelet.api)
    name = present(meta.name)
    lease = leases.read_namespaced_lease(name, "kube-node-lease")
    spec = present(lease.spec)
    assert spec.holder_identity == name
    assert spec.lease_duration_seconds == 40
    owners = present(present(lease.metadata).owner_references)
    assert [(o.kind, o.name, o.uid) for o in owners] == [("Node", name, meta.uid)]
    first = present(spec.renew_time)
    renewed = wait_for(
        lambda: present(
            present(leases.read_namespaced_lease(name, "kube-node-lease").spec).renew_time
        ),
        lambda renew_time: renew_time > first,
        timeout=30,  # renewed every 10 s
        interval=1.0,
        what=f"Lease {name} to be renewed",
    )
    assert renewed > first


def test_custom_termination_message_path_becomes_the_message(
    process_kubelet: Kube, namespace: str
) -> None:
    write = "import sys; open(sys.argv[1], 'w').write('written to a custom path'); print('log')"
    pod = _pod(
        "custom-msg",
        [
            {
                "name": "main",
                "image": "x",
                "command": [PYTHON, "-c", write, "/tmp/custom-msg"],
                "terminationMessagePath": "/tmp/custom-msg",
            }
        ],
        restartPolicy="Never",
    )
    apply(process_kubelet.api, pod, namespace=namespace)
    done = pod_finished(process_kubelet.api, namespace, "custom-msg", timeout=30)
    assert done.status.phase == "Succeeded"
    terminated = done.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0
    assert terminated.message == "written to a custom path"


def test_missing_secret_holds_container_in_config_error_until_created(
    process_kubelet: Kube, namespace: str
) -> None:
    """As the kubelet does: CreateContainerConfigError naming the Secret, then it runs."""
    pod = _pod(
        "needs-secret",
        [
            {
                "name": "main",
                "image": "x",
                "command": [PYTHON, "-c", "import os; print(os.environ['PASSWORD'])"],
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "env": [
                    {
                        "name": "PASSWORD",
                        "valueFrom": {"secretKeyRef": {"name": "late", "key": "password"}},
                    }
                ],
            }
        ],
        restartPolicy="Never",
    )
    apply(process_kubelet.api, pod, namespace=namespace)
    waiting = wait_for(
        lambda: _read(process_kubelet, namespace, "needs-secret"),
        lambda pod: (
            bool(pod.status.container_statuses)
            and pod.status.container_statuses[0].state.waiting is not None
            and pod.status.container_statuses[0].state.waiting.reason
            == "CreateContainerConfigError"
        ),
        timeout=30,
        what="pod needs-secret to wait for its Secret",
    )
    assert waiting.status.phase == "Pending"
    assert "late" in waiting.status.container_statuses[0].state.waiting.message
    assert waiting.status.container_statuses[0].ready is False

    # Nothing tells the kubelet that the Secret appeared: it must keep retrying. Let
    # several retries (1 s apart) go by, so a kubelet that gave up cannot pass by luck.
    time.sleep(3.5)
    apply(
        process_kubelet.api,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "late"},
            "stringData": {"password": "arrived"},
        },
        namespace=namespace,
    )
    done = pod_finished(
        process_kubelet.api,
        namespace,
        "needs-secret",
        timeout=30,
        what="pod needs-secret to run once its Secret exists",
    )
    assert done.status.phase == "Succeeded"
    terminated = done.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0
    assert (
        client.CoreV1Api(process_kubelet.api).read_namespaced_pod_log("needs-secret", namespace)
        == "arrived\n"
    )
