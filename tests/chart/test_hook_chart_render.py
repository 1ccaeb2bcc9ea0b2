"""The revisor-migration hook chart without a cluster, as an application chart uses it.

examples/app-chart is rendered with its dependency built from
charts/revisor-migration, as tests/cluster/test_helm_hooks.py installs it:
which hooks run when and in which order, what their Role grants, how their
pods run, and which values the chart refuses before anything reaches a cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart.render import REPO, helm, of_kind, only, rule_set, run_helm
from tests.chart.test_chart_render import kube_schema_version

APP_CHART = REPO / "examples" / "app-chart"
HOOK_CHART = REPO / "charts" / "revisor-migration"
RELEASE = "shop"
NAMESPACE = "shop"
KEY = "revisor-migration"  # the app chart's values key for its dependency
MISSING_SOURCE = "revisor-migration: set source.configMap.name or source.image"
MISSING_DATABASE = "revisor-migration: set database.urlSecretRef.name, the Secret holding"

#: What `revisor-operator wait` calls (operator/revisor_operator/wait_cli.py, kube.py):
#: GET the resource once a second; server-side apply (a PATCH, a create when new) of the
#: desired spec; merge PATCHes of the target and of the release record; GET of the scripts
#: ConfigMap to tell which run is current.
WAIT_RULES = {
    ("revisor.dev", "databasemigrations", "get"),
    ("revisor.dev", "databasemigrations", "create"),
    ("revisor.dev", "databasemigrations", "patch"),
    ("", "configmaps", "get"),
}
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class AppChart:
    """A copy of examples/app-chart whose revisor-migration dependency is built."""

    def __init__(self, root: Path) -> None:
        self.path = root / "shop"
        shutil.copytree(APP_CHART, self.path, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
        manifest = self.path / "Chart.yaml"
        manifest.write_text(
            manifest.read_text().replace(
                "file://../../charts/revisor-migration", f"file://{HOOK_CHART}"
            )
        )
        # Helm's own homes in the temporary directory: nothing of the user's is touched.
        self.env = dict(os.environ)
        for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
            self.env[var] = str(root / var.lower())
        built = self.helm("dependency", "build", str(self.path))
        assert built.returncode == 0, built.stderr
        assert (self.path / "charts" / "revisor-migration-0.1.0.tgz").is_file()

    def helm(
        self, *args: str, values: Mapping[str, Any] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``helm ARGS`` with ``values`` (JSON) on stdin; never raises."""
        extra = ["--values", "-"] if values is not None else []
        return subprocess.run(
            [helm(), *args, *extra],
            input=json.dumps(values) if values is not None else None,
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
        )

    def template(self, hook_values: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The release's objects, with ``hook_values`` under the dependency's key."""
        done = self.refusal_or_render(hook_values)
        assert done.returncode == 0, done.stderr
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]

    def refusal_or_render(
        self, hook_values: Mapping[str, Any] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``helm template`` of the release, whether Helm renders or refuses."""
        values = {KEY: dict(hook_values)} if hook_values is not None else None
        return self.helm(
            "template", RELEASE, str(self.path), "--namespace", NAMESPACE, values=values
        )


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> AppChart:
    return AppChart(tmp_path_factory.mktemp("app-chart"))


def hooks(obj: Mapping[str, Any]) -> set[str]:
    return set(obj["metadata"]["annotations"]["helm.sh/hook"].split(","))


def weight(obj: Mapping[str, Any]) -> int:
    return int(obj["metadata"]["annotations"]["helm.sh/hook-weight"])


def delete_policy(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["annotations"]["helm.sh/hook-delete-policy"])


def container(job: Mapping[str, Any]) -> dict[str, Any]:
    (only_container,) = job["spec"]["template"]["spec"]["containers"]
    return dict(only_container)


def desired_migration(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The DatabaseMigration the migrate hook applies, from its ConfigMap."""
    config_map = only(objects, "ConfigMap", "shop-revisor-desired")
    body: dict[str, Any] = json.loads(config_map["data"]["databasemigration.json"])
    return body


def test_example_app_chart_and_hook_chart_lint_strictly(app: AppChart) -> None:
    """`helm lint --strict` passes the example as shipped, and the hook chart on its own."""
    for chart in (app.path, HOOK_CHART):
        done = app.helm("lint", "--strict", str(chart))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "[WARNING]" not in done.stdout
        assert "[ERROR]" not in done.stdout


def test_every_rendered_object_is_valid_kubernetes(app: AppChart) -> None:
    """Every object of the release validates strictly (no unknown field) with 1.34's schemas."""
    version = kube_schema_version()
    assert version.startswith("1.34"), version
    objects = app.template()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "Job",
        "Job",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
    # The check can fail: a misspelt field in a hook Job is refused.
    job = only(objects, "Job", "shop-revisor-migrate")
    job["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, version, strict=True)


def test_migrate_job_runs_before_install_and_upgrade_and_rollback_job_before_rollback(
    app: AppChart,
) -> None:
    """The migrate Job is a pre-install/pre-upgrade hook, the rollback Job a pre-rollback one."""
    objects = app.template()
    assert hooks(only(objects, "Job", "shop-revisor-migrate")) == {"pre-install", "pre-upgrade"}
    assert hooks(only(objects, "Job", "shop-revisor-rollback")) == {"pre-rollback"}
    # The identity serves all three; the files and the desired state only install/upgrade:
    # on rollback the scripts ConfigMap must keep the newer files, whose downgrade() runs.
    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        assert hooks(only(objects, kind)) == {"pre-install", "pre-upgrade", "pre-rollback"}
    for config_map in of_kind(objects, "ConfigMap"):
        assert hooks(config_map) == {"pre-install", "pre-upgrade"}
    # The application itself is a release resource, not a hook.
    assert "helm.sh/hook" not in (only(objects, "Deployment")["metadata"].get("annotations") or {})


def test_hook_weights_order_rbac_then_configmaps_then_jobs(app: AppChart) -> None:
    """RBAC exists before the ConfigMaps, which exist before the Jobs that read them."""
    objects = app.template()
    rbac = [only(objects, kind) for kind in ("ServiceAccount", "Role", "RoleBinding")]
    config_maps = of_kind(objects, "ConfigMap")
    jobs = of_kind(objects, "Job")
    assert sorted(c["metadata"]["name"] for c in config_maps) == [
        "shop-migrations",
        "shop-revisor-desired",
    ]
    assert len(jobs) == 2
    assert max(map(weight, rbac)) < min(map(weight, config_maps))
    assert max(map(weight, config_maps)) < min(map(weight, jobs))


def test_jobs_and_rbac_are_replaced_and_deleted_once_their_hook_succeeds(app: AppChart) -> None:
    """Jobs and RBAC: before-hook-creation,hook-succeeded; the scripts ConfigMap is kept."""
    objects = app.template()
    succeeded = "before-hook-creation,hook-succeeded"
    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        assert delete_policy(only(objects, kind)) == succeeded
    for job in of_kind(objects, "Job"):
        assert delete_policy(job) == succeeded
        assert job["metadata"]["annotations"]["helm.sh/hook-output-log-policy"] == "hook-failed"
    assert delete_policy(only(objects, "ConfigMap", "shop-revisor-desired")) == succeeded
    # The files stay after a release: a later rollback's downgrade needs them.
    assert delete_policy(only(objects, "ConfigMap", "shop-migrations")) == "before-hook-creation"


def test_hook_role_grants_exactly_what_the_wait_command_calls(app: AppChart) -> None:
    """The Role: get/create/patch DatabaseMigrations and get ConfigMaps, bound to the Jobs' SA."""
    objects = app.template()
    role = only(objects, "Role")
    assert rule_set(role["rules"]) == WAIT_RULES
    assert all("*" not in str(rule) for rule in role["rules"])
    account = only(objects, "ServiceAccount")["metadata"]["name"]
    binding = only(objects, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]
    for job in of_kind(objects, "Job"):
        assert job["spec"]["template"]["spec"]["serviceAccountName"] == account


def test_hook_jobs_run_unprivileged_once(app: AppChart) -> None:
    """Non-root, read-only root filesystem, no privilege escalation, no capabilities, no retry."""
    for job in of_kind(app.template(), "Job"):
        assert job["spec"]["backoffLimit"] == 0
        pod = job["spec"]["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        security = container(job)["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}


def test_migrate_job_applies_the_desired_state_waits_and_records_the_release(
    app: AppChart,
) -> None:
    """`revisor-operator wait dbm/shop ... --apply <the mounted desired file> --record-release 1`."""
    objects = app.template()
    job = only(objects, "Job", "shop-revisor-migrate")
    wait = container(job)
    assert wait["image"] == "ghcr.io/revisor-dev/revisor:0.1.0"
    assert wait["command"] == [
        "revisor-operator",
        "wait",
        "dbm/shop",
        "--namespace",
        NAMESPACE,
        "--timeout",
        "10m",
        "--service-account-dir",
        SERVICE_ACCOUNT_DIR,
        "--apply",
        "/etc/revisor/desired/databasemigration.json",
        "--record-release",
        "1",
    ]
    # The file --apply reads is the desired-state ConfigMap's key, mounted read-only.
    (mount,) = wait["volumeMounts"]
    assert mount["readOnly"] is True
    assert "/etc/revisor/desired/databasemigration.json".startswith(mount["mountPath"] + "/")
    (volume,) = job["spec"]["template"]["spec"]["volumes"]
    assert volume["name"] == mount["name"]
    assert volume["configMap"]["name"] == "shop-revisor-desired"
    assert job["spec"]["activeDeadlineSeconds"] == 10 * 60 + 120


def test_scripts_configmap_is_labelled_for_the_operators_watch(app: AppChart) -> None:
    """The "revisor-migration.scripts" helper labels it: the operator sees a change at once."""
    scripts = only(app.template(), "ConfigMap", "shop-migrations")
    assert scripts["metadata"]["labels"]["revisor.dev/scripts"] == "true"
    assert scripts["data"]  # the revision files themselves
    # The desired-state ConfigMap is not scripts: the operator need not watch it.
    desired = only(app.template(), "ConfigMap", "shop-revisor-desired")
    assert "revisor.dev/scripts" not in (desired["metadata"].get("labels") or {})


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        ("ghcr.io/revisor-dev/revisor:0.1.0", "ghcr.io/revisor-dev/revisor"),
        ("registry.example:5000/revisor:0.2.0", "registry.example:5000/revisor"),
        ("registry.example:5000/revisor", "registry.example:5000/revisor"),
    ],
)
def test_hook_digest_pins_the_image(app: AppChart, image: str, pinned: str) -> None:
    """hook.digest set: every hook Job runs <repository>@<digest>, the tag dropped."""
    digest = "sha256:" + "c" * 64
    for job in of_kind(app.template({"hook": {"image": image, "digest": digest}}), "Job"):
        assert container(job)["image"] == f"{pinned}@{digest}"
    for job in of_kind(app.template({"hook": {"image": image}}), "Job"):
        assert container(job)["image"] == image


def test_rollback_job_waits_for_the_revision_recorded_for_the_release(app: AppChart) -> None:
    """`revisor-operator wait dbm/shop ... --rollback-to-release 1`, nothing to apply or mount."""
    job = only(app.template(), "Job", "shop-revisor-rollback")
    wait = container(job)
    assert wait["command"] == [
        "revisor-operator",
        "wait",
        "dbm/shop",
        "--namespace",
        NAMESPACE,
        "--timeout",
        "10m",
        "--service-account-dir",
        SERVICE_ACCOUNT_DIR,
        "--rollback-to-release",
        "1",
    ]
    assert "volumeMounts" not in wait
    assert "volumes" not in job["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    ("timeout", "deadline"),
    [("90s", 90 + 120), ("15m", 900 + 120), ("2h", 7200 + 120), ("1h30m5s", 5405 + 120)],
)
def test_hook_timeout_is_the_waits_timeout_and_sets_the_jobs_deadline(
    app: AppChart, timeout: str, deadline: int
) -> None:
    """hook.timeout goes to `wait --timeout` as written; the Job's deadline is it plus 2 minutes."""
    for job in of_kind(app.template({"hook": {"timeout": timeout}}), "Job"):
        command = container(job)["command"]
        assert command[command.index("--timeout") + 1] == timeout
        assert job["spec"]["activeDeadlineSeconds"] == deadline


def test_desired_migration_carries_the_app_charts_values(app: AppChart) -> None:
    """The DatabaseMigration applied by the hook is the one examples/app-chart's values describe."""
    body = desired_migration(app.template())
    assert body["kind"] == "DatabaseMigration"
    assert body["metadata"]["name"] == "shop"
    assert body["metadata"]["namespace"] == NAMESPACE
    # Each release is a new desired state: the operator runs it even with an unchanged spec.
    assert body["metadata"]["annotations"] == {"revisor.dev/release": "1"}
    assert body["spec"] == {
        "database": {"urlSecretRef": {"name": "shop-db", "key": "url"}},
        "source": {"configMap": {"name": "shop-migrations"}},
        "target": "head",
        "onFailure": "Rollback",
        "rollback": {"deploymentRef": {"name": "shop-web"}, "window": "10m"},
    }


def test_image_source_and_pass_through_settings_reach_the_spec(app: AppChart) -> None:
    """source.image replaces the ConfigMap; lock/timeouts/runner/versionTable pass through."""
    values = {
        "source": {"image": {"image": "registry.example/shop:1.4.2", "path": "/app/migrations"}},
        "target": "3c9a1f0b2e44",
        "onFailure": "Stop",
        "lock": {"timeoutSeconds": 30},
        "timeouts": {"statement": "5m", "ddlLock": "3s"},
        "runner": {"backoffLimit": 1, "resources": {"limits": {"memory": "256Mi"}}},
        "versionTable": {"name": "shop_version"},
    }
    spec = desired_migration(app.template(values))["spec"]
    assert spec["source"] == {
        "image": {"image": "registry.example/shop:1.4.2", "path": "/app/migrations"}
    }
    assert spec["target"] == "3c9a1f0b2e44"
    assert spec["onFailure"] == "Stop"
    assert spec["lock"] == {"timeoutSeconds": 30}
    assert spec["timeouts"] == {"statement": "5m", "ddlLock": "3s"}
    assert spec["runner"] == {"backoffLimit": 1, "resources": {"limits": {"memory": "256Mi"}}}
    assert spec["versionTable"] == {"name": "shop_version"}


def test_parent_chart_condition_and_globals_are_accepted(app: AppChart) -> None:
    """A parent's `condition: revisor-migration.enabled` key and global values pass the schema."""
    done = app.helm(
        "template",
        RELEASE,
        str(app.path),
        values={KEY: {"enabled": True}, "global": {"imageRegistry": "registry.example"}},
    )
    assert done.returncode == 0, done.stderr
    assert "shop-revisor-migrate" in done.stdout


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"onFailure": "Sometimes"}, "at '/onFailure': value must be one of 'Rollback', 'Stop'"),
        ({"hook": {"timeout": "10 minutes"}}, "at '/hook/timeout': '10 minutes' does not match"),
        # wait would take 500ms, but the Job's deadline cannot be computed from it.
        ({"hook": {"timeout": "500ms"}}, "at '/hook/timeout': '500ms' does not match"),
        ({"hook": {"timeout": ""}}, "at '/hook/timeout': minLength"),
        ({"hook": {"imagePullPolicy": "Sometimes"}}, "at '/hook/imagePullPolicy': value must be"),
        ({"hook": {"timout": "10m"}}, "at '/hook': additional properties 'timout' not allowed"),
        ({"hook": {"digest": "sha256:abc"}}, "at '/hook/digest': 'sha256:abc' does not match"),
        ({"targt": "head"}, "additional properties 'targt' not allowed"),
        ({"target": ""}, "at '/target': minLength"),
        ({"target": 1234}, "at '/target': got number, want string"),
        ({"rollback": {"window": "soon"}}, "at '/rollback/window': 'soon' does not match"),
        ({"runner": {"imagePullPolcy": "Always"}}, "additional properties 'imagePullPolcy'"),
        ({"source": {"configmap": {"name": "x"}}}, "at '/source': additional properties"),
        ({"database": {"secretRef": {"name": "pg"}}}, "at '/database': 'not' failed"),
    ],
)
def test_bad_values_are_refused_with_the_offending_path(
    app: AppChart, values: dict[str, Any], message: str
) -> None:
    """values.schema.json stops a typo, a wrong type or an unparsable duration at render time."""
    done = app.refusal_or_render(values)
    assert done.returncode != 0, done.stdout
    assert "revisor-migration:" in done.stderr
    assert message in done.stderr
    linted = app.helm("lint", "--strict", str(HOOK_CHART), values=values)
    assert linted.returncode != 0, linted.stdout
    assert message in linted.stdout + linted.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"source": {"configMap": {"name": ""}}}, MISSING_SOURCE),
        ({"source": {"configMap": None}}, MISSING_SOURCE),
        ({"database": {"urlSecretRef": {"name": ""}}}, MISSING_DATABASE),
        ({"database": {"urlSecretRef": None}}, MISSING_DATABASE),
    ],
    ids=["source-empty-name", "source-null", "database-empty-name", "database-null"],
)
def test_missing_reference_fails_with_the_charts_message(
    app: AppChart, values: dict[str, Any], message: str
) -> None:
    """No scripts or no database Secret named: rendering fails with the chart's own message."""
    done = app.refusal_or_render(values)
    assert done.returncode != 0, done.stdout
    assert message in done.stderr


def test_hook_chart_alone_with_its_defaults_asks_for_a_source() -> None:
    alone = run_helm("template", RELEASE, str(HOOK_CHART))
    assert alone.returncode != 0, alone.stdout
    assert MISSING_SOURCE in alone.stderr


def test_database_parts_secret_needs_its_name_too(app: AppChart) -> None:
    """secretRef instead of urlSecretRef: its name is required as well (by the schema)."""
    parts = {"urlSecretRef": None, "secretRef": {"name": ""}}
    done = app.refusal_or_render({"database": parts})
    assert done.returncode != 0, done.stdout
    assert "at '/database/secretRef/name'" in done.stderr
    parts["secretRef"] = {"name": "pg"}
    rendered = app.refusal_or_render({"database": parts})
    assert rendered.returncode == 0, rendered.stderr
