"""The chart on a real control plane (RBAC on): accepted, installable, and its RBAC is enough.

The strongest check: the chart is installed with Helm, then the operator
runs in this process (kopf's KopfRunner, as in test_operator*.py) but
authenticated as the chart's ServiceAccount with a TokenRequest token, and
takes a DatabaseMigration to Ready. Any call the chart forgot to grant
fails that run (or shows up as a 403 in the operator's output). Both install
modes get that proof — namespaced (``watchNamespaces``, as the README installs)
and cluster-wide (``clusterWide=true``, the operator run with
``--all-namespaces`` as its Deployment runs it) — and so do the static
manifests (cluster-wide), applied for real with ``kubectl apply -k``.

Those releases install the chart's Deployment with ``operator.replicas=0``, so
that the operator's output can be searched for refusals in this process. The
README's own ``helm install``, whose Deployment's pod runs the operator with
its in-cluster credentials, is followed as written by test_walkthrough.py.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import textwrap
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
from tests.cluster.test_rollback import deploy
from tests.support.kube import (
    as_dict,
    can,
    condition,
    get,
    namespace_free,
    present,
    token_kubeconfig,
    wait_for,
)
from tests.support.kube import kubectl as find_kubectl
from tests.support.operator_kit import (
    create,
    create_config_map,
    create_namespace,
    create_secret,
    delete_namespace,
    events_with,
    install_crd,
    migration,
    patch_spec,
    read,
    ready,
    running_operator,
    settled,
    slow,
    window_closed,
)
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
    #: clusterWide=true: a ClusterRole, and the operator runs with --all-namespaces.
    clusterwide: bool = False

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


def helm_install(
    release: Release, *values: str, command: str = "install", chart: Path = CHART
) -> str:
    # --take-ownership: the session's other tests may have applied the same CRD already.
    return run(
        [
            helm(),
            command,
            release.name,
            str(chart),
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


def _installed(
    kube: Kube, tmp_path_factory: pytest.TempPathFactory, *, clusterwide: bool
) -> Iterator[Release]:
    """The chart installed in three fresh namespaces, served, then uninstalled."""
    mode = "cw-" if clusterwide else ""
    installed = Release(
        name=f"rv{'c' if clusterwide else ''}{uuid.uuid4().hex[:5]}",
        namespace=create_namespace(kube, "chart", f"{mode}release"),
        watched=create_namespace(kube, "chart", f"{mode}watched"),
        other=create_namespace(kube, "chart", f"{mode}other"),
        kube=kube,
        env=helm_env(tmp_path_factory.mktemp("helm")),
        clusterwide=clusterwide,
    )
    scope = (
        ("--set", "clusterWide=true")
        if clusterwide
        else ("--set", f"watchNamespaces={{{installed.watched}}}")
    )
    helm_install(installed, *scope)
    _wait_until_served(installed, tmp_path_factory.mktemp("rbac") / "kubeconfig")
    yield installed
    _uninstall(installed)


@pytest.fixture(scope="module")
def release(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    """The chart installed in namespaced mode: serving one namespace, not another."""
    yield from _installed(kube, tmp_path_factory, clusterwide=False)


@pytest.fixture
def clusterwide(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    """The chart installed cluster-wide, clusterWide=true (its Deployment scaled to 0)."""
    yield from _installed(kube, tmp_path_factory, clusterwide=True)


def _uninstall(release: Release) -> None:
    subprocess.run(
        [helm(), "uninstall", release.name, "-n", release.namespace, "--kubeconfig",
         str(release.kube.kubeconfig)],
        env=release.env, capture_output=True, check=False,
    )  # fmt: skip
    for namespace in (release.namespace, release.watched, release.other):
        delete_namespace(release.kube, namespace)


def _wait_until_served(release: Release, kubeconfig: Path) -> None:
    # kopf serves only the CRDs its start-up scan finds: let the API serve this one first.
    wait_for(
        lambda: get(release.kube.api, "apiextensions.k8s.io/v1", "CustomResourceDefinition",
                    CRD_NAME),
        lambda crd: crd is not None and condition(crd, "Established") == "True",
        timeout=30,
        what=f"CRD {CRD_NAME} Established",
    )  # fmt: skip
    _wait_for_rbac(release.kube, release.namespace, release.service_account, release.watched,
                   kubeconfig, namespaces=not release.clusterwide)  # fmt: skip


def _wait_for_rbac(
    kube: Kube, namespace: str, account: str, served: str, kubeconfig: Path, *, namespaces: bool
) -> None:
    """Until the API server's authorizer has the new bindings (its cache lags a create).

    ``namespaces``: the account must also list namespaces (namespaced mode, where kopf
    resolves the namespaces it serves; with --all-namespaces it never lists them).
    """
    path = token_kubeconfig(kube.api, kube.kubeconfig, namespace, account, kubeconfig)
    as_operator = config.new_client_from_config(config_file=str(path))
    try:
        wait_for(
            lambda: (
                (not namespaces or can(as_operator, "list", "namespaces"))
                and all(can(as_operator, verb, what, served) for verb, what in GRANTED)
            ),
            bool,
            timeout=30,
            what="the chart's RBAC to take effect for its ServiceAccount",
        )
    finally:
        as_operator.close()


# -- accepted by the API server ---------------------------------------------------------


def test_rendered_chart_passes_server_side_dry_run(kube: Kube, namespace: str) -> None:
    """`kubectl apply --dry-run=server` accepts every object, in every mode (admission, schemas)."""
    for values in (
        [],
        ["--set", "clusterWide=true"],
        ["--set", f"watchNamespaces={{{namespace}}}"],
        ["--set", "networkPolicy.egress.restrict=true",
         "--set", "networkPolicy.egress.apiServerCIDRs={10.0.0.1/32}",
         "--set", "networkPolicy.metricsFrom[0].podSelector.matchLabels.app=prometheus"],
    ):  # fmt: skip
        rendered = run([helm(), "template", "dry", str(CHART), "--namespace", namespace, *values])
        out = run(
            [kubectl(), "--kubeconfig", str(kube.kubeconfig), "apply", "--dry-run=server",
             "--server-side", "--force-conflicts", "-f", "-"],
            stdin=rendered,
        )  # fmt: skip
        assert "deployment.apps/dry-revisor serverside-applied (server dry run)" in out, out
        assert "serviceaccount/dry-revisor-runner serverside-applied" in out, out
        assert "networkpolicy.networking.k8s.io/dry-revisor serverside-applied" in out, out


def test_notes_say_how_to_check_the_operator_and_migrate(
    kube: Kube, namespace: str, tmp_path: Path
) -> None:
    """What `helm install` prints: the rollout check, a first DatabaseMigration that applies."""

    def notes(*values: str) -> str:
        out = run(
            [helm(), "install", "revisor", str(CHART), "--namespace", namespace, "--kubeconfig",
             str(kube.kubeconfig), "--dry-run=client", "--take-ownership", *values],
            env=helm_env(tmp_path),
        )  # fmt: skip
        return out[out.index("NOTES:") :]

    default = notes()
    assert f"It serves DatabaseMigrations in its own namespace only: {namespace}" in default
    assert f"kubectl -n {namespace} rollout status deployment/revisor" in default
    assert f"kubectl -n {namespace} create secret generic shop-db" in default
    assert f"kubectl -n {namespace} create configmap shop-migrations" in default
    assert f"kubectl -n {namespace} label configmap shop-migrations revisor.dev/scripts=true" in (
        default
    )
    assert f"kubectl -n {namespace} wait dbm/shop --for=condition=Ready" in default
    assert "docs/security.md" in default
    assert "operator is not running" not in default
    assert "kubectl delete crd databasemigrations.revisor.dev" in default  # crds.keep
    # The example is a resource the CRD accepts, as printed.
    example = default.split("<<YAML\n", 1)[1].split("\n  YAML\n", 1)[0]
    install_crd(kube)
    out = run(
        [kubectl(), "--kubeconfig", str(kube.kubeconfig), "apply", "--dry-run=server",
         "-n", namespace, "-f", "-"],
        stdin=textwrap.dedent(example),
    )  # fmt: skip
    assert "databasemigration.revisor.dev/shop created (server dry run)" in out, out

    scoped = notes("--set", "watchNamespaces={shop,billing}", "--set", "operator.replicas=0",
                   "--set", "crds.keep=false")  # fmt: skip
    assert "It serves DatabaseMigrations in: shop, billing." in scoped
    assert "kubectl -n shop create secret generic shop-db" in scoped
    assert "operator.replicas is 0: the operator is not running" in scoped
    assert "kubectl delete crd" not in scoped
    everywhere = notes("--set", "clusterWide=true")
    assert "It serves DatabaseMigrations in every namespace (clusterWide: true)." in everywhere


# -- installed: the RBAC is enough -----------------------------------------------------


def migrate_as(
    kube: Kube,
    account: tuple[str, str],
    ns: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    *,
    all_namespaces: bool = False,
    rollout: bool = False,
) -> dict[str, Any]:
    """The operator as ServiceAccount ``account`` (namespace, name) migrates ``ns`` to Ready.

    It then deletes the resource (the finalizer is the operator's to remove). With
    ``rollout``, the resource names a Deployment (``spec.rollback.deploymentRef``) that
    rolls out fine, and the window must close as Succeeded: the operator read it. The last
    revision waits until status.progress names it: the operator read the Job's pod log.
    Any call its RBAC refuses fails the test, whether the run stalls or kopf logs and retries.
    """
    config_path = token_kubeconfig(kube.api, kube.kubeconfig, *account, tmp_path / "sa.kubeconfig")
    tmp_path.chmod(0o777)  # the Job's pod runs as another user
    url = f"sqlite:///{tmp_path / 'app.db'}"
    as_operator = dataclasses.replace(kube, kubeconfig=config_path)
    # From a fresh database the window opens only when a rollback to base is allowed.
    window = {"deploymentRef": {"name": "web"}, "window": "2m", "allowBase": True}
    spec = {"rollback": window} if rollout else {}
    scope = () if all_namespaces else (ns,)
    hold = tmp_path / "hold"
    hold.touch()
    with running_operator(as_operator, *scope, all_namespaces=all_namespaces) as runner:
        create_secret(kube, ns, url)
        create_config_map(kube, ns, [*REVS[:-1], slow(REVS[-1], hold)])
        create(kube, ns, migration("app", **spec))
        wait_for(
            lambda: read(kube, ns, "app"),
            lambda obj: (
                ((obj.get("status") or {}).get("progress") or {}).get("revision") == REVS[-1].id
            ),
            timeout=90,
            interval=0.3,
            what="the progress of the last revision, read from the Job's pod log",
        )
        hold.unlink()
        if rollout:
            # After the migration, as in a release: this rollout is the one the window follows.
            deploy(kube, ns, ready_command="true", progress_deadline=120)
        done = settled(kube, ns, "app")
        assert done["status"]["phase"] == "Succeeded", done["status"]
        assert ready(done)["status"] == "True"
        assert done["status"]["currentRevision"] == REVS[-1].id
        assert done["metadata"]["finalizers"] == ["revisor.dev/finalizer"]
        if rollout:
            done = window_closed(kube, ns, "app", timeout=90)
            assert done["status"]["rollout"]["state"] == "Succeeded", done["status"]["rollout"]
            assert done["status"]["rollout"]["deployment"] == "web"
        # The Events prove `create events`; Running is posted as soon as the Job is
        # created, so a status write that conflicts right after cannot lose it.
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
    # kopf logs a refused call (e.g. "Not enough permissions to watch for resources") and
    # retries; the operator's retry says "not allowed". Which handler got the run through
    # varies (a conflicting on_change may leave it to on_job_event): the status says it did.
    output = runner.output + caplog.text
    # Not "403": it turns up in log timestamps (12:34:56,403); a refusal says Forbidden anyway.
    for word in ("Forbidden", "forbidden", "Not enough permissions", "not allowed"):
        assert word not in output, output
    return done


def test_operator_as_the_charts_service_account_migrates_to_ready(
    release: Release, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With only the chart's RBAC, the operator runs a migration to Ready and deletes cleanly."""
    assert get(release.kube.api, "apiextensions.k8s.io/v1", "CustomResourceDefinition", CRD_NAME)
    account = (release.namespace, release.service_account)
    migrate_as(release.kube, account, release.watched, tmp_path, caplog)


# -- ... and not more than enough ----------------------------------------------------------


@pytest.fixture(scope="module")
def as_operator(release: Release, tmp_path_factory: pytest.TempPathFactory) -> client.ApiClient:
    path = token_kubeconfig(
        release.kube.api,
        release.kube.kubeconfig,
        release.namespace,
        release.service_account,
        tmp_path_factory.mktemp("sa") / "kubeconfig",
    )
    api: client.ApiClient = config.new_client_from_config(config_file=str(path))
    return api


GRANTED = [
    ("get", "apps:deployments"),
    ("create", "batch:jobs"),
    ("watch", "batch:jobs"),
    ("get", "secrets"),
    ("list", "pods"),
    ("get", "pods/log"),
    ("watch", "configmaps"),
    ("patch", "revisor.dev:databasemigrations"),
    ("patch", "revisor.dev:databasemigrations/status"),
    ("create", "events"),
    # DatabaseMigrationSets: the set, its children, their finished Jobs, the tenants' Secrets.
    ("get", "revisor.dev:databasemigrationsets"),
    ("patch", "revisor.dev:databasemigrationsets/status"),
    ("create", "revisor.dev:databasemigrations"),
    ("delete", "revisor.dev:databasemigrations"),
    ("delete", "batch:jobs"),
    ("list", "secrets"),
]
DENIED_IN_WATCHED = [
    ("watch", "secrets"),
    ("update", "secrets"),
    ("delete", "secrets"),
    ("patch", "batch:jobs"),
    ("create", "pods"),
    ("create", "pods/exec"),
    ("create", "pods/attach"),
    ("create", "pods/portforward"),
    ("delete", "revisor.dev:databasemigrationsets"),
    ("create", "revisor.dev:databasemigrationsets"),
    ("create", "apps:deployments"),
    ("create", "rbac.authorization.k8s.io:roles"),
    ("create", "rbac.authorization.k8s.io:rolebindings"),
    ("create", "serviceaccounts/token"),
    ("patch", "configmaps"),
]


def test_service_account_may_do_what_the_operator_does(
    release: Release, as_operator: client.ApiClient
) -> None:
    """In the served namespace: Jobs, Secrets by name, pods, ConfigMaps, status, Events, the
    Deployment of spec.rollback.deploymentRef."""
    for verb, resource in GRANTED:
        assert can(as_operator, verb, resource, release.watched), (verb, resource)
    assert can(as_operator, "list", "namespaces")
    assert can(as_operator, "watch", "apiextensions.k8s.io:customresourcedefinitions")


def test_service_account_may_do_nothing_else(
    release: Release, as_operator: client.ApiClient
) -> None:
    """No Secret watch, no pods, no RBAC, nothing in a namespace it does not serve.

    Listing Secrets in a served namespace is granted (a DatabaseMigrationSet's
    secretSelector, as metadata only); in any other namespace it is refused.
    """
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
        lambda: core.list_namespaced_secret(release.other),
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
        review = client.AuthorizationV1Api(kube.api).create_subject_access_review(
            client.V1SubjectAccessReview.model_validate({"spec": {
                "user": user,
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{release.watched}"],
                "resourceAttributes": {
                    "verb": verb, "group": group, "resource": plural.split("/")[0],
                    "namespace": release.watched,
                },
            }})
        )  # fmt: skip
        assert not present(review.status).allowed, (verb, resource)


# -- cluster-wide: clusterWide=true, and `kubectl apply -k manifests/` ---------------------


def alone_in_the_cluster(kube: Kube, ns: str) -> None:
    """An operator with --all-namespaces serves every DatabaseMigration there is: only ours."""
    found = as_dict(
        client.CustomObjectsApi(kube.api).list_cluster_custom_object(
            "revisor.dev", "v1alpha1", "databasemigrations"
        )
    )
    others = [o["metadata"]["namespace"] for o in found["items"]]
    if [n for n in others if n != ns]:
        pytest.skip(f"other DatabaseMigrations exist ({sorted(set(others))}): a cluster-wide "
                    "operator would serve them too")  # fmt: skip


def test_cluster_wide_release_migrates_and_follows_a_rollout_as_its_service_account(
    clusterwide: Release, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the ClusterRole: --all-namespaces, a migration to Ready, the Deployment read."""
    kube = clusterwide.kube
    path = token_kubeconfig(
        kube.api,
        kube.kubeconfig,
        clusterwide.namespace,
        clusterwide.service_account,
        tmp_path / "check.kubeconfig",
    )
    as_operator = config.new_client_from_config(config_file=str(path))
    try:
        # What --all-namespaces asks for: cluster-scoped lists and watches.
        for verb, resource in [
            ("list", "revisor.dev:databasemigrations"),
            ("watch", "revisor.dev:databasemigrations"),
            ("watch", "batch:jobs"),
            ("watch", "configmaps"),
            ("watch", "apiextensions.k8s.io:customresourcedefinitions"),
        ]:
            assert can(as_operator, verb, resource), (verb, resource, "all namespaces")
        for namespace in (clusterwide.watched, clusterwide.other):
            for verb, resource in GRANTED:
                assert can(as_operator, verb, resource, namespace), (verb, resource, namespace)
            for verb, resource in DENIED_IN_WATCHED:
                assert not can(as_operator, verb, resource, namespace), (verb, resource)
        # A DatabaseMigrationSet's secretSelector lists Secrets (as metadata only): served
        # everywhere, so granted everywhere. Watching them is not.
        assert can(as_operator, "list", "secrets")
        assert not can(as_operator, "watch", "secrets")
        assert not can(as_operator, "list", "namespaces")  # -A needs none: not granted
    finally:
        as_operator.close()
    alone_in_the_cluster(kube, clusterwide.watched)
    account = (clusterwide.namespace, clusterwide.service_account)
    migrate_as(kube, account, clusterwide.watched, tmp_path, caplog, all_namespaces=True,
               rollout=True)  # fmt: skip


@pytest.fixture
def kustomized(kube: Kube, tmp_path: Path) -> Iterator[str]:
    """`kubectl apply -k manifests/` for real, through an overlay that only sets replicas: 0.

    The overlay is the one change: under the process-kubelet the Deployment's pod would
    run this checkout's operator, serving every namespace of the session, beside the one
    this test runs. Removed afterwards, except the CRD, which the session shares.
    """
    if not namespace_free(kube.api, "revisor-system"):
        pytest.skip("namespace revisor-system exists: applying manifests/ would overwrite it")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(REPO / "manifests", overlay)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [base],
            "replicas": [{"name": "revisor", "count": 0}],
        })
    )  # fmt: skip
    rbac = client.RbacAuthorizationV1Api(kube.api)
    try:
        yield run([kubectl(), "--kubeconfig", str(kube.kubeconfig), "apply", "-k", str(overlay)])
    finally:
        for delete in (rbac.delete_cluster_role_binding, rbac.delete_cluster_role):
            try:
                delete("revisor")
            except ApiException as exc:
                assert exc.status == 404
        delete_namespace(kube, "revisor-system")


def test_static_manifests_install_a_working_operator_with_kustomize(
    kustomized: str, kube: Kube, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every object of manifests/ is created; its ServiceAccount's token runs a migration."""
    for obj in (
        "namespace/revisor-system",
        "customresourcedefinition.apiextensions.k8s.io/databasemigrations.revisor.dev",
        "serviceaccount/revisor",
        "serviceaccount/revisor-runner",
        "clusterrole.rbac.authorization.k8s.io/revisor",
        "clusterrolebinding.rbac.authorization.k8s.io/revisor",
        "service/revisor-metrics",
        "deployment.apps/revisor",
    ):
        assert obj in kustomized, kustomized
    deployment = client.AppsV1Api(kube.api).read_namespaced_deployment("revisor", "revisor-system")
    spec = present(deployment.spec)
    pod = present(spec.template.spec)
    assert pod.service_account_name == "revisor"
    assert "--all-namespaces" in present(pod.containers[0].args)
    assert spec.replicas == 0  # the overlay's one change
    binding = client.RbacAuthorizationV1Api(kube.api).read_cluster_role_binding("revisor")
    assert [(s.namespace, s.name) for s in present(binding.subjects)] == [
        ("revisor-system", "revisor")
    ]
    crd = get(kube.api, "apiextensions.k8s.io/v1", "CustomResourceDefinition", CRD_NAME)
    assert condition(crd, "Established") == "True"

    ns = create_namespace(kube, "chart", "kustomize")
    try:
        _wait_for_rbac(kube, "revisor-system", "revisor", ns, tmp_path / "check.kubeconfig",
                       namespaces=False)  # fmt: skip
        alone_in_the_cluster(kube, ns)
        migrate_as(kube, ("revisor-system", "revisor"), ns, tmp_path, caplog,
                   all_namespaces=True)  # fmt: skip
    finally:
        delete_namespace(kube, ns)


# -- upgrade and uninstall ------------------------------------------------------------------


def without_property(template: str, name: str) -> str:
    """The migration spec's template without property ``name`` (its line and all under it).

    ``_migration-spec.tpl`` holds the spec properties both CRDs include, at column 0.
    """
    lines = template.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line == f"{name}:\n")
    end = next(
        i for i in range(start + 1, len(lines))
        if not lines[i].startswith(" ") and lines[i].strip()
    )  # fmt: skip
    return "".join(lines[:start] + lines[end:])


def test_upgrade_to_a_chart_with_a_new_crd_field_serves_it(
    release: Release, kube: Kube, tmp_path: Path
) -> None:
    """From a release whose CRD lacks spec.rollback, `helm upgrade` makes the API keep it.

    The API server prunes fields its schema does not know: under the older CRD a
    spec.rollback is dropped on write; after the upgrade it is stored, with its default.
    """
    older = tmp_path / "revisor-older"
    shutil.copytree(CHART, older)
    template = older / "templates" / "crds" / "_migration-spec.tpl"
    template.write_text(without_property(template.read_text(), "rollback"))
    values = ("--set", f"watchNamespaces={{{release.watched}}}")
    ns = release.watched

    def spec_properties() -> dict[str, Any]:
        crd = get(kube.api, "apiextensions.k8s.io/v1", "CustomResourceDefinition", CRD_NAME)
        assert crd is not None
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        properties: dict[str, Any] = schema["properties"]["spec"]["properties"]
        return properties

    rollback = {"deploymentRef": {"name": "web"}}
    helm_install(release, *values, command="upgrade", chart=older)
    assert "rollback" not in spec_properties()
    assert "target" in spec_properties()
    # The schema in use lags the CRD object a little: until it prunes, write again.
    pruned = wait_for(
        lambda: create_or_patch(kube, ns, "crd-upgrade", rollback),
        lambda obj: "rollback" not in obj["spec"],
        timeout=30,
        what="the older CRD to prune spec.rollback",
    )
    assert pruned["spec"]["target"] == "head"

    helm_install(release, *values, command="upgrade")
    assert "rollback" in spec_properties()
    kept = wait_for(
        lambda: create_or_patch(kube, ns, "crd-upgrade", rollback),
        lambda obj: "rollback" in obj["spec"],
        timeout=30,
        what="the upgraded CRD to keep spec.rollback",
    )
    assert kept["spec"]["rollback"] == {
        "deploymentRef": {"name": "web"},
        "window": "10m",
        "allowBase": False,
    }
    client.CustomObjectsApi(kube.api).delete_namespaced_custom_object(
        "revisor.dev", "v1alpha1", ns, "databasemigrations", "crd-upgrade"
    )


def create_or_patch(kube: Kube, ns: str, name: str, rollback: dict[str, Any]) -> dict[str, Any]:
    """Write spec.rollback into DatabaseMigration ``name`` (no operator serves it here)."""
    if get(kube.api, "revisor.dev/v1alpha1", "DatabaseMigration", name, ns) is None:
        create(kube, ns, migration(name, rollback=rollback))
    else:
        patch_spec(kube, ns, name, {"rollback": rollback})
    return read(kube, ns, name)


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
