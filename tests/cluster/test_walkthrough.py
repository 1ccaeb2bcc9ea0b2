"""The README and docs/flows.md, followed as written on a fresh local control plane.

A new user reads the README's Install section, runs its ``helm install``,
creates ``dbm/shop`` as its next section says, then follows docs/flows.md: back
and forward with kubectl, the example application chart through ``helm
install``/``upgrade``/``rollback``, a release whose Deployment fails (the schema
moves back by itself), and the fixed release. Every shell block the docs mark
``<!-- walkthrough: NAME -->`` runs here, in order, in bash with ``set -e``,
from a directory laid out like the repository (``examples/`` copied, so the
chart's new revision file does not land in the checkout). Nothing is added to
the commands but what any test on a shared cluster needs (``helm`` gets
``--take-ownership`` for the CRD other tests applied, and other ports when this
machine's are taken: the operator's pod shares the host's network here) and the
database: the docs' placeholder URL becomes a real PostgreSQL database. After
each block, :data:`CHECKS` reads the database and the resource, so a block
whose commands "succeed" without doing what the docs say still fails.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from localkube.privatemounts import check_support

from tests.chart.render import REPO, helm
from tests.cluster.conftest import Kube
from tests.support.kube import kubectl, namespace_free, wait_for
from tests.support.operator_kit import db_version, delete_namespace, events_with, read, ready

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

README = REPO / "README.md"
FLOWS = REPO / "docs" / "flows.md"
#: The Secret URL the docs show, replaced by a real database's.
PLACEHOLDER_URL = "postgresql://app:...@db:5432/shop"
OPERATOR_RELEASE = "revisor"
OPERATOR_NAMESPACE = "revisor-system"
APP_NAMESPACE = "shop"
OPERATOR_SELECTOR = "app.kubernetes.io/component=operator"
RELEASES_ANNOTATION = "revisor.dev/helm-release-revisions"

#: examples/shop's revisions, oldest first, and the one docs/flows.md's release adds.
CUSTOMERS, ORDERS, STATUS = "1a2b3c4d5e6f", "9d2e7a11c0f3", "3c9a1f0b2e44"
NOTE = "7e5d3c2b1a09"

BLOCK = re.compile(r"<!-- walkthrough: (?P<name>[a-z-]+) -->\n```sh\n(?P<script>.*?)```", re.S)


@dataclasses.dataclass(frozen=True)
class Step:
    """One marked shell block: where it is written, its name, its commands."""

    doc: Path
    name: str
    script: str


def steps() -> list[Step]:
    """Every marked block of the README, then of docs/flows.md, in reading order."""
    return [
        Step(doc, match["name"], match["script"])
        for doc in (README, FLOWS)
        for match in BLOCK.finditer(doc.read_text())
    ]


def test_every_marked_block_has_a_check_in_reading_order() -> None:
    """No cluster needed: the docs mark exactly the blocks this test knows how to check."""
    assert [step.name for step in steps()] == list(CHECKS)


def test_the_readme_installs_the_operator_for_the_shop_namespace_only() -> None:
    """The README's install serves the namespace it creates, not the whole cluster."""
    install = steps()[0]
    assert install.doc == README
    commands = [shlex.split(line, comments=True) for line in install.script.splitlines()]
    create, helm_install = (argv for argv in commands if argv)
    assert create == ["kubectl", "create", "namespace", APP_NAMESPACE]
    assert helm_install[:6] == [
        "helm", "install", OPERATOR_RELEASE, "charts/revisor", "-n", OPERATOR_NAMESPACE,
    ]  # fmt: skip
    assert f"watchNamespaces={{{APP_NAMESPACE}}}" in helm_install
    assert not [arg for arg in helm_install if "clusterWide" in arg]


# -- running a block ------------------------------------------------------------------------


@dataclasses.dataclass
class Walk:
    """The cluster, the database and the directory the docs' commands run in."""

    kube: Kube
    url: str
    workdir: Path
    env: dict[str, str]
    #: What each block printed, by name (for a failure's message, and for the docs).
    printed: dict[str, str] = dataclasses.field(default_factory=dict)

    def run(self, step: Step) -> str:
        script = step.script
        if PLACEHOLDER_URL in script:
            script = script.replace(PLACEHOLDER_URL, self.url)
        done = subprocess.run(
            ["bash", "-c", PRELUDE + script],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        printed = done.stdout + done.stderr
        self.printed[step.name] = printed
        assert done.returncode == 0, (
            f"{step.doc.name}, block {step.name!r} exited {done.returncode}:\n{printed}\n"
            f"{self.evidence()}"
        )
        return printed

    def evidence(self) -> str:
        """What the namespace looks like, for a failed block's message."""
        shown = subprocess.run(
            [kubectl(), "-n", APP_NAMESPACE, "get", "dbm,deploy,jobs,pods,events", "-o", "wide"],
            env=self.env, capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        status = json.dumps(self.status(), indent=1)
        return f"{shown.stdout}{shown.stderr}\ndbm/shop status: {status}"

    def status(self) -> dict[str, Any]:
        found: dict[str, Any] = read(self.kube, APP_NAMESPACE, "shop").get("status") or {}
        return found


#: Shell functions ahead of every block: what a shared test cluster needs, nothing else.
PRELUDE = """set -euo pipefail
helm() {
  if [ "${1:-}" = install ] && [[ " $* " == *" charts/revisor "* ]]; then
    command helm "$@" --take-ownership ${REVISOR_WALK_PORTS:-}
  else
    command helm "$@"
  fi
}
"""


def port_taken(port: int) -> bool:
    """Whether something on this machine listens on ``port`` (the pod shares its network)."""
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def walk(process_kubelet: Kube, pg_url: str, tmp_path: Path) -> Iterator[Walk]:
    """A directory laid out like the repository, tools on PATH, the cluster as KUBECONFIG.

    Afterwards the app namespace goes first (the operator, still running, lets its
    DatabaseMigrations go), then both releases and the operator's namespace.
    """
    kube = process_kubelet
    unsupported = check_support()
    if unsupported is not None:
        pytest.skip(f"the process-kubelet cannot mount ServiceAccount tokens here: {unsupported}")
    for name in (OPERATOR_NAMESPACE, APP_NAMESPACE):
        assert namespace_free(kube.api, name), f"namespace {name} exists: the walk needs it new"
    workdir = tmp_path / "repo"
    workdir.mkdir()
    shutil.copytree(REPO / "examples", workdir / "examples",
                    ignore=shutil.ignore_patterns("charts", "Chart.lock", "__pycache__"))  # fmt: skip
    for shared in ("charts", "manifests", "docs"):
        (workdir / shared).symlink_to(REPO / shared)
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(tmp_path / var.lower())
    tools = [str(Path(helm()).parent), str(Path(kubectl()).parent)]
    env["PATH"] = os.pathsep.join([*tools, str(Path(sys.executable).parent), env["PATH"]])
    env["KUBECONFIG"] = str(kube.kubeconfig)
    ports = {"operator.livenessPort": 8080, "metrics.port": 9090}
    env["REVISOR_WALK_PORTS"] = " ".join(
        f"--set {value}={free_port()}" for value, port in ports.items() if port_taken(port)
    )
    walked = Walk(kube=kube, url=pg_url, workdir=workdir, env=env)
    try:
        yield walked
    finally:
        delete_namespace(kube, APP_NAMESPACE)
        for release, namespace in (("shop", APP_NAMESPACE), (OPERATOR_RELEASE, OPERATOR_NAMESPACE)):
            subprocess.run(
                [helm(), "uninstall", release, "-n", namespace, "--wait"],
                env=env, capture_output=True, check=False, timeout=180,
            )  # fmt: skip
        delete_namespace(kube, OPERATOR_NAMESPACE)
        for name in (APP_NAMESPACE, OPERATOR_NAMESPACE):
            assert namespace_free(kube.api, name)
        record = os.environ.get("REVISOR_WALKTHROUGH_RECORD")
        if record:
            Path(record).write_text(json.dumps(walked.printed, indent=2) + "\n")


# -- what each block must have done ---------------------------------------------------------


def operator_pod(kube: Kube) -> Any:
    """The chart's operator pod, once it is Ready."""
    core = client.CoreV1Api(kube.api)

    def fetch() -> list[Any]:
        return list(
            core.list_namespaced_pod(OPERATOR_NAMESPACE, label_selector=OPERATOR_SELECTOR).items
        )

    pods = wait_for(
        fetch,
        lambda pods: (
            len(pods) == 1
            and any(
                c.type == "Ready" and c.status == "True" for c in pods[0].status.conditions or []
            )
        ),
        timeout=120,
        what="the operator's pod to be Ready",
    )
    return pods[0]


def installed(walk: Walk, printed: str) -> None:
    """The Deployment's own pod runs the operator, in-cluster, for the app namespace only."""
    pod = operator_pod(walk.kube)
    spec = pod.spec
    assert spec.service_account_name == "revisor"
    assert spec.containers[0].command == ["revisor-operator"]
    assert f"--namespace={APP_NAMESPACE}" in spec.containers[0].args
    assert "--all-namespaces" not in spec.containers[0].args
    # The ServiceAccount admission's token volume, at the path in-cluster clients read.
    mounts = {m.mount_path: m.name for m in spec.containers[0].volume_mounts}
    token_volume = mounts.get("/var/run/secrets/kubernetes.io/serviceaccount", "")
    assert token_volume.startswith("kube-api-access-"), mounts
    rbac = client.RbacAuthorizationV1Api(walk.kube.api)
    assert rbac.read_namespaced_role("revisor", APP_NAMESPACE).rules
    with pytest.raises(ApiException) as caught:
        rbac.read_cluster_role_binding("revisor")
    assert caught.value.status == 404


def migrated_with_kubectl(walk: Walk, printed: str) -> None:
    """dbm/shop reached head, said so in `kubectl get`, and it was the chart's pod."""
    assert db_version(walk.url) == {STATUS}
    status = walk.status()
    assert status["phase"] == "Succeeded"
    assert status["currentRevision"] == STATUS
    assert re.search(rf"shop\s+head\s+{STATUS}\s+True\s+Succeeded", printed), printed
    events_with(walk.kube, APP_NAMESPACE, {"Running", "Migrated"}, involving="shop")
    pod = operator_pod(walk.kube)
    log = client.CoreV1Api(walk.kube.api).read_namespaced_pod_log(
        pod.metadata.name, OPERATOR_NAMESPACE
    )
    for word in ("Forbidden", "forbidden", "no Kubernetes credentials", "Traceback"):
        assert word not in log, log
    assert pod.status.container_statuses[0].restart_count == 0


def at(revision: str) -> Callable[[Walk, str], None]:
    def check(walk: Walk, printed: str) -> None:
        assert db_version(walk.url) == {revision}, printed
        status = walk.status()
        assert status["phase"] == "Succeeded", status
        assert status["currentRevision"] == revision
        assert ready(read(walk.kube, APP_NAMESPACE, "shop"))["status"] == "True"

    return check


def recorded(releases: dict[str, str]) -> Callable[[Walk, str], None]:
    """At the last release's revision, with every release's revision recorded."""

    def check(walk: Walk, printed: str) -> None:
        last = releases[max(releases, key=int)]
        at(last)(walk, printed)
        annotations = read(walk.kube, APP_NAMESPACE, "shop")["metadata"]["annotations"]
        assert json.loads(annotations[RELEASES_ANNOTATION]) == releases

    return check


def rolled_back(walk: Walk, printed: str) -> None:
    """Release 2's revision again, then back at release 1's when its Deployment failed."""
    assert db_version(walk.url) == {STATUS}, printed
    status = walk.status()
    assert status["phase"] == "RolledBack", status
    assert status["rollout"]["state"] == "RolledBack"
    assert status["currentRevision"] == STATUS
    assert "ProgressDeadlineExceeded" in printed, printed
    assert f"moved back from {NOTE} to {STATUS}" in printed, printed


def helm_rolled_back(walk: Walk, printed: str) -> None:
    at(STATUS)(walk, printed)
    assert walk.status()["lastRun"]["direction"] == "downgrade"


#: Each marked block, in reading order, and what it must leave behind.
CHECKS: dict[str, Callable[[Walk, str], None]] = {
    "install": installed,
    "kubectl": migrated_with_kubectl,
    "back": at(ORDERS),
    "forward": at(STATUS),
    "helm-install": recorded({"1": STATUS}),
    "helm-upgrade": recorded({"1": STATUS, "2": NOTE}),
    "helm-rollback": helm_rolled_back,
    "deploy-fails": rolled_back,
    "deploy-fixed": at(NOTE),
}


@pytest.mark.timeout(900)
def test_the_readme_and_flows_work_as_written(walk: Walk) -> None:
    """Every marked block runs as written and leaves what the docs say it leaves."""
    for step in steps():
        started = time.monotonic()
        printed = walk.run(step)
        CHECKS[step.name](walk, printed)
        print(f"{step.doc.name} {step.name}: {time.monotonic() - started:.1f} s")
