"""Pods get their ServiceAccount token where every in-cluster client looks for it.

The API server's ServiceAccount admission gives each pod a ``kube-api-access-*``
volume (a TokenRequest token, the ``kube-root-ca.crt`` ConfigMap's ``ca.crt``
and the pod's namespace) mounted at ``/var/run/secrets/kubernetes.io/serviceaccount``.
The process-kubelet materialises it as a directory and, as root, bind-mounts it
at that path in the container's own mount namespace (``localkube.privatemounts``):
``kubernetes.config.load_incluster_config()`` then works unchanged, with the
``KUBERNETES_SERVICE_HOST``/``_PORT`` the kubelet sets. Each container sees
its own pod's token, the host sees no mount, and a pod with
``automountServiceAccountToken: false`` (as the engine's Jobs) has no token.

The last tests need no cluster: the mount plan, the shim's own check, and the
operator's one-line answer when it finds no credentials at all.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from kubernetes import client
from localkube.containers import ContainerRun
from localkube.privatemounts import SERVICE_ACCOUNT_DIR, check_support, private_mounts
from localkube.shim import PrivateMounts

from tests.cluster.conftest import Kube
from tests.support.kube import (
    apply,
    create_namespace,
    delete_namespace,
    pod_finished,
    present,
    wait_for,
)

PYTHON = sys.executable

# argv: the result file, a gate directory, this pod's name. The pod says it has
# started (GATE/NAME), waits for GATE/go, then reports what an in-cluster
# client finds: no path below is in argv, so none of it is rewritten.
IN_CLUSTER = textwrap.dedent(
    """
    import base64, json, os, sys, time
    from pathlib import Path
    out, gate, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    (gate / name).touch()
    while not (gate / "go").exists():
        time.sleep(0.05)
    root = Path("/var/run/secrets/kubernetes.io/serviceaccount")
    result = {
        "host": os.environ.get("KUBERNETES_SERVICE_HOST"),
        "port": os.environ.get("KUBERNETES_SERVICE_PORT"),
        "files": sorted(p.name for p in root.iterdir()) if root.is_dir() else None,
    }
    from kubernetes import client, config
    try:
        config.load_incluster_config()
    except config.ConfigException as error:
        result["error"] = str(error)
    else:
        namespace = (root / "namespace").read_text()
        payload = (root / "token").read_text().split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        result.update(namespace=namespace, subject=claims["sub"],
                      pod=claims["kubernetes.io"]["pod"]["name"])
        try:
            (root / "token").write_text("mine now")
        except OSError as error:
            result["write"] = error.errno
        # The authorizer's cache may lag the RoleBinding a moment.
        deadline = time.monotonic() + 30
        while True:
            try:
                found = client.CoreV1Api().read_namespaced_config_map("greeting", namespace)
                break
            except client.ApiException as error:
                if error.status != 403 or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        result["greeting"] = found.data["text"]
    Path(out).write_text(json.dumps(result))
    """
)


@pytest.fixture
def token_mounts(process_kubelet: Kube) -> Kube:
    """The cluster, when its kubelet can mount tokens (root; else the test is skipped)."""
    reason = check_support()
    if reason is not None:
        pytest.skip(f"containers cannot have mount namespaces here: {reason}")
    return process_kubelet


def readable_greeting(kube: Kube, namespace: str, text: str) -> None:
    """ConfigMap ``greeting`` and a Role that lets the namespace's ``default`` account get it."""
    apply(
        kube.api,
        [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "greeting"},
                "data": {"text": text},
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "greeting-reader"},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["configmaps"],
                        "resourceNames": ["greeting"],
                        "verbs": ["get"],
                    }
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "greeting-reader"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "greeting-reader",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
            },
        ],
        namespace=namespace,
    )


def in_cluster_pod(name: str, gate: Path, *, automount: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "main",
                "image": "python",
                "command": [PYTHON, "-c", IN_CLUSTER, "/dev/termination-log", "/gate", name],
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "volumeMounts": [{"name": "gate", "mountPath": "/gate"}],
            }
        ],
        # hostPath means this machine's path: the test opens the gate.
        "volumes": [{"name": "gate", "hostPath": {"path": str(gate)}}],
    }
    if not automount:
        spec["automountServiceAccountToken"] = False
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def result(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    """What the pod reported, once it has succeeded."""
    done = pod_finished(kube.api, namespace, name, timeout=90, what=f"pod {namespace}/{name}")
    terminated = done.status.container_statuses[0].state.terminated
    assert done.status.phase == "Succeeded", terminated
    found: dict[str, Any] = json.loads(terminated.message)
    return found


def secrets_mounts(mountinfo: Path) -> list[str]:
    """The mount points under /run/secrets (where /var/run/secrets resolves) in a mountinfo."""
    points = [line.split()[4] for line in mountinfo.read_text().splitlines()]
    return [point for point in points if point.startswith(("/run/secrets", "/var/run/secrets"))]


def container_pid(kube: Kube, namespace: str, name: str) -> int:
    pod = client.CoreV1Api(kube.api).read_namespaced_pod(name, namespace)
    container_id = present(present(pod.status).container_statuses)[0].container_id
    assert container_id is not None
    assert container_id.startswith("process://"), container_id
    return int(container_id.removeprefix("process://"))


@pytest.fixture
def second_namespace(kube: Kube) -> Iterator[str]:
    name = create_namespace(kube.api, "t", "tokens-second")
    yield name
    delete_namespace(kube.api, name)


def test_in_cluster_config_works_in_each_pod_with_its_own_token(
    token_mounts: Kube, namespace: str, second_namespace: str, tmp_path: Path
) -> None:
    """Two pods at once, in two namespaces: each reads its own namespace, token and ConfigMap."""
    kube = token_mounts
    # This machine's own (none, unless the suite itself runs in a pod).
    host_mounts = secrets_mounts(Path("/proc/self/mountinfo"))
    pods = {namespace: "reader-one", second_namespace: "reader-two"}
    for ns, name in pods.items():
        readable_greeting(kube, ns, f"hello from {ns}")
        apply(kube.api, in_cluster_pod(name, tmp_path), namespace=ns)
    wait_for(
        lambda: sorted(p.name for p in tmp_path.iterdir()),
        lambda started: started == sorted(pods.values()),
        timeout=60,
        what="both pods to be running at once",
    )
    # Both run now, each in its own mount namespace; the host has no mount of theirs.
    assert secrets_mounts(Path("/proc/self/mountinfo")) == host_mounts
    for ns, name in pods.items():
        inside = secrets_mounts(Path(f"/proc/{container_pid(kube, ns, name)}/mountinfo"))
        assert "/run/secrets/kubernetes.io/serviceaccount" in inside, inside
    (tmp_path / "go").touch()

    server = urlparse(
        yaml.safe_load(kube.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    )
    for ns, name in pods.items():
        found = result(kube, ns, name)
        # As a kubelet writes a projected volume: the keys, and its ..data and
        # timestamped directory behind them.
        visible = [f for f in found["files"] if not f.startswith("..")]
        assert visible == ["ca.crt", "namespace", "token"], found
        assert "..data" in found["files"], found
        assert (found["host"], found["port"]) == (server.hostname, str(server.port))
        assert found["namespace"] == ns
        assert found["subject"] == f"system:serviceaccount:{ns}:default"
        assert found["pod"] == name  # a token bound to this very pod
        assert found["write"] == errno.EROFS  # mounted readOnly, as the admission asks
        assert found["greeting"] == f"hello from {ns}"
    # Gone with the pods' last processes: still nothing on the host.
    assert secrets_mounts(Path("/proc/self/mountinfo")) == host_mounts


def test_pod_without_automount_has_no_token(
    token_mounts: Kube, namespace: str, tmp_path: Path
) -> None:
    """``automountServiceAccountToken: false``: nothing at the path, so in-cluster config fails."""
    (tmp_path / "go").touch()
    apply(
        token_mounts.api,
        in_cluster_pod("tokenless", tmp_path, automount=False),
        namespace=namespace,
    )
    found = result(token_mounts, namespace, "tokenless")
    assert not found["files"], found  # no directory, or an empty one
    assert "token" in found.get("error", "").lower(), found  # "Service token file does not exist."
    assert found["host"]  # the Service variables are set all the same


# -- no cluster --------------------------------------------------------------------------


def test_private_mounts_are_the_volumes_under_var_run_secrets(tmp_path: Path) -> None:
    """Tokens under /var/run/secrets are bound, parents first; everything else is rewritten only."""
    api, extra, config = tmp_path / "api", tmp_path / "extra", tmp_path / "config"
    for directory in (api, extra, config):
        directory.mkdir()
    (extra / "file").write_text("x")
    container = {
        "volumeMounts": [
            {"name": "vault", "mountPath": "/var/run/secrets/tokens/vault/"},
            {"name": "api", "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True},
            {"name": "vault", "mountPath": "/var/run/secrets/tokens/one", "subPath": "file"},
            {"name": "config", "mountPath": "/etc/app"},
        ]
    }
    volumes = {"api": api, "vault": extra, "config": config}
    mounts = private_mounts(container, volumes, host_token_dir=tmp_path / "none")
    assert mounts.binds == (
        (str(api), SERVICE_ACCOUNT_DIR, True),
        (str(extra), "/var/run/secrets/tokens/vault", False),
    )
    assert mounts.masks == ()


def test_a_pod_without_a_token_does_not_see_the_hosts_own(tmp_path: Path) -> None:
    """A kubelet that runs in a pod has a token there itself: it is hidden, not lent."""
    host_token = tmp_path / "host"
    host_token.mkdir()
    assert not private_mounts({}, {}, host_token_dir=host_token)  # empty: nothing to hide
    (host_token / "token").write_text("the host's")
    assert private_mounts({}, {}, host_token_dir=host_token).masks == (SERVICE_ACCOUNT_DIR,)


def test_without_mount_namespaces_the_check_says_why(tmp_path: Path) -> None:
    """What the kubelet logs when it has to fall back to path rewriting alone."""
    (tmp_path / "file").write_text("")
    reason = check_support(str(tmp_path / "file" / "below"))
    assert reason is not None
    assert str(tmp_path / "file") in reason or "Operation not permitted" in reason, reason


def test_concurrent_runs_each_see_their_own_bind_and_the_host_none(tmp_path: Path) -> None:
    """The shim itself: two runs bind two directories at one path at once; no mount leaks."""
    target = tmp_path / "target"
    reason = check_support(str(target))
    if reason is not None:
        pytest.skip(f"containers cannot have mount namespaces here: {reason}")
    before = Path("/proc/self/mountinfo").read_text().count(str(target))
    runs: list[ContainerRun] = []
    ended = [threading.Event(), threading.Event()]
    for index, done in enumerate(ended):
        source = tmp_path / f"source{index}"
        source.mkdir()
        (source / "who").write_text(f"run {index}")
        runs.append(
            ContainerRun(
                argv=[PYTHON, "-c", "import sys, time; time.sleep(1); print(open(sys.argv[1]).read())",
                      str(target / "who")],
                env={"PATH": os.environ.get("PATH", os.defpath)},
                cwd=tmp_path / f"cwd{index}",
                log=tmp_path / f"log{index}",
                termination_file=tmp_path / f"termination{index}",
                message_policy="File",
                on_exit=done.set,
                mounts=PrivateMounts(binds=((str(source), str(target), True),)),
            )
        )  # fmt: skip
    assert not list(target.iterdir())  # the host's view: the empty mount point
    for run, done in zip(runs, ended, strict=True):
        assert done.wait(30)
        assert run.exit is not None and run.exit.exit_code == 0, run.exit
    assert [(tmp_path / f"log{i}").read_text().strip() for i in (0, 1)] == ["run 0", "run 1"]
    assert Path("/proc/self/mountinfo").read_text().count(str(target)) == before == 0


def test_a_masked_path_is_empty_in_the_run_and_untouched_on_the_host(tmp_path: Path) -> None:
    """``--mask``: what this machine has at the path is hidden from the run, not removed."""
    hidden = tmp_path / "hidden"
    reason = check_support(str(hidden))
    if reason is not None:
        pytest.skip(f"containers cannot have mount namespaces here: {reason}")
    (hidden / "token").write_text("the host's")
    done = threading.Event()
    run = ContainerRun(
        argv=[PYTHON, "-c", "import os, sys; print(os.listdir(sys.argv[1]))", str(hidden)],
        env={"PATH": os.environ.get("PATH", os.defpath)},
        cwd=tmp_path / "cwd",
        log=tmp_path / "log",
        termination_file=tmp_path / "termination",
        message_policy="File",
        on_exit=done.set,
        mounts=PrivateMounts(masks=(str(hidden),)),
    )
    assert done.wait(30)
    assert run.exit is not None and run.exit.exit_code == 0, run.exit
    assert (tmp_path / "log").read_text().strip() == "[]"
    assert (hidden / "token").read_text() == "the host's"


def test_operator_without_credentials_says_where_it_looked_in_one_line(tmp_path: Path) -> None:
    """No token, no kubeconfig: one line naming both places, exit 1, no traceback."""
    token = Path(SERVICE_ACCOUNT_DIR, "token")
    if token.exists():
        pytest.skip(f"{token} exists on this machine: the operator would use it")
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(tmp_path),
        # As in a pod whose token was not mounted: the Service variables are there.
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
    }
    done = subprocess.run(
        [PYTHON, "-m", "revisor_operator.main", "--metrics-port", "0", "--log-format", "console"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert line.startswith("revisor-operator: no Kubernetes credentials: "), line
    assert str(token) in line
    assert "KUBERNETES_SERVICE_HOST=10.0.0.1" in line
    assert "$KUBECONFIG unset" in line
    assert str(tmp_path / ".kube" / "config") in line
    assert "Traceback" not in done.stderr + done.stdout
