"""docs/examples/validating-admission-policy.yaml on a real API server (1.34: GA).

Applied as the docs say (``kubectl apply -f``, the policy and its binding), it
refuses a DatabaseMigration whose images come from another registry, or that
names a ServiceAccount, nodeSelector or tolerations, at ``kubectl apply`` time,
with the policy's message; a good one is accepted. A resource stored before the
policy keeps its metadata writable (the operator's finalizer, its deletion) but
its spec can no longer be changed to anything the policy refuses.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.chart.render import REPO
from tests.cluster.conftest import Kube
from tests.support.kube import get, wait_for
from tests.support.kube import kubectl as find_kubectl
from tests.support.operator_kit import install_crd, migration, read

pytestmark = pytest.mark.cluster

EXAMPLE = REPO / "docs" / "examples" / "validating-admission-policy.yaml"
POLICY = "revisor-databasemigrations"


def kubectl(kube: Kube, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_kubectl(), "--kubeconfig", str(kube.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def apply(kube: Kube, namespace: str, body: dict[str, Any], *dry_run: str) -> Any:
    """``kubectl apply -n NAMESPACE -f -`` of ``body`` (JSON is YAML)."""
    return kubectl(kube, "apply", "-n", namespace, *dry_run, "-f", "-", stdin=json.dumps(body))


#: Specs the policy refuses, and the words of its message that say why.
REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "runner-image": (
        {"runner": {"image": "docker.io/someone/revisor:1"}},
        "spec.runner.image docker.io/someone/revisor:1 is not from an allowed registry "
        "(ghcr.io/revisor-dev/, registry.example/)",
    ),
    "source-image": (
        {"source": {"image": {"image": "registry.example.evil/shop:1.4.2"}}},
        "spec.source.image.image registry.example.evil/shop:1.4.2 is not from an allowed registry",
    ),
    "service-account": (
        {"runner": {"serviceAccountName": "shop-admin"}},
        "spec.runner.serviceAccountName is not allowed here",
    ),
    "tolerations": (
        {"runner": {"tolerations": [{"operator": "Exists"}]}},
        "spec.runner.nodeSelector and spec.runner.tolerations are not allowed here",
    ),
    "node-selector": (
        {"runner": {"nodeSelector": {"node-role.kubernetes.io/control-plane": ""}}},
        "spec.runner.nodeSelector and spec.runner.tolerations are not allowed here",
    ),
}
ACCEPTED: dict[str, dict[str, Any]] = {
    "plain": {},
    "allowed-images": {
        "runner": {"image": "registry.example/revisor-drivers:0.1.0"},
        "source": {"image": {"image": "registry.example/shop:1.4.2", "path": "/app/migrations"}},
    },
    "revisor-image": {"runner": {"image": "ghcr.io/revisor-dev/revisor:0.1.0"}},
}


@pytest.fixture
def policy(kube: Kube, namespace: str) -> Iterator[str]:
    """The example applied as documented, in force (a dry run is refused); removed after."""
    install_crd(kube)
    # Stored before the policy: a resource that asks for a ServiceAccount. (A policy just
    # deleted, by the previous test, may be enforced a moment longer: until it is not.)
    early = migration("early", runner={"serviceAccountName": "shop-admin"})
    probe = migration("probe", **REFUSED["service-account"][0])
    wait_for(
        lambda: apply(kube, namespace, early),
        lambda result: result.returncode == 0,
        timeout=30,
        what="a DatabaseMigration with a ServiceAccount to be accepted (no policy yet)",
    )
    try:
        done = kubectl(kube, "apply", "-f", str(EXAMPLE))
        assert done.returncode == 0, done.stderr
        assert f"validatingadmissionpolicy.admissionregistration.k8s.io/{POLICY}" in done.stdout
        assert f"validatingadmissionpolicybinding.admissionregistration.k8s.io/{POLICY}" in (
            done.stdout
        )
        # The API server loads a new policy asynchronously: until a dry run is refused.
        wait_for(
            lambda: apply(kube, namespace, probe, "--dry-run=server"),
            lambda result: result.returncode != 0,
            timeout=30,
            what="the ValidatingAdmissionPolicy to be in force",
        )
        yield namespace
    finally:
        kubectl(kube, "delete", "--ignore-not-found", "-f", str(EXAMPLE))
        # Out of force again before the next test, whichever it is.
        wait_for(
            lambda: apply(kube, namespace, probe, "--dry-run=server"),
            lambda result: result.returncode == 0,
            timeout=30,
            what="the deleted ValidatingAdmissionPolicy to be out of force",
        )


def test_the_policy_type_checks_against_the_crd(kube: Kube, policy: str) -> None:
    """The API server compiled every expression against the CRD's schema, with no warning."""
    found = wait_for(
        lambda: get(
            kube.api,
            "admissionregistration.k8s.io/v1",
            "ValidatingAdmissionPolicy",
            POLICY,
        ),
        lambda obj: (
            obj is not None
            and obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
        ),
        timeout=30,
        what="the policy's type checking",
    )
    assert found is not None
    assert not found["status"].get("typeChecking", {}).get("expressionWarnings"), found["status"]


@pytest.mark.parametrize("case", REFUSED)
def test_a_violating_migration_is_refused_at_apply_time(kube: Kube, policy: str, case: str) -> None:
    spec, message = REFUSED[case]
    body = migration(f"bad-{case}", **spec)
    done = apply(kube, policy, body)
    assert done.returncode != 0, done.stdout
    assert "denied request" in done.stderr, done.stderr
    assert f"ValidatingAdmissionPolicy '{POLICY}'" in done.stderr, done.stderr
    assert message in done.stderr, done.stderr
    assert get(kube.api, "revisor.dev/v1alpha1", "DatabaseMigration", f"bad-{case}", policy) is None


@pytest.mark.parametrize("case", ACCEPTED)
def test_a_good_migration_is_accepted(kube: Kube, policy: str, case: str) -> None:
    done = apply(kube, policy, migration(f"good-{case}", **ACCEPTED[case]))
    assert done.returncode == 0, done.stderr
    assert f"databasemigration.revisor.dev/good-{case} created" in done.stdout


def test_a_resource_stored_before_keeps_its_metadata_but_not_a_bad_spec(
    kube: Kube, policy: str
) -> None:
    """The operator's writes (finalizer, annotations) pass; a spec change is checked."""
    annotated = kubectl(kube, "annotate", "-n", policy, "dbm/early", "revisor.dev/seen=1")
    assert annotated.returncode == 0, annotated.stderr
    finalizer = kubectl(
        kube, "patch", "-n", policy, "dbm/early", "--type=merge",
        "-p", '{"metadata": {"finalizers": ["revisor.dev/finalizer"]}}',
    )  # fmt: skip
    assert finalizer.returncode == 0, finalizer.stderr
    retarget = kubectl(
        kube, "patch", "-n", policy, "dbm/early", "--type=merge", "-p", '{"spec": {"target": "-1"}}'
    )
    assert retarget.returncode != 0
    assert "spec.runner.serviceAccountName is not allowed here" in retarget.stderr
    assert read(kube, policy, "early")["spec"]["target"] == "head"
    # Fixing the spec is a change the policy accepts.
    fixed = kubectl(
        kube, "patch", "-n", policy, "dbm/early", "--type=json",
        "-p", '[{"op": "remove", "path": "/spec/runner/serviceAccountName"}]',
    )  # fmt: skip
    assert fixed.returncode == 0, fixed.stderr
    # The finalizer would hold the namespace's deletion without an operator: let go.
    released = kubectl(
        kube, "patch", "-n", policy, "dbm/early", "--type=merge",
        "-p", '{"metadata": {"finalizers": null}}',
    )  # fmt: skip
    assert released.returncode == 0, released.stderr
