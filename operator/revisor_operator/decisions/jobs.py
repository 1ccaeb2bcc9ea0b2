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

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from revisor.contract import (
    ENV_DATABASE_PARTS,
    ENV_DATABASE_SOURCE,
    ENV_DATABASE_URL,
    ENV_RUNNER,
    RunRequest,
)

from .. import API_VERSION, KIND
from .admission import SET_LABEL
from .bodies import Job, JsonDict, ObjectMeta
from .spec import ConfigMapSource, ImageSource, MigrationSpec, PartsDatabase, UrlDatabase

CONTAINER = "revisor"
MAX_LABEL = 63
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
#: The desired state a Job serves, as the name of its first Job: a retry of
#: the same state (the database Secret fixed after a failure) has another
#: name but the same desired run.
DESIRED_RUN_ANNOTATION = "revisor.dev/desired-run"
#: The database Secret's resourceVersion when the Job was made.
SECRET_VERSION_ANNOTATION = "revisor.dev/secret-version"  # noqa: S105 - a name
#: ``migrate`` (the spec's run) or ``rollback`` (back to the previous revision
#: because the Deployment in ``spec.rollback.deploymentRef`` failed to roll out).
PURPOSE_ANNOTATION = "revisor.dev/purpose"
DEPLOYMENT_ANNOTATION = "revisor.dev/deployment"
ROLLBACK_REASON_ANNOTATION = "revisor.dev/rollback-reason"
#: A drift check (purpose ``drift``): the last recorded run when it was made, the
#: value of the resource's ``revisor.dev/drift-check`` annotation it answers, and the
#: check recorded before it (the one after which it is the next to record).
DRIFT_AFTER_ANNOTATION = "revisor.dev/drift-after"
DRIFT_REQUEST_ANNOTATION = "revisor.dev/drift-request"
DRIFT_PREVIOUS_ANNOTATION = "revisor.dev/drift-previous"

#: Exit codes for which a retry cannot help (bad input, failed migration,
#: failed rollback, mismatch, partially applied): the Job fails at once
#: whatever backoffLimit says.
#: Lock timeouts (3) and an unreachable database (6) may be retried.
FINAL_EXIT_CODES = (2, 4, 5, 7, 8)


@dataclass(frozen=True)
class Owner:
    """The ``DatabaseMigration`` a Job is for."""

    name: str
    namespace: str
    uid: str
    generation: int
    #: The ``revisor.dev/set`` label of a DatabaseMigrationSet's child, copied onto its
    #: Jobs: the set finds its children's finished Jobs by it, and so can kubectl.
    set_label: str | None = None


#: Requests and limits of every container a Job runs, unless spec.runner.resources
#: says otherwise: namespaces whose ResourceQuota requires them still run Jobs,
#: and no Job can take a node's memory or disk.
DEFAULT_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "50m", "memory": "128Mi", "ephemeral-storage": "64Mi"},
    "limits": {"cpu": "1", "memory": "512Mi", "ephemeral-storage": "512Mi"},
}
#: The largest scratch volume a Job gets (the scripts copied from an image, /tmp).
SCRATCH_LIMIT = "256Mi"


@dataclass(frozen=True)
class JobDefaults:
    """Operator-wide settings that shape every Job."""

    runner_image: str
    runner_pull_policy: str = "IfNotPresent"
    ttl_seconds_after_finished: int = 24 * 3600
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: DEFAULT_RESOURCES)


def label_value(name: str) -> str:
    """``name`` as a label value: itself when it fits 63 characters, else shortened + hashed.

    A resource's name may have 253 characters; a label value at most 63.
    """
    if len(name) <= MAX_LABEL:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: MAX_LABEL - 11].rstrip('-.')}-{digest}"


def engine_request(spec: MigrationSpec) -> RunRequest:
    """The engine invocation ``spec`` asks for.

    ``apply`` moves the database up *or* down to the target; ``plan`` only
    computes the steps (Plan mode, or approval required and not yet given);
    DryRun applies inside a transaction that is rolled back.
    """
    common: dict[str, Any] = {
        "target": spec.target,
        "scripts": SCRIPTS_DIR,
        "env_py": spec.env_py,
        "metadata": spec.metadata,
        # With a schema, the version table is in it: the spec may say so twice, the engine once.
        "version_table": replace(spec.version_table, schema=None)
        if spec.schema is not None
        else spec.version_table,
        "schema": spec.schema,
        "lock_timeout": float(spec.lock_timeout_seconds),
        "output": "json",
        "log_format": "json",
        "result_file": TERMINATION_LOG,
        # The engine ignores it once the database has a version table: safe on every run.
        "baseline": spec.baseline,
    }
    if spec.plans_only:
        return RunRequest(command="plan", **common)
    approved = spec.approval.plan_hash if spec.mode == "Apply" and spec.approval.required else None
    return RunRequest(
        command="apply",
        statement_timeout=spec.timeouts.statement_seconds,
        ddl_lock_timeout=spec.timeouts.ddl_lock_seconds,
        ddl_lock_retries=spec.timeouts.ddl_lock_retries,
        on_failure=spec.on_failure,
        dry_run=spec.mode == "DryRun",
        expect_plan_hash=approved,
        require_reversible=spec.require_reversible,
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
    desired: str | None = None,
    secret_version: str = "",
) -> Job:
    """The Job manifest for one run of ``spec`` (not yet created).

    ``annotations`` are added to the Job's own (a rollback says why it runs);
    ``desired`` names the desired run a retry serves (default: ``name``);
    ``secret_version`` is the database Secret's resourceVersion as read now.
    """
    request = engine_request(spec)
    labels = {MANAGED_BY: MANAGER, MIGRATION_LABEL: label_value(owner.name)}
    if owner.set_label:
        labels[SET_LABEL] = owner.set_label
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
            DESIRED_RUN_ANNOTATION: desired or name,
            SECRET_VERSION_ANNOTATION: secret_version,
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
            "podFailurePolicy": pod_failure_policy(),
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": _pod_spec(
                    spec=spec, request=request, defaults=defaults, namespace=owner.namespace
                ),
            },
        },
    }


def engine_pod_spec(
    *, spec: MigrationSpec, request: RunRequest, defaults: JobDefaults, namespace: str
) -> JsonDict:
    """The pod that runs ``request`` with ``spec``'s runner, scripts and database.

    Also the pod of a DatabaseMigrationSet's own Jobs (:mod:`.fleet.schemas`):
    one definition of how unprivileged and bounded an engine's pod is.
    """
    return _pod_spec(spec=spec, request=request, defaults=defaults, namespace=namespace)


def pod_failure_policy() -> JsonDict:
    """Fail at once on the engine's final exit codes; an evicted pod is not a failure."""
    return {
        "rules": [
            # An evicted or preempted pod did not fail the migration: retry it.
            # First: rules match in order, and an evicted engine that stopped
            # between revisions on SIGTERM exits 4, which the next rule fails.
            {
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            },
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER,
                    "operator": "In",
                    "values": list(FINAL_EXIT_CODES),
                },
            },
        ]
    }


def _pod_spec(
    *, spec: MigrationSpec, request: RunRequest, defaults: JobDefaults, namespace: str
) -> JsonDict:
    runner = spec.runner
    resources = _resources(runner.resources or defaults.resources)
    volumes: list[JsonDict] = [{"name": "tmp", "emptyDir": {"sizeLimit": SCRATCH_LIMIT}}]
    init_containers: list[JsonDict] = []
    source = spec.source
    if isinstance(source, ConfigMapSource):
        volumes.append(
            {"name": "scripts", "configMap": {"name": source.name, "defaultMode": 0o444}}
        )
    elif isinstance(source, ImageSource):
        volumes.append({"name": "scripts", "emptyDir": {"sizeLimit": SCRATCH_LIMIT}})
        init_containers.append({**_copy_scripts_container(source), "resources": resources})
    container: JsonDict = {
        "name": CONTAINER,
        "image": runner.image or defaults.runner_image,
        "imagePullPolicy": runner.pull_policy or defaults.runner_pull_policy,
        "command": request.to_argv(),
        "env": _environment(spec, namespace),
        "volumeMounts": [
            {"name": "scripts", "mountPath": SCRIPTS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir, not the host's /tmp
        ],
        "securityContext": _container_security(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": resources,
    }
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


def _resources(resources: Mapping[str, Any]) -> JsonDict:
    """A container's ``resources``, copied so the Job never shares the spec's mappings."""
    return {kind: dict(values) for kind, values in resources.items()}


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


def _environment(spec: MigrationSpec, namespace: str) -> list[JsonDict]:
    env: list[JsonDict] = [
        {"name": ENV_RUNNER, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        # How the engine names the database in its messages: never by a value
        # from the Secret (its keys may point at any of its values).
        {"name": ENV_DATABASE_SOURCE, "value": _source_words(spec, namespace)},
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


def _source_words(spec: MigrationSpec, namespace: str) -> str:
    database = spec.database
    if isinstance(database, UrlDatabase):
        return f"Secret {namespace}/{database.url.secret}, key {database.url.key}"
    return f"Secret {namespace}/{database.secret}"


def _secret_env(name: str, secret: str, key: str, *, optional: bool = False) -> JsonDict:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def migration_of(job: Job) -> str | None:
    """The DatabaseMigration a Job belongs to, from its controller owner reference.

    Not from its label: a label value holds 63 characters, a resource's name 253.
    """
    for ref in job.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("controller"):
            return str(ref.get("name", "")) or None
    return None


def job_annotations(job: Job) -> Mapping[str, str]:
    """The annotations a Job carries (empty when it has none)."""
    return job.get("metadata", {}).get("annotations") or {}
