"""`revisor-operator wait`: when a DatabaseMigration counts as done, failed, or not yet."""

from __future__ import annotations

from typing import Any

from revisor_operator.decisions.bodies import Migration
from revisor_operator.decisions.helm_releases import recorded_releases, with_release
from revisor_operator.decisions.readiness import judge_wait
from revisor_operator.main import main

from .factories import migration

JOB = "shop-g2-abcdef"


def body(generation: int = 2, **status: Any) -> Migration:
    return migration(generation=generation, status=status)


def ready(value: str, reason: str) -> list[dict[str, Any]]:
    return [{"type": "Ready", "status": value, "reason": reason, "message": f"{reason} said"}]


def test_status_of_the_previous_generation_is_not_done() -> None:
    """Right after an apply, Ready=True still describes the old generation: keep waiting."""
    obj = body(observedGeneration=1, phase="Succeeded", conditions=ready("True", "Migrated"))
    progress = judge_wait(obj, expected_job=JOB)
    assert progress.outcome == "Waiting"
    assert "generation 2" in progress.message


def test_success_of_the_current_run_is_done() -> None:
    """Observed generation current, lastRun is the expected Job, Succeeded: Ready."""
    obj = body(
        observedGeneration=2,
        phase="Succeeded",
        conditions=ready("True", "Migrated"),
        lastRun={"job": JOB},
    )
    assert judge_wait(obj, expected_job=JOB).outcome == "Ready"


def test_success_of_an_older_run_is_not_done() -> None:
    """Scripts changed, same spec: the last success was for other scripts."""
    obj = body(
        observedGeneration=2,
        phase="Succeeded",
        conditions=ready("True", "Migrated"),
        lastRun={"job": "shop-g2-000000"},
    )
    assert judge_wait(obj, expected_job=JOB).outcome == "Waiting"


def test_failure_of_the_current_run_fails_fast_with_its_message() -> None:
    obj = body(
        observedGeneration=2,
        phase="RolledBack",
        conditions=ready("False", "RolledBack"),
        lastRun={"job": JOB},
    )
    progress = judge_wait(obj, expected_job=JOB)
    assert progress.outcome == "Failed"
    assert "RolledBack said" in progress.message


def test_failure_of_an_older_run_is_not_this_runs_failure() -> None:
    """A fix shipped as new scripts must not fail on the previous attempt's failure."""
    obj = body(
        observedGeneration=2,
        phase="Failed",
        conditions=ready("False", "MigrationFailed"),
        lastRun={"job": "shop-g2-000000"},
    )
    assert judge_wait(obj, expected_job=JOB).outcome == "Waiting"


def test_invalid_spec_fails_fast() -> None:
    """Nothing will run until someone edits the spec."""
    obj = body(observedGeneration=2, phase="Failed", conditions=ready("False", "InvalidTarget"))
    assert judge_wait(obj, expected_job=None).outcome == "Failed"


def test_schema_rolled_back_after_a_failed_rollout_fails() -> None:
    """The run succeeded, then its rollout failed and the schema went back: failed."""
    obj = body(
        observedGeneration=2,
        phase="RolledBack",
        conditions=ready("False", "DeployFailedRolledBack"),
        lastRun={"job": "shop-g2-rollbk"},
        rollout={"job": JOB, "state": "RolledBack"},
    )
    assert judge_wait(obj, expected_job=JOB).outcome == "Failed"


def test_release_records_keep_the_newest_twenty() -> None:
    """helm release revision -> database revision, bounded."""
    records: dict[str, str] = {}
    for release in range(1, 26):
        records = with_release(records, release, f"rev{release}")
    assert len(records) == 20
    assert "5" not in records and records["25"] == "rev25"


def test_unreadable_release_records_read_as_none() -> None:
    obj = migration()
    obj["metadata"]["annotations"] = {"revisor.dev/helm-release-revisions": "not json"}
    assert recorded_releases(obj) == {}


def test_wait_refuses_other_kinds() -> None:
    """`revisor-operator wait deploy/web` is a usage error (exit 2), not a hang."""
    assert main(["wait", "deploy/web", "--kubeconfig", "/nonexistent"]) == 2
