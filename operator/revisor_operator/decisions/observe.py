"""Read what a Job and its pods say happened, into one frozen :class:`Run`.

A Job's outcome is spread over three places: the Job's own conditions
(Complete / Failed, with reasons such as ``DeadlineExceeded``), its pods'
container states (exit code, ``OOMKilled``, a waiting reason such as
``CreateContainerConfigError`` when a Secret is missing) and the engine's
result document in the termination message. This module gathers them; it
decides nothing. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from revisor.contract import Result

from .bodies import Job, JsonDict, ObjectMeta, Pod
from .jobs import (
    APPROVAL_ANNOTATION,
    COMMAND_ANNOTATION,
    CONTAINER,
    DEPLOYMENT_ANNOTATION,
    DESIRED_RUN_ANNOTATION,
    DRIFT_AFTER_ANNOTATION,
    DRIFT_PREVIOUS_ANNOTATION,
    DRIFT_REQUEST_ANNOTATION,
    GENERATION_ANNOTATION,
    MODE_ANNOTATION,
    PURPOSE_ANNOTATION,
    ROLLBACK_REASON_ANNOTATION,
    SECRET_VERSION_ANNOTATION,
    TARGET_ANNOTATION,
    job_annotations,
)

#: ``revisor.dev/purpose`` of a Job that checks for schema drift (:mod:`.drift`).
DRIFT_PURPOSE = "drift"


@dataclass(frozen=True)
class ContainerState:
    """The engine container's state in the newest pod of a Job."""

    pod: str
    waiting_reason: str | None = None
    waiting_message: str | None = None
    exit_code: int | None = None
    terminated_reason: str | None = None
    #: The termination message: the engine's result JSON, or the log tail on error.
    message: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    #: The container has started (running or terminated): it has a log to read.
    started: bool = False


@dataclass(frozen=True)
class Run:
    """One Job: what it was asked to do and how far it got."""

    job: str
    generation: int
    command: str
    mode: str
    target: str
    approval_required: bool
    created_at: str
    finished: bool
    succeeded: bool
    #: The Job's Failed condition, e.g. ("DeadlineExceeded", "Job was active longer ...").
    failure_reason: str | None = None
    failure_message: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    container: ContainerState | None = None
    result: Result | None = None
    #: Why the termination message is not a result, when there is one but it is not.
    result_problem: str | None = None
    #: ``migrate``, or ``rollback`` when a failed rollout sent the database back.
    purpose: str = "migrate"
    #: For a rollback: the Deployment whose rollout failed, and how it failed.
    deployment: str | None = None
    rollback_reason: str | None = None
    #: The desired run this Job serves (its own name, unless it retries another).
    desired: str = ""
    #: The database Secret's resourceVersion when the Job was made.
    secret_version: str = ""
    #: The last lines of the engine's log (read for a failed run only: see :mod:`.progress`).
    log: str = ""
    #: A drift check's: the run recorded when it was made, the request it answers,
    #: the check recorded before it.
    drift_after: str = ""
    drift_request: str = ""
    drift_previous: str = ""

    @property
    def is_rollback(self) -> bool:
        return self.purpose == "rollback"

    @property
    def is_drift_check(self) -> bool:
        return self.purpose == DRIFT_PURPOSE

    @property
    def active(self) -> bool:
        return not self.finished


def _conditions(job: Job) -> dict[str | None, JsonDict]:
    return {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or []}


def job_finished(job: Job) -> bool:
    """Whether the Job controller has given its verdict: Complete or Failed is True.

    The one definition of a running Job, for the reconcile (:attr:`Run.active`),
    the delete handler's wait and the in-flight metric.
    """
    return _finished(_conditions(job))


def _finished(conditions: Mapping[str | None, JsonDict]) -> bool:
    return _is_true(conditions.get("Complete")) or _is_true(conditions.get("Failed"))


def engine_may_run(job: Job) -> bool:
    """Whether the Job's engine may be running now, so that its pod has a log worth reading.

    Not finished, a pod of it active, and one ready (the engine's container has
    no probe: it is ready once it runs). On a cluster whose Job controller does
    not count ready pods (``status.ready`` absent), an active pod may run it.
    """
    if job_finished(job):
        return False
    status = job.get("status") or {}
    ready = status.get("ready")
    return int(status.get("active") or 0) > 0 and (ready is None or int(ready) > 0)


def slim_job(job: Job) -> Job:
    """``job`` with only what the operator reads of it, to be kept in memory.

    Its name, uid, creation time, labels, annotations and owners; its pod
    template's containers as :func:`owned_pods` compares them (name, image,
    command, arguments); its status. Not its ``managedFields``, nor the rest of
    its pod template (environment, volumes, security context).
    """
    meta = job.get("metadata", {})
    kept_meta = {
        key: meta[key]
        for key in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "labels",
            "annotations",
            "ownerReferences",
        )
        if key in meta
    }
    pod_spec = (job.get("spec") or {}).get("template", {}).get("spec") or {}
    kept_spec = {
        key: [
            {k: c[k] for k in ("name", "image", "command", "args") if k in c}
            for c in pod_spec[key] or []
        ]
        for key in ("initContainers", "containers")
        if key in pod_spec
    }
    slim = Job(metadata=cast(ObjectMeta, kept_meta), spec={"template": {"spec": kept_spec}})
    if "status" in job:
        slim["status"] = job["status"]
    return slim


def owned_pods(job: Job, pods: Sequence[Pod]) -> list[Pod]:
    """The pods that are ``job``'s own: controlled by it, and running its template's containers.

    A pod's labels prove nothing: anyone who may create pods in the namespace
    can copy them, and write a termination message that claims success (or
    a ``previousRevision`` a deploy rollback would then go to). Nor does the
    owner reference alone: the Job controller *adopts* an orphan pod whose
    labels match its selector. What a forger cannot make is a pod that runs
    the engine's command from the engine's image and still lies: so a pod
    counts only if it is controlled by the Job and its containers are the
    template's (same names, images, commands and arguments). A Job without a
    uid (not yet from the API) keeps every pod given.
    """
    uid = job.get("metadata", {}).get("uid")
    if not uid:
        return list(pods)
    template = _containers((job.get("spec") or {}).get("template", {}).get("spec") or {})
    return [
        p
        for p in pods
        if any(
            ref.get("uid") == uid and ref.get("kind") == "Job" and ref.get("controller")
            for ref in p.get("metadata", {}).get("ownerReferences") or []
        )
        and _containers(p.get("spec") or {}) == template
    ]


def _containers(pod_spec: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """What runs in a pod: each container's name, image, command and arguments."""
    out = []
    for key in ("initContainers", "containers"):
        for c in pod_spec.get(key) or []:
            out.append((key, c.get("name"), c.get("image"), c.get("command"), c.get("args")))
    return out


def observe_run(*, job: Job, pods: Sequence[Pod]) -> Run:
    """The :class:`Run` a Job and its pods describe (pods it does not control are ignored)."""
    pods = owned_pods(job, pods)
    meta = job.get("metadata", {})
    annotations = job_annotations(job)
    status = job.get("status") or {}
    conditions = _conditions(job)
    complete = _is_true(conditions.get("Complete"))
    failed = _is_true(conditions.get("Failed"))
    failure = conditions.get("Failed") if failed else None
    container = _newest_container(pods)
    result, problem = _parse_result(container.message if container else None)
    return Run(
        job=meta.get("name", ""),
        generation=_int(annotations.get(GENERATION_ANNOTATION)),
        command=annotations.get(COMMAND_ANNOTATION, "apply"),
        mode=annotations.get(MODE_ANNOTATION, "Apply"),
        target=annotations.get(TARGET_ANNOTATION, ""),
        approval_required=annotations.get(APPROVAL_ANNOTATION) == "true",
        created_at=meta.get("creationTimestamp", ""),
        finished=_finished(conditions),
        succeeded=complete,
        failure_reason=failure.get("reason") if failure else None,
        failure_message=failure.get("message") if failure else None,
        started_at=status.get("startTime"),
        completed_at=status.get("completionTime")
        or (failure.get("lastTransitionTime") if failure else None),
        container=container,
        result=result,
        result_problem=problem,
        purpose=annotations.get(PURPOSE_ANNOTATION, "migrate"),
        deployment=annotations.get(DEPLOYMENT_ANNOTATION),
        rollback_reason=annotations.get(ROLLBACK_REASON_ANNOTATION),
        desired=annotations.get(DESIRED_RUN_ANNOTATION) or meta.get("name", ""),
        secret_version=annotations.get(SECRET_VERSION_ANNOTATION, ""),
        drift_after=annotations.get(DRIFT_AFTER_ANNOTATION, ""),
        drift_request=annotations.get(DRIFT_REQUEST_ANNOTATION, ""),
        drift_previous=annotations.get(DRIFT_PREVIOUS_ANNOTATION, ""),
    )


def newest(runs: Sequence[Run]) -> Run | None:
    """The most recently created run (ties broken by name, which embeds the generation)."""
    if not runs:
        return None
    return max(runs, key=lambda r: (r.created_at, r.generation, r.job))


def _is_true(condition: JsonDict | None) -> bool:
    return bool(condition) and condition is not None and condition.get("status") == "True"


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _newest_container(pods: Sequence[Pod]) -> ContainerState | None:
    if not pods:
        return None
    pod = max(pods, key=lambda p: p.get("metadata", {}).get("creationTimestamp", ""))
    name = pod.get("metadata", {}).get("name", "")
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    init_statuses = (pod.get("status") or {}).get("initContainerStatuses") or []
    engine = next((s for s in statuses if s.get("name") == CONTAINER), None)
    # A failing init container (the scripts image) is the story when the engine never ran.
    for init in init_statuses:
        state = init.get("state") or {}
        if "waiting" in state or state.get("terminated", {}).get("exitCode", 0) != 0:
            engine = engine if engine and engine.get("state", {}).get("terminated") else init
            break
    if engine is None:
        return ContainerState(pod=name)
    state = engine.get("state") or {}
    waiting = state.get("waiting") or {}
    terminated = state.get("terminated") or {}
    return ContainerState(
        pod=name,
        waiting_reason=waiting.get("reason"),
        waiting_message=waiting.get("message"),
        exit_code=terminated.get("exitCode"),
        terminated_reason=terminated.get("reason"),
        message=terminated.get("message"),
        started_at=terminated.get("startedAt"),
        finished_at=terminated.get("finishedAt"),
        started="running" in state or "terminated" in state,
    )


def _parse_result(message: str | None) -> tuple[Result | None, str | None]:
    if not message or not message.strip():
        return None, None
    try:
        return Result.from_json(message.strip()), None
    except (ValueError, TypeError, KeyError) as exc:
        return None, str(exc)
