"""The chart without a cluster: lint, Kubernetes schemas, values schema, what it grants.

What a user installs is decided here: which objects, which permissions,
which pod security. The cluster tests (tests/cluster/test_chart.py) then
prove that those permissions are enough for a real migration.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart.render import (
    CHART,
    REPO,
    all_of_kind,
    of_kind,
    only,
    rule_set,
    run_helm,
    template,
)

#: What the operator does in every namespace it serves (revisor_operator/adapters/kube.py + kopf).
NAMESPACED_RULES = {
    ("revisor.dev", "databasemigrations", "get"),
    ("revisor.dev", "databasemigrations", "list"),
    ("revisor.dev", "databasemigrations", "watch"),
    ("revisor.dev", "databasemigrations", "patch"),
    ("revisor.dev", "databasemigrations", "create"),  # a set's children
    ("revisor.dev", "databasemigrations", "delete"),  # a child whose target left its set
    ("revisor.dev", "databasemigrations/status", "patch"),
    ("revisor.dev", "databasemigrations/finalizers", "update"),
    ("revisor.dev", "databasemigrationsets", "get"),
    ("revisor.dev", "databasemigrationsets", "list"),
    ("revisor.dev", "databasemigrationsets", "watch"),
    ("revisor.dev", "databasemigrationsets", "patch"),
    ("revisor.dev", "databasemigrationsets/status", "patch"),
    ("revisor.dev", "databasemigrationsets/finalizers", "update"),
    ("batch", "jobs", "list"),
    ("batch", "jobs", "watch"),
    ("batch", "jobs", "create"),
    ("batch", "jobs", "delete"),  # a set's finished Jobs beyond its history limits
    ("apps", "deployments", "get"),
    ("", "pods", "list"),
    ("", "pods/log", "get"),
    ("", "secrets", "get"),
    ("", "secrets", "list"),  # a set's secretSelector, as metadata only
    ("", "configmaps", "get"),
    ("", "configmaps", "list"),
    ("", "configmaps", "watch"),
    ("", "events", "create"),
}
CRD_READS = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
}
NAMESPACE_READS = {("", "namespaces", "list"), ("", "namespaces", "watch")}

MODES: dict[str, dict[str, Any]] = {
    "default": {},
    "cluster-wide": {"clusterWide": True},
    "namespaced": {"watchNamespaces": ["shop", "billing"]},
    "everything-on": {
        "watchNamespaces": ["shop"],
        "metrics": {"serviceMonitor": {"enabled": True}, "bindAddress": "::"},
        "image": {"digest": "sha256:" + "a" * 64},
        "runner": {"image": "registry.example/revisor:custom"},
        "operator": {"verbose": True, "extraEnv": [{"name": "X", "value": "y"}]},
        "policy": {
            "runnerImages": ["registry.example/revisor-*"],
            "sourceImages": ["registry.example/shop:*", "registry.example/billing:1.?"],
            "serviceAccounts": ["revisor-runner", "shop-migrator"],
            "nodeSelectorKeys": ["topology.kubernetes.io/zone"],
            "tolerationKeys": ["dedicated"],
        },
        "networkPolicy": {
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
            "livenessFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
            "egress": {"restrict": True, "apiServerCIDRs": ["10.96.0.1/32", "192.168.1.10/32"]},
        },
    },
}


def kube_schema_version() -> str:
    """The newest schema version kubernetes-validate ships not newer than the local cluster's."""
    wanted = tuple(
        int(p)
        for p in (REPO / "tools/localkube/kube-version.txt").read_text().strip()[1:].split(".")
    )
    shipped = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    versions = sorted(
        tuple(int(p) for p in m.group(1).split("."))
        for d in shipped.iterdir()
        if (m := re.fullmatch(r"v(\d+\.\d+\.\d+)-local", d.name))
    )
    best = max(v for v in versions if v[:2] <= wanted[:2])
    return ".".join(map(str, best))


@pytest.mark.parametrize("values", MODES.values(), ids=MODES.keys())
def test_helm_lint_is_clean(values: dict[str, Any]) -> None:
    """`helm lint --strict` finds nothing to warn about, in every mode."""
    done = run_helm("lint", "--strict", str(CHART), values=values)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[WARNING]" not in done.stdout
    assert "[ERROR]" not in done.stdout


@pytest.mark.parametrize("values", MODES.values(), ids=MODES.keys())
def test_every_object_is_valid_kubernetes(values: dict[str, Any]) -> None:
    """Each rendered object validates (strictly: no unknown fields) against the cluster's schemas."""
    version = kube_schema_version()
    assert version.startswith("1.34"), version  # tools/localkube/kube-version.txt says 1.34
    objects = template(values)
    checked = 0
    for obj in objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # the Prometheus Operator's kind: not in Kubernetes' schemas
        kubernetes_validate.validate(obj, version, strict=True)
        checked += 1
    assert checked >= 7
    # The check can fail: strict validation refuses a misspelt field in that same Deployment.
    deployment = only(objects, "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, version, strict=True)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"operator": {"replicas": 2}}, "at '/operator/replicas': value must be one of 0, 1"),
        ({"watchNamespaces": ["Shop_DB"]}, "at '/watchNamespaces/0': 'Shop_DB' does not match"),
        ({"watchNamespaces": "shop"}, "at '/watchNamespaces': got string, want array"),
        ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy': value must be one of"),
        ({"operator": {"logFormat": "xml"}}, "at '/operator/logFormat': value must be one of"),
        ({"operatr": {"replicas": 1}}, "additional properties 'operatr' not allowed"),
        ({"metrics": {"port": 70000}}, "at '/metrics/port': maximum"),
        ({"serviceAccount": {"create": False}}, "at '/serviceAccount/name': minLength"),
        (
            {"clusterWide": True, "watchNamespaces": ["shop"]},
            "at '/clusterWide': value must be 'clusterWide: true serves every namespace and "
            "watchNamespaces names some: set one or the other, not both'",
        ),
        ({"clusterWide": "yes"}, "at '/clusterWide': got string, want boolean"),
        ({"policy": {"runnerImages": "x"}}, "at '/policy/runnerImages': got string, want array"),
        ({"policy": {"sourceImages": ["a,b"]}}, "at '/policy/sourceImages/0': 'a,b' does not"),
        ({"policy": {"serviceAccounts": [""]}}, "at '/policy/serviceAccounts/0': minLength"),
        ({"policy": {"tolerationKeys": ["a", "a"]}}, "at '/policy/tolerationKeys': items at"),
        ({"policy": {"nodeSelectorKey": []}}, "additional properties 'nodeSelectorKey'"),
        ({"metrics": {"bindAddress": "0.0.0.0:9090/x"}}, "at '/metrics/bindAddress'"),
        ({"metrics": {"bindAddress": ""}}, "at '/metrics/bindAddress': minLength"),
        (
            {"networkPolicy": {"egress": {"restrict": True}}},
            "at '/networkPolicy/egress/apiServerCIDRs': minItems: got 0, want 1",
        ),
        (
            {"networkPolicy": {"metricsFrom": [{"namespaceSelectr": {}}]}},
            "additional properties 'namespaceSelectr' not allowed",
        ),
        ({"networkPolicy": {"metricsFrom": [{}]}}, "at '/networkPolicy/metricsFrom/0': minProp"),
    ],
)
def test_bad_values_are_refused_with_the_offending_path(
    values: dict[str, Any], message: str
) -> None:
    """values.schema.json stops a typo or a wrong type before anything reaches the cluster."""
    for command in (["template", "x", str(CHART)], ["lint", "--strict", str(CHART)]):
        done = run_helm(*command, values=values)
        assert done.returncode != 0, done.stdout
        assert message in done.stdout + done.stderr


def args_of(objects: list[dict[str, Any]]) -> list[str]:
    container = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return list(container["args"])


def env_of(objects: list[dict[str, Any]]) -> dict[str, str]:
    container = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_by_default_the_operator_serves_its_own_namespace_only() -> None:
    """No value set: a Role in the release's namespace, --namespace=<it>, no ClusterRole grants."""
    objects = template()
    role = only(objects, "Role")
    assert role["metadata"]["namespace"] == "revisor-system"
    assert rule_set(role["rules"]) == NAMESPACED_RULES
    binding = only(objects, "RoleBinding")
    assert binding["metadata"]["namespace"] == "revisor-system"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "revisor", "namespace": "revisor-system"}
    ]
    # The only cluster-scoped grant: names of namespaces and CRDs.
    assert rule_set(only(objects, "ClusterRole")["rules"]) == CRD_READS | NAMESPACE_READS
    assert [a for a in args_of(objects) if "namespace" in a] == ["--namespace=revisor-system"]
    # Another release namespace: that one.
    elsewhere = template(namespace="shop")
    assert only(elsewhere, "Role")["metadata"]["namespace"] == "shop"
    assert [a for a in args_of(elsewhere) if "namespace" in a] == ["--namespace=shop"]


def test_cluster_wide_mode_is_explicit_and_grants_exactly_the_operators_calls() -> None:
    """clusterWide: one ClusterRole with the operator's calls and kopf's CRD watch, nothing else."""
    objects = template({"clusterWide": True})
    assert all_of_kind(objects, "Role") == []
    role = only(objects, "ClusterRole")
    assert rule_set(role["rules"]) == NAMESPACED_RULES | CRD_READS
    binding = only(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "revisor", "namespace": "revisor-system"}
    ]
    args = args_of(objects)
    assert "--all-namespaces" in args
    assert not any(a.startswith("--namespace") for a in args)


def test_cluster_wide_and_watch_namespaces_together_are_refused() -> None:
    """Both at once would be ambiguous: the schema refuses, naming both values."""
    done = run_helm(
        "template", "x", str(CHART), values={"clusterWide": True, "watchNamespaces": ["shop"]}
    )
    assert done.returncode != 0
    assert "set one or the other, not both" in done.stderr
    # Even past the schema (--skip-schema-validation), the templates refuse.
    done = run_helm(
        "template",
        "x",
        str(CHART),
        "--skip-schema-validation",
        values={"clusterWide": True, "watchNamespaces": ["shop"]},
    )
    assert done.returncode != 0
    assert "set one or the other, not both" in done.stderr


def test_namespaced_mode_grants_roles_only_in_the_watched_namespaces() -> None:
    """watchNamespaces: a Role per namespace; cluster-wide only list/watch of namespaces and CRDs."""
    objects = template({"watchNamespaces": ["shop", "billing"]})
    roles = of_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["billing", "shop"]
    for role in roles:
        assert rule_set(role["rules"]) == NAMESPACED_RULES
    bindings = of_kind(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["billing", "shop"]
    for binding in bindings:
        assert binding["subjects"][0]["namespace"] == "revisor-system"
    cluster_role = only(objects, "ClusterRole")
    assert rule_set(cluster_role["rules"]) == CRD_READS | NAMESPACE_READS
    args = args_of(objects)
    assert [a for a in args if a.startswith("--namespace")] == [
        "--namespace=shop",
        "--namespace=billing",
    ]
    assert "--all-namespaces" not in args


def test_allowlists_reach_the_operator_comma_joined() -> None:
    """policy.* become REVISOR_ALLOWED_*; by default only the chart's runner account is allowed."""
    env = env_of(template())
    assert env["REVISOR_ALLOWED_RUNNER_IMAGES"] == ""
    assert env["REVISOR_ALLOWED_SOURCE_IMAGES"] == ""
    assert env["REVISOR_ALLOWED_SERVICE_ACCOUNTS"] == "revisor-runner"
    assert env["REVISOR_ALLOWED_NODE_SELECTOR_KEYS"] == ""
    assert env["REVISOR_ALLOWED_TOLERATION_KEYS"] == ""
    env = env_of(template(MODES["everything-on"]))
    assert env["REVISOR_ALLOWED_RUNNER_IMAGES"] == "registry.example/revisor-*"
    assert env["REVISOR_ALLOWED_SOURCE_IMAGES"] == (
        "registry.example/shop:*,registry.example/billing:1.?"
    )
    assert env["REVISOR_ALLOWED_SERVICE_ACCOUNTS"] == "revisor-runner,shop-migrator"
    assert env["REVISOR_ALLOWED_NODE_SELECTOR_KEYS"] == "topology.kubernetes.io/zone"
    assert env["REVISOR_ALLOWED_TOLERATION_KEYS"] == "dedicated"
    # The runner ServiceAccount the chart creates is always allowed, whatever its name ...
    env = env_of(template({"policy": {"serviceAccounts": []}}, release="team-a"))
    assert env["REVISOR_ALLOWED_SERVICE_ACCOUNTS"] == "team-a-revisor-runner"
    # ... and only that one when the chart creates none and the list is empty.
    env = env_of(
        template(
            {"policy": {"serviceAccounts": []}, "runner": {"serviceAccount": {"create": False}}}
        )
    )
    assert env["REVISOR_ALLOWED_SERVICE_ACCOUNTS"] == ""


def test_allowlists_in_the_operator_are_what_the_chart_says() -> None:
    """The operator's own parser reads the chart's env into the Policy it enforces."""
    from revisor_operator.settings import Settings

    env = env_of(template(MODES["everything-on"]))
    policy = Settings.from_env({k: v for k, v in env.items() if v is not None}).policy
    assert policy.runner_images == ("registry.example/revisor-*",)
    assert policy.source_images == ("registry.example/shop:*", "registry.example/billing:1.?")
    assert policy.service_accounts == ("revisor-runner", "shop-migrator")
    assert policy.node_selector_keys == ("topology.kubernetes.io/zone",)
    assert policy.toleration_keys == ("dedicated",)
    default = Settings.from_env({k: v for k, v in env_of(template()).items() if v is not None})
    assert default.policy.runner_images == ()
    assert default.policy.service_accounts == ("revisor-runner",)
    assert default.runner_image == "ghcr.io/revisor-dev/revisor:0.1.0"  # always allowed
    assert default.metrics_address == "0.0.0.0"


#: The only deletes: a DatabaseMigrationSet's children whose target left it, and its
#: children's finished Jobs beyond its history limits.
DELETES = {("revisor.dev", "databasemigrations", "delete"), ("batch", "jobs", "delete")}


def test_no_rule_uses_wildcards_or_writes_what_the_operator_only_reads() -> None:
    """No '*', no write verb on Secrets, ConfigMaps, pods or RBAC, no other delete."""
    for values in MODES.values():
        rules = [rule for obj in template(values) for rule in obj.get("rules") or []]
        assert rules, f"no RBAC rule rendered for {values}"
        for rule in rules:
            assert "*" not in str(rule), rule
            triples = rule_set([rule])
            assert {t for t in triples if t[2] in ("delete", "deletecollection")} <= DELETES
            assert not {t for t in triples if t[0] == "rbac.authorization.k8s.io"}
            writes = {"create", "update", "patch"}
            for group, resource, verb in triples:
                if resource in ("secrets", "configmaps", "pods", "namespaces"):
                    assert verb not in writes, (group, resource, verb)


def test_operator_pod_is_unprivileged_single_and_probed() -> None:
    """One replica, Recreate, non-root, read-only root, no capabilities, probed on --liveness."""
    deployment = only(template(), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "revisor"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["command"] == ["revisor-operator"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    probe = container["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert probe["path"] == "/healthz"
    assert ports[probe["port"]] == 8080
    assert "--metrics-port=9090" in container["args"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_runner_image_defaults_to_the_operator_image() -> None:
    """REVISOR_RUNNER_IMAGE is the operator's image unless runner.image says otherwise."""

    def runner_image(values: dict[str, Any]) -> str:
        container = only(template(values), "Deployment")["spec"]["template"]["spec"]["containers"][
            0
        ]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["REVISOR_RUNNER_IMAGE"]
        return str(env["REVISOR_RUNNER_IMAGE"])

    assert runner_image({}) == "ghcr.io/revisor-dev/revisor:0.1.0"
    assert runner_image({"image": {"tag": "0.2.0"}}) == "ghcr.io/revisor-dev/revisor:0.2.0"
    digest = "sha256:" + "b" * 64
    assert runner_image({"image": {"digest": digest}}) == f"ghcr.io/revisor-dev/revisor@{digest}"
    assert runner_image({"runner": {"image": "mine:1"}}) == "mine:1"


def test_runner_service_account_has_no_token_and_no_binding() -> None:
    """The engine's ServiceAccount exists where Jobs run, mounts no token, is bound to nothing."""
    default = template()
    assert [
        sa["metadata"]["namespace"]
        for sa in of_kind(default, "ServiceAccount")
        if sa["metadata"]["name"] == "revisor-runner"
    ] == ["revisor-system"]
    objects = template({"watchNamespaces": ["shop"]})
    runners = [
        sa
        for sa in of_kind(objects, "ServiceAccount")
        if sa["metadata"]["name"] == "revisor-runner"
    ]
    assert sorted(sa["metadata"]["namespace"] for sa in runners) == ["revisor-system", "shop"]
    assert all(sa["automountServiceAccountToken"] is False for sa in runners)
    subjects = [
        s["name"]
        for b in of_kind(objects, "RoleBinding") + of_kind(objects, "ClusterRoleBinding")
        for s in b["subjects"]
    ]
    assert "revisor-runner" not in subjects


def test_crd_is_kept_on_uninstall_unless_asked() -> None:
    """The CRDs carry helm.sh/resource-policy: keep by default; crds.keep/enabled change that."""
    crds = all_of_kind(template(), "CustomResourceDefinition")
    assert sorted(c["metadata"]["name"] for c in crds) == [
        "databasemigrations.revisor.dev",
        "databasemigrationsets.revisor.dev",
    ]
    for crd in crds:
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    for unkept in all_of_kind(template({"crds": {"keep": False}}), "CustomResourceDefinition"):
        assert "helm.sh/resource-policy" not in (unkept["metadata"].get("annotations") or {})
    assert all_of_kind(template({"crds": {"enabled": False}}), "CustomResourceDefinition") == []


def test_metrics_service_reaches_the_operator_and_monitor_is_optional() -> None:
    """The Service targets the container's metrics port; a ServiceMonitor only when enabled."""
    objects = template()
    service = only(objects, "Service")
    deployment = only(objects, "Deployment")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert all_of_kind(objects, "ServiceMonitor") == []
    monitored = template({"metrics": {"serviceMonitor": {"enabled": True}}})
    monitor = only(monitored, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    off = template({"metrics": {"enabled": False}})
    assert all_of_kind(off, "Service") == []
    args = only(off, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--metrics-port=0" in args


def test_metrics_bind_address_is_configurable() -> None:
    """metrics.bindAddress is REVISOR_METRICS_ADDRESS: every interface by default."""
    assert env_of(template())["REVISOR_METRICS_ADDRESS"] == "0.0.0.0"
    local = env_of(template({"metrics": {"bindAddress": "127.0.0.1"}}))
    assert local["REVISOR_METRICS_ADDRESS"] == "127.0.0.1"


def test_network_policy_closes_the_pod_to_all_but_the_kubelet_by_default() -> None:
    """On by default: the operator's pod, ingress from no peer at all, egress unrestricted."""
    objects = template()
    policy = only(objects, "NetworkPolicy")
    spec = policy["spec"]
    pod_labels = only(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["ingress"] == []
    assert "egress" not in spec
    assert all_of_kind(template({"networkPolicy": {"enabled": False}}), "NetworkPolicy") == []


def test_network_policy_admits_the_named_peers_to_their_port_only() -> None:
    """metricsFrom reaches the metrics port, livenessFrom the liveness port; egress restricted."""
    values = MODES["everything-on"]
    spec = only(template(values), "NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    metrics_rule, liveness_rule = spec["ingress"]
    assert metrics_rule == {
        "from": values["networkPolicy"]["metricsFrom"],
        "ports": [{"port": 9090, "protocol": "TCP"}],
    }
    assert liveness_rule == {
        "from": values["networkPolicy"]["livenessFrom"],
        "ports": [{"port": 8080, "protocol": "TCP"}],
    }
    (egress,) = spec["egress"]
    assert egress["to"] == [
        {"ipBlock": {"cidr": "10.96.0.1/32"}},
        {"ipBlock": {"cidr": "192.168.1.10/32"}},
    ]
    assert egress["ports"] == [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]
    # The ports follow the values; metrics off: no rule for a port nobody serves.
    moved = only(
        template(
            {
                "networkPolicy": {"metricsFrom": [{"podSelector": {}}]},
                "metrics": {"port": 9100},
            }
        ),
        "NetworkPolicy",
    )["spec"]
    assert moved["ingress"][0]["ports"] == [{"port": 9100, "protocol": "TCP"}]
    off = only(
        template(
            {
                "networkPolicy": {"metricsFrom": [{"podSelector": {}}]},
                "metrics": {"enabled": False},
            }
        ),
        "NetworkPolicy",
    )["spec"]
    assert off["ingress"] == []


def test_static_manifests_are_rendered_from_the_chart() -> None:
    """manifests/ is exactly what scripts/render-manifests.sh makes of the chart today."""
    done = subprocess.run(
        [str(REPO / "scripts" / "render-manifests.sh"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_a_release_pins_every_default_image_by_digest(tmp_path: Path) -> None:
    """scripts/pin-image-digest.sh: operator, runner and hook images become repo@digest."""
    root = tmp_path / "repo"
    for part in ("scripts", "charts"):
        shutil.copytree(REPO / part, root / part)
    digest = "sha256:" + "d" * 64
    done = subprocess.run(
        [str(root / "scripts" / "pin-image-digest.sh"), digest],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    pinned = f"ghcr.io/revisor-dev/revisor@{digest}"
    rendered = (root / "manifests" / "revisor.yaml").read_text()
    assert rendered.count(f'"{pinned}"') == 2  # the operator's image and REVISOR_RUNNER_IMAGE
    assert "revisor:0.1.0" not in rendered
    hook = yaml.safe_load((root / "charts" / "revisor-migration" / "values.yaml").read_text())
    assert hook["hook"]["digest"] == digest
    refused = subprocess.run(
        [str(root / "scripts" / "pin-image-digest.sh"), "latest"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2
    assert "usage:" in refused.stderr
