"""What a finished run looks like on the resource: phase, reason, message, fields."""

from __future__ import annotations

from typing import Any

import pytest
from revisor.contract import ExitCode
from revisor_operator.decisions.bodies import Condition
from revisor_operator.decisions.conditions import Desired, merge
from revisor_operator.decisions.observe import Run, job_finished, observe_run
from revisor_operator.decisions.status import (
    Verdict,
    _seconds_text,
    finished_verdict,
    running_verdict,
    status_patch,
)

from .factories import LATER, NOW, job_for, pod, raw_spec, result

CANARY = "Canary-s3cr3t-7f1e"


def finished(
    code: int, message: str | None, *, spec: dict[str, Any] | None = None, **job: Any
) -> tuple[Run, Verdict]:
    state = "complete" if code == 0 else "failed"
    j = job_for(spec=spec, state=state, **job)
    run = observe_run(job=j, pods=[pod(job=j["metadata"]["name"], exit_code=code, message=message)])
    return run, finished_verdict(run, lock_timeout_seconds=60)


def test_success_is_ready_migrated_with_revisions_and_steps() -> None:
    run, verdict = finished(0, result())
    assert (verdict.phase, verdict.reason, verdict.ready, verdict.failed) == (
        "Succeeded",
        "Migrated",
        True,
        False,
    )
    assert "from 9d2e7a11c0f3 to 3c9a1f0b2e44" in verdict.message
    patch = status_patch(current={}, verdict=verdict, generation=1, now=NOW, run=run)
    assert patch["currentRevision"] == "3c9a1f0b2e44"
    assert patch["previousRevision"] == "9d2e7a11c0f3"
    assert patch["targetRevision"] == "3c9a1f0b2e44"
    assert patch["lastRun"]["applied"] == [
        {"revision": "1a2b3c4d5e6f", "direction": "upgrade", "seconds": 0.25},
        {"revision": "3c9a1f0b2e44", "direction": "upgrade", "seconds": 0.25},
    ]
    assert patch["lastRun"]["exitCode"] == 0
    assert patch["lastRun"]["startedAt"] == NOW and patch["lastRun"]["finishedAt"] == LATER
    assert patch["history"][0]["job"] == run.job and patch["history"][0]["steps"] == 2
    ready = next(c for c in patch["conditions"] if c["type"] == "Ready")
    assert ready == {
        "type": "Ready",
        "status": "True",
        "reason": "Migrated",
        "message": verdict.message,
        "lastTransitionTime": NOW,
        "observedGeneration": 1,
    }


def test_nothing_to_do_is_still_ready() -> None:
    _, verdict = finished(0, result(start=("3c9a1f0b2e44",), applied=()))
    assert verdict.reason == "Migrated" and verdict.ready
    assert "nothing to do" in verdict.message


@pytest.mark.parametrize(
    ("code", "rolled_back", "error", "phase", "reason", "words"),
    [
        (
            ExitCode.LOCK_TIMEOUT,
            False,
            "lock busy",
            "Failed",
            "LockTimeout",
            "lock was not acquired within 60s",
        ),
        (
            ExitCode.MIGRATION_FAILED,
            False,
            "duplicate column",
            "Failed",
            "MigrationFailed",
            "the database is at",
        ),
        (
            ExitCode.MIGRATION_FAILED,
            True,
            "duplicate column",
            "RolledBack",
            "RolledBack",
            "rolled back to 9d2e7a11c0f3",
        ),
        (ExitCode.ROLLBACK_FAILED, False, "boom", "Failed", "RollbackFailed", "needs a human"),
        (
            ExitCode.UNREACHABLE,
            False,
            "connection refused",
            "Failed",
            "DatabaseUnreachable",
            "Cannot connect",
        ),
        (
            ExitCode.BAD_INPUT,
            False,
            "Can't locate revision identified by 'ffff'",
            "Failed",
            "InvalidInput",
            "Can't locate",
        ),
        (
            ExitCode.BAD_INPUT,
            False,
            "SyntaxError in 001_init.py",
            "Failed",
            "InvalidInput",
            "SyntaxError",
        ),
        (ExitCode.MISMATCH, False, "checksum differs", "Failed", "Mismatch", "checksum differs"),
    ],
)
def test_each_exit_code_has_its_phase_reason_and_message(
    *, code: ExitCode, rolled_back: bool, error: str, phase: str, reason: str, words: str
) -> None:
    """Reasons come from the contract; the engine's error is in the message."""
    _, verdict = finished(int(code), result(code, error=error, rolled_back=rolled_back, applied=()))
    assert (verdict.phase, verdict.reason) == (phase, reason)
    assert verdict.failed and not verdict.ready and not verdict.progressing
    assert words in verdict.message
    assert error in verdict.message


@pytest.mark.parametrize(
    ("engine_reason", "words"),
    [
        ("InvalidTarget", "rejected target"),
        ("InvalidScripts", "cannot be loaded"),
        ("NotReversible", "Cannot move to"),
        ("PlanChanged", "spec.approval.planHash"),
    ],
)
def test_the_engines_finer_reason_for_bad_input_becomes_the_condition_reason(
    engine_reason: str, words: str
) -> None:
    """Exit code 2 says 'bad input'; the engine's result says which input, no guessing."""
    document = result(ExitCode.BAD_INPUT, error="details", applied=(), detail_reason=engine_reason)
    _, verdict = finished(2, document)
    assert verdict.reason == engine_reason
    assert words in verdict.message and "details" in verdict.message


def test_password_in_an_engine_error_is_masked_everywhere() -> None:
    """A URL with a password in the error is masked in the message and in lastRun."""
    error = f"could not connect to postgresql://app:{CANARY}@db/shop"
    run, verdict = finished(6, result(ExitCode.UNREACHABLE, error=error, applied=()))
    patch = status_patch(current={}, verdict=verdict, generation=1, now=NOW, run=run)
    assert CANARY not in str(patch)
    assert "postgresql://app:***@db/shop" in verdict.message


def test_pod_killed_without_result_is_a_clear_job_failure() -> None:
    """OOMKilled, no result: JobFailed saying what the Job and the container said."""
    run = observe_run(
        job=job_for(
            state="failed",
            failure=("BackoffLimitExceeded", "Job has reached the specified backoff limit"),
        ),
        pods=[pod(job="shop-g1-abcdef", exit_code=137, terminated_reason="OOMKilled")],
    )
    verdict = finished_verdict(run)
    assert (verdict.phase, verdict.reason) == ("Failed", "JobFailed")
    assert "OOMKilled with exit code 137" in verdict.message
    assert "BackoffLimitExceeded" in verdict.message
    assert "the engine left no result" in verdict.message


def test_deadline_exceeded_without_pod_is_a_job_failure() -> None:
    run = observe_run(
        job=job_for(
            state="failed",
            failure=("DeadlineExceeded", "Job was active longer than specified deadline"),
        ),
        pods=[],
    )
    verdict = finished_verdict(run)
    assert verdict.reason == "JobFailed"
    assert "DeadlineExceeded: Job was active longer than specified deadline" in verdict.message


def test_log_tail_instead_of_a_result_is_shown_redacted() -> None:
    """FallbackToLogsOnError puts log lines in the message; they are shown, masked."""
    logs = f"Traceback ...\nOperationalError: postgresql://app:{CANARY}@db refused"
    _, verdict = finished(1, logs)
    assert verdict.reason == "InternalError"  # exit code 1 in the contract: an engine crash
    assert "OperationalError" in verdict.message
    assert CANARY not in verdict.message


def test_exit_code_without_result_still_gets_the_contract_reason() -> None:
    """The engine died before writing a result but its exit code is in the contract."""
    _, verdict = finished(3, "")
    assert verdict.reason == "LockTimeout"


def test_plan_mode_is_ready_planned_with_the_plan_in_status() -> None:
    spec = raw_spec(mode="Plan")
    message = result(command="plan", applied=(), end=(), plan=("1a2b", "3c9a"), plan_hash="ab" * 16)
    run, verdict = finished(0, message, spec=spec)
    assert (verdict.phase, verdict.reason, verdict.ready) == ("Planned", "Planned", True)
    patch = status_patch(current={}, verdict=verdict, generation=1, now=NOW, run=run)
    assert patch["plan"]["hash"] == "ab" * 16
    assert [s["revision"] for s in patch["plan"]["steps"]] == ["1a2b", "3c9a"]
    assert patch["currentRevision"] == "9d2e7a11c0f3"


def test_plan_awaiting_approval_says_which_hash_to_set() -> None:
    spec = raw_spec(approval={"required": True})
    message = result(command="plan", applied=(), end=(), plan=("1a2b",), plan_hash="cd" * 16)
    _, verdict = finished(0, message, spec=spec)
    assert (verdict.phase, verdict.reason, verdict.ready, verdict.failed) == (
        "AwaitingApproval",
        "AwaitingApproval",
        False,
        False,
    )
    assert f"spec.approval.planHash to {'cd' * 16}" in verdict.message


def test_dry_run_success_does_not_move_current_revision() -> None:
    message = result(dry_run=True)
    run, verdict = finished(0, message, spec=raw_spec(mode="DryRun"))
    assert verdict.reason == "Planned" and "rolled back" in verdict.message
    patch = status_patch(current={}, verdict=verdict, generation=1, now=NOW, run=run)
    assert patch["currentRevision"] == "9d2e7a11c0f3"
    assert "previousRevision" not in patch


def test_running_job_reports_a_waiting_pod() -> None:
    """A pod stuck on a missing Secret key shows in the Running message."""
    j = job_for(state="active")
    run = observe_run(
        job=j,
        pods=[
            pod(
                job="shop-g1-abcdef",
                waiting=(
                    "CreateContainerConfigError",
                    "couldn't find key url in Secret shop/shop-db",
                ),
            )
        ],
    )
    verdict = running_verdict(run, queued_generation=2)
    assert (verdict.phase, verdict.reason, verdict.progressing) == ("Running", "Running", True)
    assert "CreateContainerConfigError" in verdict.message
    assert "generation 2 will be applied after it" in verdict.message


def test_history_keeps_the_last_ten_runs_newest_first() -> None:
    current = {"history": [{"job": f"shop-g{i}-aaaaaa"} for i in range(10, 0, -1)]}
    run, verdict = finished(0, result(), generation=11, name="shop-g11-bbbbbb")
    patch = status_patch(current=current, verdict=verdict, generation=11, now=NOW, run=run)
    assert len(patch["history"]) == 10
    assert patch["history"][0]["job"] == "shop-g11-bbbbbb"
    assert patch["history"][-1]["job"] == "shop-g2-aaaaaa"


def test_transition_time_changes_only_when_status_changes() -> None:
    """Same status, new reason: the time stays; a flip of status: the time moves."""
    first = merge([], [Desired("Ready", False, "Running", "a")], generation=1, now=NOW)
    same = merge(first, [Desired("Ready", False, "SecretNotFound", "b")], generation=2, now=LATER)
    assert same[0]["lastTransitionTime"] == NOW
    assert same[0]["reason"] == "SecretNotFound" and same[0]["observedGeneration"] == 2
    flipped = merge(same, [Desired("Ready", True, "Migrated", "c")], generation=2, now=LATER)
    assert flipped[0]["lastTransitionTime"] == LATER


def test_conditions_keep_types_not_mentioned() -> None:
    other: Condition = {"type": "Custom", "status": "True"}
    out = merge([other], [Desired("Ready", True, "Migrated", "m")], generation=1, now=NOW)
    assert [c["type"] for c in out] == ["Ready", "Custom"]


@pytest.mark.parametrize(
    ("state", "finished"), [("active", False), ("complete", True), ("failed", True)]
)
def test_a_job_is_finished_once_complete_or_failed_is_true(state: str, finished: bool) -> None:
    job = job_for(state=state)
    assert job_finished(job) is finished
    assert observe_run(job=job, pods=[]).active is not finished
    # A condition that is there but not True is no verdict.
    for condition in (job.get("status") or {}).get("conditions") or []:
        condition["status"] = "False"
    assert not job_finished(job)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "<0.01s"), (0.004, "<0.01s"), (0.006, "0.01s"), (0.04, "0.04s"), (1.34, "1.3s"),
     (95.2, "95s")],
)  # fmt: skip
def test_a_duration_never_claims_a_run_took_no_time(seconds: float, text: str) -> None:
    assert _seconds_text(seconds) == text
