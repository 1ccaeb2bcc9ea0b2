"""Turn a validated spec into the Job that runs the engine once.

Everything the engine needs arrives through the contract
(:class:`revisor.contract.RunRequest`), so the Job's command line can only
hold options the engine's CLI parses. Credentials never do: the URL (or its
parts) reaches the container as environment variables with ``secretKeyRef``,
so the Secret's value is never copied into the Job, nor shown by ``kubectl
describe``.

The pod is as unprivileged as Kubernetes allows (non-root, no capabilities,
read-only root filesystem with a writable ``/tmp``); the engine's result is
written to the termination message, which is how the operator reads it back
without reading logs.

Pure: returns a body for :mod:`.kube` to create.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from revisor.contract import ENV_DATABASE_PARTS, ENV_DATABASE_URL, ENV_RUNNER, RunRequest

from .. import API_VERSION, KIND
from .bodies import Job, JsonDict, ObjectMeta
from .spec import ConfigMapSource, ImageSource, MigrationSpec, PartsDatabase, UrlDatabase

CONTAINER = "revisor"
SCRIPTS_DIR = "/scripts"
TERMINATION_LOG = "/dev/termination-log"
RUN_AS_USER = 65532

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "revisor"
MIGRATION_LABEL = "revisor.dev/migration"
GENERATION_ANNOTATION = "revisor.dev/generation"
COMMAND_ANNOTATION = "revisor.dev/command"
MODE_ANNOTATION = "revisor.dev/mode"
TARGET_ANNOTATION = "revisor.dev/target"
APPROVAL_ANNOTATION = "revisor.dev/approval-required"
FINGERPRINT_ANNOTATION = "revisor.dev/fingerprint"
#: ``migrate`` (the spec's run) or ``rollback`` (back to the previous revision
#: because the Deployment in ``spec.rollback.deploymentRef`` failed to roll out).
PURPOSE_ANNOTATION = "revisor.dev/purpose"
DEPLOYMENT_ANNOTATION = "revisor.dev/deployment"
ROLLBACK_REASON_ANNOTATION = "revisor.dev/rollback-reason"

#: Exit codes for which a retry cannot help (bad input, failed migration,
#: failed rollback, mismatch): the Job fails at once whatever backoffLimit says.
#: Lock timeouts (3) and an unreachable database (6) may be retried.
FINAL_EXIT_CODES = (2, 4, 5, 7)


@dataclass(frozen=True)
class Owner:
    """The ``DatabaseMigration`` a Job is for."""

    name: str
    namespace: str
    uid: str
    generation: int


@dataclass(frozen=True)
class JobDefaults:
    """Operator-wide settings that shape every Job."""

    runner_image: str
    runner_pull_policy: str = "IfNotPresent"
    ttl_seconds_after_finished: int = 24 * 3600


def engine_request(spec: MigrationSpec) -> RunRequest:
    """The engine invocation ``spec`` asks for.

    ``apply`` moves the database up *or* down to the target; ``plan`` only
    computes the steps (Plan mode, or approval required and not yet given);
    DryRun applies inside a transaction that is rolled back.
    """
    common: dict[str, Any] = {
        "target": spec.target,
        "scripts": SCRIPTS_DIR,
        "version_table": spec.version_table,
        "lock_timeout": float(spec.lock_timeout_seconds),
        "output": "json",
        "log_format": "json",
        "result_file": TERMINATION_LOG,
    }
    if spec.plans_only:
        return RunRequest(command="plan", **common)
    approved = spec.approval.plan_hash if spec.mode == "Apply" and spec.approval.required else None
    return RunRequest(
        command="apply",
        statement_timeout=spec.timeouts.statement_seconds,
        ddl_lock_timeout=spec.timeouts.ddl_lock_seconds,
        on_failure=spec.on_failure,
        dry_run=spec.mode == "DryRun",
        expect_plan_hash=approved,
        # A deploy that may be rolled back must only apply revisions that can be undone:
        # the engine refuses (NotReversible) before it changes anything.
        require_reversible=spec.rollback.deployment is not None,
        **common,
    )


def build_job(
    *,
    owner: Owner,
    spec: MigrationSpec,
    name: str,
    fingerprint: str,
    defaults: JobDefaults,
    annotations: Mapping[str, str] | None = None,
) -> Job:
    """The Job manifest for one run of ``spec`` (not yet created).

    ``annotations`` are added to the Job's own (a rollback says why it runs).
    """
    request = engine_request(spec)
    labels = {MANAGED_BY: MANAGER, MIGRATION_LABEL: owner.name}
    metadata: ObjectMeta = {
        "name": name,
        "namespace": owner.namespace,
        "labels": dict(labels),
        "annotations": {
            GENERATION_ANNOTATION: str(owner.generation),
            COMMAND_ANNOTATION: request.command,
            MODE_ANNOTATION: spec.mode,
            TARGET_ANNOTATION: spec.target,
            APPROVAL_ANNOTATION: "true" if spec.approval.required else "false",
            FINGERPRINT_ANNOTATION: fingerprint,
            **(annotations or {}),
        },
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": owner.name,
                "uid": owner.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": spec.runner.backoff_limit,
            "activeDeadlineSeconds": spec.job_deadline_seconds,
            "ttlSecondsAfterFinished": defaults.ttl_seconds_after_finished,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": CONTAINER,
                            "operator": "In",
                            "values": list(FINAL_EXIT_CODES),
                        },
                    },
                    # An evicted or preempted pod did not fail the migration: retry it.
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                ]
            },
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": _pod_spec(spec=spec, request=request, defaults=defaults),
            },
        },
    }


def _pod_spec(*, spec: MigrationSpec, request: RunRequest, defaults: JobDefaults) -> JsonDict:
    runner = spec.runner
    volumes: list[JsonDict] = [{"name": "tmp", "emptyDir": {}}]
    init_containers: list[JsonDict] = []
    source = spec.source
    if isinstance(source, ConfigMapSource):
        volumes.append(
            {"name": "scripts", "configMap": {"name": source.name, "defaultMode": 0o444}}
        )
    elif isinstance(source, ImageSource):
        volumes.append({"name": "scripts", "emptyDir": {}})
        init_containers.append(_copy_scripts_container(source))
    container: JsonDict = {
        "name": CONTAINER,
        "image": runner.image or defaults.runner_image,
        "imagePullPolicy": runner.pull_policy or defaults.runner_pull_policy,
        "command": request.to_argv(),
        "env": _environment(spec),
        "volumeMounts": [
            {"name": "scripts", "mountPath": SCRIPTS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir, not the host's /tmp
        ],
        "securityContext": _container_security(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if runner.resources:
        container["resources"] = dict(runner.resources)
    pod: JsonDict = {
        "restartPolicy": "Never",
        # The engine never calls the Kubernetes API: no token, whatever the account.
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if init_containers:
        pod["initContainers"] = init_containers
    if runner.service_account:
        pod["serviceAccountName"] = runner.service_account
    if runner.node_selector:
        pod["nodeSelector"] = dict(runner.node_selector)
    if runner.tolerations:
        pod["tolerations"] = [dict(t) for t in runner.tolerations]
    return pod


def _copy_scripts_container(source: ImageSource) -> JsonDict:
    """An init container that copies the image's revision files into the shared emptyDir.

    The scripts image needs a ``cp`` (busybox, any distro base); a trailing
    ``/.`` copies the directory's content, hidden files included.
    """
    container: JsonDict = {
        "name": "scripts",
        "image": source.image,
        "command": ["cp", "-R", f"{source.path.rstrip('/')}/.", f"{SCRIPTS_DIR}/"],
        "volumeMounts": [{"name": "scripts", "mountPath": SCRIPTS_DIR}],
        "securityContext": _container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if source.pull_policy:
        container["imagePullPolicy"] = source.pull_policy
    return container


def _container_security() -> JsonDict:
    return {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _environment(spec: MigrationSpec) -> list[JsonDict]:
    env: list[JsonDict] = [
        {"name": ENV_RUNNER, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        # Revision files on a read-only volume, root filesystem read-only: no .pyc.
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        {"name": "HOME", "value": "/tmp"},  # noqa: S108 - the pod's own emptyDir
    ]
    database = spec.database
    if isinstance(database, UrlDatabase):
        env.append(_secret_env(ENV_DATABASE_URL, database.url.secret, database.url.key))
    elif isinstance(database, PartsDatabase):
        if database.driver:
            env.append({"name": ENV_DATABASE_PARTS["driver"], "value": database.driver})
        for part, key in database.keys.items():
            env.append(
                _secret_env(
                    ENV_DATABASE_PARTS[part],
                    database.secret,
                    key,
                    optional=part in database.optional_parts,
                )
            )
    return env


def _secret_env(name: str, secret: str, key: str, *, optional: bool = False) -> JsonDict:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def job_annotations(job: Job) -> Mapping[str, str]:
    """The annotations a Job carries (empty when it has none)."""
    return job.get("metadata", {}).get("annotations") or {}
