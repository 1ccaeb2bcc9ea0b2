"""The Job a DatabaseMigration becomes: unprivileged, deterministic, no copied secrets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from revisor.contract import (
    ENV_DATABASE_PARTS,
    ENV_DATABASE_URL,
    ENV_RUNNER,
    RunRequest,
    VersionTable,
)
from revisor_operator.decisions.jobs import JobDefaults, Owner, build_job, engine_request
from revisor_operator.decisions.naming import fingerprint_config_map, fingerprint_run, job_name
from revisor_operator.decisions.spec import parse_spec

from .factories import DEFAULTS, NAME, NAMESPACE, UID, raw_spec

CANARY = "Canary-s3cr3t-7f1e"


def make(spec: dict[str, Any] | None = None, *, generation: int = 3) -> dict[str, Any]:
    job = build_job(
        owner=Owner(name=NAME, namespace=NAMESPACE, uid=UID, generation=generation),
        spec=parse_spec(spec or raw_spec()),
        name="shop-g3-abcdef",
        fingerprint="f" * 64,
        defaults=DEFAULTS,
    )
    return dict(job)


def container(job: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_pod_runs_unprivileged_on_a_read_only_root() -> None:
    """Non-root 65532, RuntimeDefault seccomp, no capabilities, read-only root, writable /tmp."""
    job = make()
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container(job)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert tmp == {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}
    assert {"name": "tmp", "mountPath": "/tmp"} in container(job)["volumeMounts"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False


def test_job_is_bounded_owned_and_labelled() -> None:
    """Deadline, TTL, controller owner reference and the revisor labels."""
    job = make(raw_spec(timeouts={"job": "10m"}))
    assert job["spec"]["activeDeadlineSeconds"] == 600
    assert job["spec"]["ttlSecondsAfterFinished"] == DEFAULTS.ttl_seconds_after_finished
    assert job["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "revisor.dev/v1alpha1",
            "kind": "DatabaseMigration",
            "name": NAME,
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    labels = {"app.kubernetes.io/managed-by": "revisor", "revisor.dev/migration": NAME}
    assert job["metadata"]["labels"] == labels
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    assert job["metadata"]["annotations"]["revisor.dev/generation"] == "3"


def test_result_comes_back_through_the_termination_message() -> None:
    c = container(make())
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_database_url_is_a_secret_key_reference_never_a_value() -> None:
    """The URL arrives by secretKeyRef; no value of the Secret is in the manifest."""
    c = container(make())
    env = {e["name"]: e for e in c["env"]}
    assert env[ENV_DATABASE_URL] == {
        "name": ENV_DATABASE_URL,
        "valueFrom": {"secretKeyRef": {"name": "shop-db", "key": "url"}},
    }
    assert env[ENV_RUNNER]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "--database-url" not in c["command"]


def test_secret_parts_are_each_a_secret_key_reference() -> None:
    spec = raw_spec(
        database={"secretRef": {"name": "pg", "passwordKey": "pw"}, "driver": "postgresql+psycopg"}
    )
    env = {e["name"]: e for e in container(make(spec))["env"]}
    assert env[ENV_DATABASE_PARTS["password"]]["valueFrom"]["secretKeyRef"] == {
        "name": "pg",
        "key": "pw",
    }
    assert env[ENV_DATABASE_PARTS["port"]]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert env[ENV_DATABASE_PARTS["driver"]] == {
        "name": ENV_DATABASE_PARTS["driver"],
        "value": "postgresql+psycopg",
    }


def test_no_secret_value_can_reach_the_manifest() -> None:
    """Even a Secret named like a password only appears as a name."""
    job = make(raw_spec(database={"urlSecretRef": {"name": "db", "key": "url"}}))
    assert CANARY not in json.dumps(job)


def test_command_is_the_contract_run_request() -> None:
    """The container's command is exactly RunRequest.to_argv() for the spec."""
    spec = raw_spec(
        target="-1",
        onFailure="Stop",
        lock={"timeoutSeconds": 5},
        timeouts={"statement": "10m", "ddlLock": "5s"},
        versionTable={"name": "versions", "schema": "app"},
    )
    expected = RunRequest(
        command="apply",
        target="-1",
        scripts="/scripts",
        version_table=VersionTable(name="versions", schema="app"),
        lock_timeout=5.0,
        statement_timeout=600.0,
        ddl_lock_timeout=5.0,
        on_failure="stop",
        output="json",
        log_format="json",
        result_file="/dev/termination-log",
    )
    assert container(make(spec))["command"] == expected.to_argv()
    assert container(make(spec))["command"][-2:] == ["--", "-1"]


@pytest.mark.parametrize(
    ("overrides", "command", "dry_run", "plan_hash"),
    [
        ({}, "apply", False, None),
        ({"mode": "Plan"}, "plan", False, None),
        ({"mode": "DryRun"}, "apply", True, None),
        ({"approval": {"required": True}}, "plan", False, None),
        ({"approval": {"required": True, "planHash": "ab" * 16}}, "apply", False, "ab" * 16),
    ],
)
def test_mode_and_approval_choose_the_engine_command(
    overrides: dict[str, Any], command: str, dry_run: bool, plan_hash: str | None
) -> None:
    """Apply -> apply; Plan or unapproved -> plan; DryRun -> apply --dry-run; approved -> hash."""
    request = engine_request(parse_spec(raw_spec(**overrides)))
    assert request.command == command
    assert request.dry_run is dry_run
    assert request.expect_plan_hash == plan_hash
    assert request.output == "json" and request.log_format == "json"
    assert request.result_file == "/dev/termination-log"


def test_config_map_scripts_are_mounted_read_only() -> None:
    pod = make()["spec"]["template"]["spec"]
    scripts = next(v for v in pod["volumes"] if v["name"] == "scripts")
    assert scripts["configMap"]["name"] == "shop-migrations"
    assert {"name": "scripts", "mountPath": "/scripts", "readOnly": True} in container(make())[
        "volumeMounts"
    ]
    assert "initContainers" not in pod


def test_image_scripts_are_copied_by_an_init_container() -> None:
    spec = raw_spec(source={"image": {"image": "registry/shop:1.4.2", "path": "/app/migrations/"}})
    pod = make(spec)["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["image"] == "registry/shop:1.4.2"
    assert init["command"] == ["cp", "-R", "/app/migrations/.", "/scripts/"]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "scripts", "emptyDir": {"sizeLimit": "256Mi"}} in pod["volumes"]


def test_runner_settings_reach_the_pod() -> None:
    spec = raw_spec(
        runner={
            "image": "mine:2",
            "serviceAccountName": "migrator",
            "backoffLimit": 2,
            "nodeSelector": {"pool": "batch"},
            "tolerations": [{"key": "batch", "operator": "Exists"}],
            "resources": {"limits": {"memory": "256Mi"}},
        }
    )
    job = make(spec)
    pod = job["spec"]["template"]["spec"]
    assert container(job)["image"] == "mine:2"
    assert container(job)["resources"] == {"limits": {"memory": "256Mi"}}
    assert pod["serviceAccountName"] == "migrator"
    assert pod["automountServiceAccountToken"] is False, "the engine never calls the API"
    assert pod["nodeSelector"] == {"pool": "batch"}
    assert pod["tolerations"] == [{"key": "batch", "operator": "Exists"}]
    assert job["spec"]["backoffLimit"] == 2


def test_default_runner_image_comes_from_operator_settings() -> None:
    job = build_job(
        owner=Owner(name=NAME, namespace=NAMESPACE, uid=UID, generation=1),
        spec=parse_spec(raw_spec()),
        name="x",
        fingerprint="f",
        defaults=JobDefaults(runner_image="example/revisor:9"),
    )
    assert container(dict(job))["image"] == "example/revisor:9"


def test_failed_migrations_are_not_retried_by_the_job() -> None:
    """Exit codes 2, 4, 5, 7 fail the Job at once whatever backoffLimit says.

    Unless the pod was evicted or preempted (DisruptionTarget): that rule comes
    first, since rules match in order and an evicted engine exits 4 after
    stopping between revisions (tests/cluster/test_faults.py).
    """
    rules = make()["spec"]["podFailurePolicy"]["rules"]
    assert [r["action"] for r in rules] == ["Ignore", "FailJob"]
    assert rules[0]["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    assert rules[1]["onExitCodes"]["values"] == [2, 4, 5, 7, 8]


def test_job_name_is_deterministic_and_fits_63_characters() -> None:
    """Same inputs, same name; a long resource name is cut, the generation and hash kept."""
    fp = fingerprint_run(spec=raw_spec(), scripts="abc")
    assert job_name(migration="shop", generation=3, fingerprint=fp) == f"shop-g3-{fp[:6]}"
    assert fingerprint_run(spec=raw_spec(), scripts="abc") == fp
    long = job_name(migration="a" * 80 + "-b", generation=12345, fingerprint=fp)
    assert len(long) <= 63
    assert long.endswith(f"-g12345-{fp[:6]}")


def test_scripts_change_changes_the_name() -> None:
    """Editing the ConfigMap in place (same generation) yields a new Job name: a new run."""
    before = fingerprint_config_map(data={"001_init.py": "a"}, binary_data={})
    after = fingerprint_config_map(data={"001_init.py": "b"}, binary_data={})
    assert before != after
    names = {
        job_name(
            migration="shop", generation=1, fingerprint=fingerprint_run(spec=raw_spec(), scripts=s)
        )
        for s in (before, after)
    }
    assert len(names) == 2


def test_config_map_fingerprint_ignores_key_order() -> None:
    a = fingerprint_config_map(data={"a": "1", "b": "2"}, binary_data={})
    b = fingerprint_config_map(data={"b": "2", "a": "1"}, binary_data={})
    assert a == b
