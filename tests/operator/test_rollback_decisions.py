"""A failed rollout after an upgrade: window, rollback Job, outcome, and never a retry storm."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from revisor.contract import ExitCode
from revisor_operator.decisions.bodies import Job, Migration
from revisor_operator.decisions.jobs import Owner, build_job
from revisor_operator.decisions.observe import Run, observe_run
from revisor_operator.decisions.reconcile import Decision
from revisor_operator.decisions.rollout import deployment_status, parse_time
from revisor_operator.decisions.spec import parse_spec

from .factories import (
    DEFAULTS,
    NAME,
    NAMESPACE,
    NOW,
    UID,
    decide_on,
    migration,
    pod,
    raw_spec,
    result,
)
from .test_reconcile import OK_REFS
from .test_rollout import deployment, stuck

SPEC = raw_spec(rollback={"deploymentRef": {"name": "web"}, "window": "10m"})
START, HEAD = "9d2e7a11c0f3", "3c9a1f0b2e44"
LATER_ON = "2025-01-02T03:05:05Z"


def step(
    body: Migration, runs: list[Run], *, dep: dict[str, Any] | None = None, now: str = NOW
) -> Decision:
    return decide_on(
        body,
        runs=runs,
        references=OK_REFS,
        now=now,
        deployment=deployment_status(dep) if dep is not None else None,
    )


def finished(job: Job, *, code: ExitCode = ExitCode.OK, **kw: Any) -> Run:
    job["status"] = {
        "startTime": NOW,
        "completionTime": NOW,
        "conditions": [{"type": "Complete" if code == 0 else "Failed", "status": "True"}],
    }
    message = result(code, **kw)
    name = job["metadata"]["name"]
    return observe_run(job=job, pods=[pod(job=name, exit_code=int(code), message=message)])


def upgraded(
    *, start: tuple[str, ...] = (START,), spec: dict[str, Any] = SPEC
) -> tuple[Migration, Run]:
    """The resource right after its upgrade run was recorded, and that run."""
    body = migration(spec=spec)
    created = step(body, [])
    assert created.action == "create" and created.job is not None
    run = finished(created.job, start=start)
    recorded = step(
        migration(spec=spec, status=created.status), [run], dep=deployment(generation=2)
    )
    assert recorded.action == "record" and recorded.status is not None
    return migration(spec=spec, status={**(created.status or {}), **recorded.status}), run


def failing_rollout() -> dict[str, Any]:
    moment = parse_time(NOW)
    assert moment is not None
    return stuck(
        generation=3,
        progressing=("False", "ProgressDeadlineExceeded"),
        since=moment + timedelta(seconds=20),
    )


def test_require_reversible_is_the_specs_choice_not_implied_by_a_followed_deployment() -> None:
    """spec.requireReversible asks the engine to refuse irreversible revisions (NotReversible);
    following a Deployment alone does not: empty downgrades run as no-ops, as in Alembic."""

    def argv(spec: dict[str, Any]) -> list[str]:
        created = step(migration(spec=spec), [])
        assert created.job is not None
        command: list[str] = created.job["spec"]["template"]["spec"]["containers"][0]["command"]
        return command

    assert "--require-reversible" not in argv(SPEC)
    assert "--require-reversible" in argv({**SPEC, "requireReversible": True})
    assert "--require-reversible" not in argv(raw_spec())


def test_successful_upgrade_opens_a_rollback_window() -> None:
    """status.rollout: Watching the Deployment, until now + window, back to the start revision."""
    body, run = upgraded()
    rollout = body["status"]["rollout"]
    assert rollout["state"] == "Watching"
    assert rollout["deployment"] == "web"
    assert rollout["job"] == run.job
    assert rollout["previousRevision"] == START
    assert rollout["until"] == "2025-01-02T03:14:05Z"
    assert rollout["baselineGeneration"] == 2


def test_failed_rollout_creates_a_downgrade_job_to_the_previous_revision() -> None:
    """ProgressDeadlineExceeded on the new generation: a Job applies the previous revision."""
    body, run = upgraded()
    decision = step(body, [run], dep=failing_rollout(), now=LATER_ON)
    assert decision.action == "create" and decision.job is not None
    job = decision.job
    annotations = job["metadata"]["annotations"]
    assert annotations["revisor.dev/purpose"] == "rollback"
    assert annotations["revisor.dev/deployment"] == "web"
    argv = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert argv[argv.index("apply") :][-2:] == ["--", START]
    assert "--require-reversible" not in argv
    assert decision.event is not None and decision.event.type == "Warning"
    assert "Deployment web" in decision.event.message
    assert decision.status is not None and decision.status["rollout"]["state"] == "Failed"


def test_a_first_install_opens_no_window_so_a_failed_rollout_never_drops_everything() -> None:
    """previousRevision none: there is no previous application; going to base would drop every
    table. No window opens, and the failed rollout changes nothing."""
    body, run = upgraded(start=())
    assert "rollout" not in body["status"]
    decision = step(body, [run], dep=failing_rollout(), now=LATER_ON)
    assert decision.job is None and decision.action == "nothing"


def test_rollback_to_base_happens_only_when_the_spec_allows_it() -> None:
    """rollback.allowBase: true: the window opens from base and a failed rollout goes back there."""
    allowing = raw_spec(
        rollback={"deploymentRef": {"name": "web"}, "window": "10m", "allowBase": True}
    )
    body, run = upgraded(start=(), spec=allowing)
    assert body["status"]["rollout"]["previousRevision"] == "base"
    decision = step(body, [run], dep=failing_rollout(), now=LATER_ON)
    assert decision.job is not None
    assert decision.job["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "base"


def rolled_back(code: ExitCode) -> tuple[Decision, Migration, list[Run]]:
    body, run = upgraded()
    started = step(body, [run], dep=failing_rollout(), now=LATER_ON)
    assert started.job is not None and started.status is not None
    body = migration(spec=SPEC, status={**body["status"], **started.status})
    back = finished(
        started.job,
        code=code,
        start=(HEAD,),
        end=(START,) if code == ExitCode.OK else (HEAD,),
        error=None if code == ExitCode.OK else "cannot drop table",
    )
    runs = [run, back]
    decision = step(body, runs, dep=failing_rollout(), now=LATER_ON)
    return decision, body, runs


def test_finished_downgrade_is_recorded_as_deploy_failed_rolled_back() -> None:
    """Phase RolledBack, Ready=False reason DeployFailedRolledBack, naming the Deployment."""
    decision, _, _ = rolled_back(ExitCode.OK)
    assert decision.action == "record" and decision.status is not None
    status = decision.status
    assert status["phase"] == "RolledBack"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "DeployFailedRolledBack")
    assert "Deployment web" in ready["message"]
    assert status["currentRevision"] == START
    assert status["rollout"]["state"] == "RolledBack"
    assert decision.event is not None and "Deployment web" in decision.event.message


def test_failed_downgrade_is_terminal_and_never_retried() -> None:
    """RollbackFailed, phase Failed; the next passes do nothing while the spec is unchanged."""
    decision, body, runs = rolled_back(ExitCode.MIGRATION_FAILED)
    assert decision.status is not None
    assert decision.status["phase"] == "Failed"
    ready = next(c for c in decision.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "RollbackFailed"
    assert decision.status["rollout"]["state"] == "Failed"
    after = migration(spec=SPEC, status={**body["status"], **decision.status})
    for _ in range(3):
        assert step(after, runs, dep=failing_rollout(), now=LATER_ON).action == "nothing"


def test_rolled_back_resource_stays_put_until_the_spec_changes() -> None:
    """No loop: after RolledBack nothing runs; a new generation runs again."""
    decision, body, runs = rolled_back(ExitCode.OK)
    assert decision.status is not None
    after = migration(spec=SPEC, status={**body["status"], **decision.status})
    assert step(after, runs, dep=failing_rollout(), now=LATER_ON).action == "nothing"
    changed = migration(spec=SPEC, generation=2, status=after["status"])
    assert step(changed, runs, dep=failing_rollout(), now=LATER_ON).action == "create"


def test_successful_rollout_closes_the_window() -> None:
    """The new generation rolled out: state Succeeded, a Normal event, no Job."""
    body, run = upgraded()
    decision = step(body, [run], dep=deployment(generation=3), now=LATER_ON)
    assert decision.action == "follow" and decision.job is None
    assert decision.status is not None and decision.status["rollout"]["state"] == "Succeeded"
    assert decision.event is not None and decision.event.reason == "RolloutSucceeded"
    closed = migration(spec=SPEC, status={**body["status"], **decision.status})
    assert step(closed, [run], dep=failing_rollout(), now=LATER_ON).action == "nothing"


def test_rollout_still_going_writes_nothing_twice() -> None:
    """Watching with an unchanged message is not a status write."""
    body, run = upgraded()
    going = stuck(generation=3, progressing=("True", "ReplicaSetUpdated"))
    first = step(body, [run], dep=going, now=LATER_ON)
    assert first.action == "follow" and first.status is not None
    again = migration(spec=SPEC, status={**body["status"], **first.status})
    assert step(again, [run], dep=going, now=LATER_ON).action == "nothing"


def test_no_window_without_a_deployment_ref_or_without_an_upgrade() -> None:
    """Plain specs, and runs that applied nothing, open no window."""
    created = step(migration(), [])
    assert created.job is not None
    run = finished(created.job)
    recorded = step(migration(status=created.status), [run])
    assert recorded.status is not None and "rollout" not in recorded.status
    owner = Owner(name=NAME, namespace=NAMESPACE, uid=UID, generation=1)
    job = build_job(
        owner=owner,
        spec=parse_spec(SPEC),
        name="shop-g1-nothing",
        fingerprint="f" * 64,
        defaults=DEFAULTS,
    )
    noop = finished(job, applied=(), start=(HEAD,), end=(HEAD,))
    nothing = step(migration(spec=SPEC), [noop], dep=deployment())
    assert nothing.status is not None and "rollout" not in nothing.status
