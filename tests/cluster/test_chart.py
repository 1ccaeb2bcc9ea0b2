"""The chart on a real control plane (RBAC on): accepted, installable, and its RBAC is enough.

The strongest check: the chart is installed with Helm, then the operator
runs in this process (kopf's KopfRunner, as in test_operator*.py) but
authenticated as the chart's ServiceAccount with a TokenRequest token, and
takes a DatabaseMigration to Ready. Any call the chart forgot to grant
fails that run (or shows up as a 403 in the operator's output).

The chart's own Deployment is installed with ``operator.replicas=0``: under
localkube's process-kubelet its pod would run ``revisor-operator`` from this
checkout without the in-cluster token and CA files a real kubelet mounts, so
it proves nothing there; the in-process operator with the same identity is
the same program with the same permissions.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.chart.render import CHART, REPO, helm
from tests.cluster.conftest import Kube
from tests.cluster.test_operator_kit import (
    create,
    create_config_map,
    create_namespace,
    create_secret,
    delete_namespace,
    events_with,
    migration,
    ready,
    running_operator,
    settled,
)
from tests.support.kube import condition, get, wait_for
from tests.support.kube import kubectl as find_kubectl
from tests.support.projects import chain

pytestmark = pytest.mark.cluster

CRD_NAME = "databasemigrations.revisor.dev"
REVS = chain(2, prefix="c")


@dataclasses.dataclass(frozen=True)
class Release:
    """A Helm release of the chart: where it lives and what it serves."""

    name: str
    namespace: str
    watched: str
    #: A namespace that exists but that the release does not serve.
    other: str
    kube: Kube
    env: dict[str, str]

    @property
    def service_account(self) -> str:
        return f"{self.name}-revisor"


def kubectl() -> str:
    return find_kubectl()


def run(argv: list[str], *, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, check=False, env=env, timeout=120
    )
    assert done.returncode == 0, f"{' '.join(argv[:3])}...: {done.stdout}\n{done.stderr}"
    return done.stdout


def helm_env(tmp: Path) -> dict[str, str]:
    """Helm's cache/config/data in a temporary directory, not the developer's."""
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(tmp / var.lower())
    return env


def helm_install(release: Release, *values: str, command: str = "install") -> str:
    # --take-ownership: the session's other tests may have applied the same CRD already.
    return run(
        [
            helm(),
            command,
            release.name,
            str(CHART),
            "--namespace",
            release.namespace,
            "--kubeconfig",
            str(release.kube.kubeconfig),
            "--take-ownership",
            "--set",
            "operator.replicas=0",
            *values,
        ],
        env=release.env,
    )


@pytest.fixture(scope="module")
def release(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    """The chart installed in namespaced mode: serving one namespace, not another."""
    suffix = uuid.uuid4().hex[:5]
    installed = Release(
        name=f"rv{suffix}",
        namespace=create_namespace(kube, "chart", "release"),
        watched=create_namespace(kube, "chart", "watched"),
        other=create_namespace(kube, "chart", "other"),
        kube=kube,
        env=helm_env(tmp_path_factory.mktemp("helm")),
    )
    helm_install(installed, "--set", f"watchNamespaces={{{installed.watched}}}")
    # kopf serves only the CRDs its start-up scan finds: let the API serve this one first.
    wait_for(
        lambda: get(kube.api, "apiextensions.k8s.io/v1", "CustomResourceDefinition", CRD_NAME),
        lambda crd: crd is not None and condition(crd, "Established") == "True",
        timeout=30,
        what=f"CRD {CRD_NAME} Established",
    )
    _wait_for_rbac(installed, tmp_path_factory.mktemp("rbac") / "kubeconfig")
    yield installed
    subprocess.run(
        [helm(), "uninstall", installed.name, "-n", installed.namespace, "--kubeconfig",
         str(kube.kubeconfig)],
        env=installed.env, capture_output=True, check=False,
    )  # fmt: skip
    for namespace in (installed.namespace, installed.watched, installed.other):
        delete_namespace(kube, namespace)


def _wait_for_rbac(release: Release, kubeconfig: Path) -> None:
    """Until the API server's authorizer has the new bindings (its cache lags a create)."""
    path = token_kubeconfig(release.kube, release.namespace, release.service_account, kubeconfig)
    as_operator = config.new_client_from_config(config_file=str(path))
    try:
        wait_for(
            lambda: (
                can(as_operator, "list", "namespaces")
                and all(can(as_operator, verb, what, release.watched) for verb, what in GRANTED)
            ),
            bool,
            timeout=30,
            what="the chart's RBAC to take effect for its ServiceAccount",
        )
    finally:
        as_operator.close()


def token_kubeconfig(kube: Kube, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as ServiceAccount ``namespace/account`` (TokenRequest)."""
    token = client.CoreV1Api(kube.api).create_namespaced_service_account_token(
        account, namespace, {"spec": {"expirationSeconds": 3600}}
    )
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    cluster = dict(admin["clusters"][0]["cluster"])
    if "certificate-authority" in cluster:  # a file next to the admin's kubeconfig
        ca = (kube.kubeconfig.parent / cluster.pop("certificate-authority")).read_bytes()
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    path.write_text(
        yaml.safe_dump({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": account, "user": {"token": token.status.token}}],
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
        {"spec": {"resourceAttributes": attributes}}
    )
    return bool(review.status.allowed)


# -- accepted by the API server ---------------------------------------------------------


def test_rendered_chart_passes_server_side_dry_run(kube: Kube, namespace: str) -> None:
    """`kubectl apply --dry-run=server` accepts every object, in both modes (admission, schemas)."""
    for values in ([], ["--set", f"watchNamespaces={{{namespace}}}"]):
        rendered = run([helm(), "template", "dry", str(CHART), "--namespace", namespace, *values])
        out = run(
            [kubectl(), "--kubeconfig", str(kube.kubeconfig), "apply", "--dry-run=server",
             "--server-side", "--force-conflicts", "-f", "-"],
            stdin=rendered,
        )  # fmt: skip
        assert "deployment.apps/dry-revisor serverside-applied (server dry run)" in out, out
        assert "serviceaccount/dry-revisor-runner serverside-applied" in out, out


def test_static_manifests_apply_with_kustomize(kube: Kube) -> None:
    """`kubectl apply -k manifests/` (server dry run): the kustomization and every file are valid."""
    core = client.CoreV1Api(kube.api)
    # A dry-run Namespace is not there for the objects in it: create it for real.
    try:
        core.create_namespace({"metadata": {"name": "revisor-system"}})
        created = True
    except ApiException as exc:
        assert exc.status == 409
        created = False
    try:
        out = run(
            [kubectl(), "--kubeconfig", str(kube.kubeconfig), "apply", "--dry-run=server",
             "--server-side", "--force-conflicts", "-k", str(REPO / "manifests")]
        )  # fmt: skip
    finally:
        if created:
            core.delete_namespace("revisor-system")
    for obj in (
        "customresourcedefinition.apiextensions.k8s.io/databasemigrations.revisor.dev",
        "clusterrole.rbac.authorization.k8s.io/revisor",
        "deployment.apps/revisor",
        "service/revisor-metrics",
    ):
        assert f"{obj} serverside-applied (server dry run)" in out, out


# -- installed: the RBAC is enough -----------------------------------------------------


def test_operator_as_the_charts_service_account_migrates_to_ready(
    release: Release, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With only the chart's RBAC, the operator runs a migration to Ready and deletes cleanly."""
    kube = release.kube
    assert get(kube.api, "apiextensions.k8s.io/v1", "CustomResourceDefinition", CRD_NAME)
    config_path = token_kubeconfig(
        kube, release.namespace, release.service_account, tmp_path / "sa.kubeconfig"
    )
    tmp_path.chmod(0o777)  # the Job's pod runs as another user
    url = f"sqlite:///{tmp_path / 'app.db'}"
    as_operator = dataclasses.replace(kube, kubeconfig=config_path)
    ns = release.watched
    with running_operator(as_operator, ns) as runner:
        create_secret(kube, ns, url)
        create_config_map(kube, ns, REVS)
        create(kube, ns, migration("app"))
        done = settled(kube, ns, "app")
        assert done["status"]["phase"] == "Succeeded", done["status"]
        assert ready(done)["status"] == "True"
        assert done["status"]["currentRevision"] == REVS[-1].id
        assert done["metadata"]["finalizers"] == ["revisor.dev/finalizer"]
        events_with(kube, ns, {"Running", "Migrated"}, involving="app")
        client.CustomObjectsApi(kube.api).delete_namespaced_custom_object(
            "revisor.dev", "v1alpha1", ns, "databasemigrations", "app"
        )
        wait_for(
            lambda: get(kube.api, "revisor.dev/v1alpha1", "DatabaseMigration", "app", ns),
            lambda obj: obj is None,
            timeout=30,
            what="the finalizer to be removed by the operator",
        )
    # kopf logs a refused call (e.g. "Not enough permissions to watch for resources") and retries.
    output = runner.output + caplog.text
    assert "Handler 'on_change' succeeded" in output
    # Not "403": it turns up in log timestamps (12:34:56,403); a refusal says Forbidden anyway.
    for word in ("Forbidden", "forbidden", "Not enough permissions"):
        assert word not in output, output


# -- ... and not more than enough ----------------------------------------------------------


@pytest.fixture(scope="module")
def as_operator(release: Release, tmp_path_factory: pytest.TempPathFactory) -> client.ApiClient:
    path = token_kubeconfig(
        release.kube,
        release.namespace,
        release.service_account,
        tmp_path_factory.mktemp("sa") / "kubeconfig",
    )
    return config.new_client_from_config(config_file=str(path))


GRANTED = [
    ("create", "batch:jobs"),
    ("watch", "batch:jobs"),
    ("get", "secrets"),
    ("list", "pods"),
    ("watch", "configmaps"),
    ("patch", "revisor.dev:databasemigrations"),
    ("patch", "revisor.dev:databasemigrations/status"),
    ("create", "events"),
]
DENIED_IN_WATCHED = [
    ("list", "secrets"),
    ("watch", "secrets"),
    ("update", "secrets"),
    ("delete", "secrets"),
    ("delete", "batch:jobs"),
    ("patch", "batch:jobs"),
    ("create", "pods"),
    ("create", "pods/exec"),
    ("get", "pods/log"),
    ("delete", "revisor.dev:databasemigrations"),
    ("create", "revisor.dev:databasemigrations"),
    ("create", "apps:deployments"),
    ("create", "rbac.authorization.k8s.io:roles"),
    ("create", "rbac.authorization.k8s.io:rolebindings"),
    ("create", "serviceaccounts/token"),
    ("patch", "configmaps"),
]


def test_service_account_may_do_what_the_operator_does(
    release: Release, as_operator: client.ApiClient
) -> None:
    """In the served namespace: Jobs, Secrets by name, pods, ConfigMaps, status, Events."""
    for verb, resource in GRANTED:
        assert can(as_operator, verb, resource, release.watched), (verb, resource)
    assert can(as_operator, "list", "namespaces")
    assert can(as_operator, "watch", "apiextensions.k8s.io:customresourcedefinitions")


def test_service_account_may_do_nothing_else(
    release: Release, as_operator: client.ApiClient
) -> None:
    """No Secret listing, no deletes, no pods, no RBAC, nothing in a namespace it does not serve."""
    for verb, resource in DENIED_IN_WATCHED:
        assert not can(as_operator, verb, resource, release.watched), (verb, resource)
    for verb, resource in GRANTED:
        assert not can(as_operator, verb, resource, release.other), (verb, resource, "other ns")
    assert not can(as_operator, "create", "namespaces")
    assert not can(as_operator, "update", "apiextensions.k8s.io:customresourcedefinitions")
    assert not can(as_operator, "list", "nodes")
    assert not can(as_operator, "list", "secrets")  # all namespaces
    # And for real: the API answers 403.
    core = client.CoreV1Api(as_operator)
    for call in (
        lambda: core.list_namespaced_secret(release.watched),
        lambda: core.list_namespaced_config_map(release.other),
        lambda: client.BatchV1Api(as_operator).list_namespaced_job(release.other),
    ):
        with pytest.raises(ApiException) as caught:
            call()
        assert caught.value.status == 403


def test_runner_service_account_has_no_permissions(release: Release, kube: Kube) -> None:
    """The engine's ServiceAccount: no token by default, and no API permission at all."""
    name = f"{release.service_account}-runner"
    for namespace in (release.namespace, release.watched):
        account = client.CoreV1Api(kube.api).read_namespaced_service_account(name, namespace)
        assert account.automount_service_account_token is False
    user = f"system:serviceaccount:{release.watched}:{name}"
    for verb, resource in [*GRANTED, ("get", "configmaps"), ("list", "pods")]:
        group, _, plural = resource.rpartition(":")
        review = client.AuthorizationV1Api(kube.api).create_subject_access_review({
            "spec": {
                "user": user,
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{release.watched}"],
                "resourceAttributes": {
                    "verb": verb, "group": group, "resource": plural.split("/")[0],
                    "namespace": release.watched,
                },
            }
        })  # fmt: skip
        assert not review.status.allowed, (verb, resource)


def test_upgrade_follows_values_and_uninstall_keeps_the_crd(release: Release, kube: Kube) -> None:
    """helm upgrade adds a served namespace's Role; helm uninstall removes it all but the CRD."""
    extra = create_namespace(kube, "chart", "extra")
    rbac = client.RbacAuthorizationV1Api(kube.api)
    try:
        helm_install(
            release,
            "--set",
            f"watchNamespaces={{{release.watched},{extra}}}",
            command="upgrade",
        )
        assert rbac.read_namespaced_role(release.service_account, extra).rules
        run(
            [helm(), "uninstall", release.name, "-n", release.namespace, "--kubeconfig",
             str(kube.kubeconfig), "--wait"],
            env=release.env,
        )  # fmt: skip
        for namespace in (release.watched, extra):
            assert rbac.list_namespaced_role(namespace).items == []
        crd = get(kube.api, "apiextensions.k8s.io/v1", "CustomResourceDefinition", CRD_NAME)
        assert crd is not None, "the CRD went with the release"
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    finally:
        delete_namespace(kube, extra)
