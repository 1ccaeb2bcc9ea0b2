"""The schema never moves where nobody asked: the decisions behind a new user's first hour.

Each test drives :func:`decide` through a resource's life as the operator
would (create a Job, the Job finishes, its result is recorded, the next
change comes) and checks the one thing that must not happen.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from revisor.contract import ExitCode
from revisor_operator.decisions.bodies import Job, Migration
from revisor_operator.decisions.observe import Run, observe_run
from revisor_operator.decisions.readiness import judge_wait
from revisor_operator.decisions.reconcile import Decision, desired_run
from revisor_operator.decisions.references import ConfigMapCheck, References, SecretCheck
from revisor_operator.decisions.rollout import deployment_status, parse_time
from revisor_operator.decisions.spec import parse_spec

from .factories import NOW, decide_on, migration, pod, raw_spec, result
from .test_rollout import deployment, stuck

START, HEAD = "9d2e7a11c0f3", "3c9a1f0b2e44"


def refs(*, scripts: str = "c", secret_version: str = "1") -> References:
    return References(
        secret=SecretCheck(
            name="shop-db", exists=True, keys=frozenset({"url"}), version=secret_version
        ),
        config_map=ConfigMapCheck(name="shop-migrations", exists=True, fingerprint=scripts * 64),
    )


@dataclass
class World:
    """One resource, its Jobs and what the cluster holds, stepped as the operator steps it."""

    spec: dict[str, Any]
    references: References = field(default_factory=refs)
    body: Migration = field(init=False)
    jobs: list[Job] = field(default_factory=list)
    results: dict[str, tuple[ExitCode, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.body = migration(spec=self.spec)

    @property
    def runs(self) -> list[Run]:
        out = []
        for job in self.jobs:
            name = job["metadata"]["name"]
            done = self.results.get(name)
            pods = [] if done is None else [pod(job=name, exit_code=int(done[0]), message=done[1])]
            out.append(observe_run(job=job, pods=pods))
        return out

    def step(self, *, now: str = NOW, deployment_body: dict[str, Any] | None = None) -> Decision:
        decision = decide_on(
            self.body,
            runs=self.runs,
            references=self.references,
            now=now,
            deployment=deployment_status(deployment_body) if deployment_body else None,
        )
        if decision.status is not None:
            status = {**(self.body.get("status") or {}), **decision.status}
            self.body["status"] = {k: v for k, v in status.items() if v is not None}
        if decision.job is not None:
            job = copy.deepcopy(decision.job)
            job["metadata"]["creationTimestamp"] = now
            job["status"] = {"startTime": now, "active": 1}
            self.jobs.append(job)
        return decision

    def finish(self, code: ExitCode = ExitCode.OK, **result_args: Any) -> Decision:
        """The newest Job ends with this result; the operator records it."""
        job = self.jobs[-1]
        job["status"] = {
            "startTime": NOW,
            "completionTime": NOW,
            "conditions": [{"type": "Complete" if code == 0 else "Failed", "status": "True"}],
        }
        self.results[job["metadata"]["name"]] = (code, result(code, **result_args))
        recorded = self.step()
        assert recorded.action == "record", recorded
        return recorded

    def change_spec(self, **spec: Any) -> None:
        self.body["spec"] = {**self.body["spec"], **spec}
        self.body["metadata"]["generation"] += 1

    def annotate(self, **annotations: str) -> None:
        self.body["metadata"].setdefault("annotations", {}).update(annotations)

    def status(self) -> dict[str, Any]:
        return dict(self.body.get("status") or {})


def test_a_relative_target_is_acted_on_once_not_again_for_new_scripts() -> None:
    """target -1: one downgrade; a new revision file later moves nothing."""
    world = World(raw_spec(target="-1"))
    assert world.step().action == "create"
    world.finish(start=(HEAD,), end=(START,), applied=(HEAD,))
    assert world.status()["currentRevision"] == START
    assert world.status()["targetRevision"] == START, "the absolute revision -1 meant"
    world.references = refs(scripts="d")  # a new revision file in the ConfigMap
    again = world.step()
    assert again.action == "nothing" and again.job is None
    assert len(world.jobs) == 1


def test_an_absolute_target_does_run_again_for_new_scripts() -> None:
    world = World(raw_spec(target="head"))
    world.step()
    world.finish()
    world.references = refs(scripts="d")
    assert world.step().action == "create"


def test_a_new_generation_closes_the_old_generations_window_and_its_rollback_never_runs() -> None:
    spec = raw_spec(rollback={"deploymentRef": {"name": "web"}, "window": "10m"})
    world = World(spec)
    world.step()
    world.finish(start=(START,), end=(HEAD,))
    assert world.status()["rollout"]["state"] == "Watching"
    world.change_spec(target="a1b2c3d4e5f6")
    created = world.step()
    assert created.action == "create"
    rollout = world.status()["rollout"]
    assert rollout["state"] == "Superseded" and "replaced generation 1" in rollout["message"]
    later = parse_time(NOW)
    assert later is not None
    failing = stuck(
        generation=3,
        progressing=("False", "ProgressDeadlineExceeded"),
        since=later + timedelta(seconds=30),
    )
    world.jobs[-1]["status"] = {"startTime": NOW, "active": 1}
    assert world.step(deployment_body=failing).action == "wait"
    world.finish(start=(HEAD,), end=("a1b2c3d4e5f6",), applied=("a1b2c3d4e5f6",))
    purposes = [j["metadata"]["annotations"].get("revisor.dev/purpose") for j in world.jobs]
    assert "rollback" not in purposes


def test_each_helm_release_is_a_new_desired_state_even_with_the_same_spec() -> None:
    """After DeployFailedRolledBack, the next release's hook runs the upgrade again."""
    world = World(raw_spec())
    world.annotate(**{"revisor.dev/release": "2"})
    world.step()
    world.finish()
    assert world.step().action == "nothing"
    world.annotate(**{"revisor.dev/release": "3"})
    assert world.step().action == "create", "release 3 wants the upgrade too"


def test_current_revision_is_base_after_a_downgrade_to_base() -> None:
    world = World(raw_spec(target="base"))
    world.step()
    world.finish(start=(HEAD,), end=(), applied=(HEAD,))
    assert world.status()["currentRevision"] == "base"


def test_a_fixed_secret_runs_a_failed_resource_again_and_wait_accepts_the_retry() -> None:
    world = World(raw_spec())
    world.step()
    failed = world.finish(ExitCode.UNREACHABLE, end=(), start=(), applied=(), error="refused")
    assert failed.verdict is not None and failed.verdict.reason == "DatabaseUnreachable"
    assert "a change of the Secret" in failed.verdict.message, "says how to run it again"
    assert world.step().action == "nothing", "the same Secret: nothing new to try"
    world.references = refs(secret_version="2")
    retry = world.step()
    assert retry.action == "create" and retry.job is not None
    assert "the database Secret changed since it failed" in (
        retry.verdict.message if retry.verdict else ""
    )
    desired, _ = desired_run(
        world.body, parse_spec(world.body["spec"]), scripts=f"configmap\0{'c' * 64}"
    )
    assert retry.job["metadata"]["name"] != desired
    assert retry.job["metadata"]["annotations"]["revisor.dev/desired-run"] == desired
    world.finish()
    assert world.status()["lastRun"]["desiredRun"] == desired
    assert judge_wait(world.body, expected_job=desired).outcome == "Ready"
    world.references = refs(secret_version="3")
    assert world.step().action == "nothing", "a Secret change after success runs nothing"


def test_a_secret_change_does_not_rerun_a_spec_problem() -> None:
    world = World(raw_spec(target="ffff"))
    world.step()
    world.finish(ExitCode.BAD_INPUT, detail_reason="InvalidTarget", applied=(), error="no ffff")
    world.references = refs(secret_version="2")
    assert world.step().action == "nothing"


def test_plan_mode_is_ready_and_planned_not_succeeded() -> None:
    """Ready (the plan exists: healthy to Argo CD); phase Planned: the database did not move."""
    world = World(raw_spec(mode="Plan"))
    world.step()
    recorded = world.finish(command="plan", applied=(), plan=(HEAD,), plan_hash="ab" * 32)
    assert recorded.verdict is not None
    assert (recorded.verdict.phase, recorded.verdict.ready) == ("Planned", True)
    assert "nothing applied" in recorded.verdict.message
    body = copy.deepcopy(world.body)
    desired = world.status()["lastRun"]["desiredRun"]
    assert judge_wait(body, expected_job=desired).outcome == "Ready"


def test_durations_under_a_second_are_not_rounded_to_zero() -> None:
    world = World(raw_spec())
    world.step()
    recorded = world.finish(applied=("a",))
    assert recorded.verdict is not None
    assert "1 step(s) in 0.25s" in recorded.verdict.message


def test_replace_keeps_world_helpers_honest() -> None:
    """Guard: the helper's deployment factory is the rollout tests' one."""
    body = deployment(generation=2)
    assert deployment_status(body).generation == 2
    assert replace(refs(), config_map=None).config_map is None
