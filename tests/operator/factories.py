"""Builders for the bodies the operator reads: resources, Jobs, pods, engine results."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from revisor.contract import ExitCode, Result, Step
from revisor_operator.decisions.bodies import Job, Migration, Pod
from revisor_operator.decisions.jobs import JobDefaults, Owner, build_job
from revisor_operator.decisions.observe import Run
from revisor_operator.decisions.progress import Progress
from revisor_operator.decisions.reconcile import Decision, decide
from revisor_operator.decisions.references import References
from revisor_operator.decisions.rollout import DeploymentStatus, parse_time
from revisor_operator.decisions.spec import InvalidSpec, MigrationSpec, parse_spec

NAMESPACE = "shop"
NAME = "shop"
UID = "0b6c3c4e-1111-2222-3333-444455556666"
NOW = "2025-01-02T03:04:05Z"
LATER = "2025-01-02T03:09:05Z"
DEFAULTS = JobDefaults(runner_image="registry.example/revisor:test")


def decide_on(
    body: Migration,
    *,
    runs: Sequence[Run] = (),
    references: References | None,
    now: str = NOW,
    deployment: DeploymentStatus | None = None,
    progress: Progress | None = None,
) -> Decision:
    """:func:`decide` as a reconcile pass calls it: the spec parsed once from the body."""
    spec: MigrationSpec | InvalidSpec
    try:
        spec = parse_spec(body.get("spec") or {})
    except InvalidSpec as invalid:
        spec = invalid
    moment = parse_time(now)
    assert isinstance(moment, datetime)
    return decide(
        migration=body,
        spec=spec,
        runs=list(runs),
        references=references if isinstance(spec, MigrationSpec) else None,
        defaults=DEFAULTS,
        now=moment,
        deployment=deployment,
        progress=progress,
    )


def raw_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "database": {"urlSecretRef": {"name": "shop-db", "key": "url"}},
        "source": {"configMap": {"name": "shop-migrations"}},
        "target": "head",
    }
    spec.update(overrides)
    return spec


def migration(
    *,
    spec: dict[str, Any] | None = None,
    generation: int = 1,
    status: dict[str, Any] | None = None,
    deleting: bool = False,
) -> Migration:
    meta: dict[str, Any] = {
        "name": NAME,
        "namespace": NAMESPACE,
        "uid": UID,
        "generation": generation,
        "resourceVersion": "100",
    }
    if deleting:
        meta["deletionTimestamp"] = NOW
    body: dict[str, Any] = {
        "apiVersion": "revisor.dev/v1alpha1",
        "kind": "DatabaseMigration",
        "metadata": meta,
        "spec": spec if spec is not None else raw_spec(),
    }
    if status is not None:
        body["status"] = status
    return body  # type: ignore[return-value]


def job_for(
    *,
    spec: dict[str, Any] | None = None,
    generation: int = 1,
    name: str | None = None,
    state: str = "active",
    failure: tuple[str, str] | None = None,
    created: str = NOW,
) -> Job:
    """A Job as the API would return it, ``state`` one of active / complete / failed."""
    parsed = parse_spec(spec if spec is not None else raw_spec())
    owner = Owner(name=NAME, namespace=NAMESPACE, uid=UID, generation=generation)
    job = build_job(
        owner=owner,
        spec=parsed,
        name=name or f"{NAME}-g{generation}-abcdef",
        fingerprint="f" * 64,
        defaults=DEFAULTS,
    )
    job["metadata"]["creationTimestamp"] = created
    status: dict[str, Any] = {"startTime": NOW}
    if state == "active":
        status["active"] = 1
    elif state == "complete":
        status["succeeded"] = 1
        status["completionTime"] = LATER
        status["conditions"] = [{"type": "Complete", "status": "True"}]
    elif state == "failed":
        reason, message = failure or (
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        )
        status["failed"] = 1
        status["conditions"] = [
            {
                "type": "Failed",
                "status": "True",
                "reason": reason,
                "message": message,
                "lastTransitionTime": LATER,
            }
        ]
    job["status"] = status
    return job


def pod(
    *,
    job: str,
    exit_code: int | None = None,
    message: str | None = None,
    terminated_reason: str | None = None,
    waiting: tuple[str, str] | None = None,
) -> Pod:
    state: dict[str, Any]
    if waiting is not None:
        state = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
    elif exit_code is None:
        state = {"running": {"startedAt": NOW}}
    else:
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": terminated_reason or ("Completed" if exit_code == 0 else "Error"),
            "startedAt": NOW,
            "finishedAt": LATER,
        }
        if message is not None:
            terminated["message"] = message
        state = {"terminated": terminated}
    return {
        "metadata": {"name": f"{job}-x7k2p", "creationTimestamp": NOW},
        "status": {"containerStatuses": [{"name": "revisor", "state": state}]},
    }


def result(
    code: ExitCode = ExitCode.OK,
    *,
    command: str = "apply",
    start: tuple[str, ...] = ("9d2e7a11c0f3",),
    end: tuple[str, ...] = ("3c9a1f0b2e44",),
    applied: tuple[str, ...] = ("1a2b3c4d5e6f", "3c9a1f0b2e44"),
    error: str | None = None,
    rolled_back: bool = False,
    plan: tuple[str, ...] = (),
    plan_hash: str | None = None,
    dry_run: bool = False,
    detail_reason: str | None = None,
) -> str:
    """An engine result document, as the termination message carries it."""
    return Result(
        command=command,
        exit_code=code,
        direction="upgrade" if applied or plan else "none",
        target="head",
        from_revisions=start,
        to_revisions=end,
        applied=tuple(Step(revision=r, direction="upgrade", seconds=0.25) for r in applied),
        plan=tuple(Step(revision=r, direction="upgrade", description=f"step {r}") for r in plan),
        plan_hash=plan_hash,
        error=error,
        rolled_back=rolled_back,
        dry_run=dry_run,
        started_at=NOW,
        finished_at=LATER,
        detail_reason=detail_reason,
    ).to_json()
