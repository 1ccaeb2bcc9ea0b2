"""Ready, Progressing and Failed on the status the operator writes, through a run's life.

Each case takes the status patch :func:`revisor_operator.decisions.reconcile.decide`
returns — what the handlers write — rather than a verdict alone: a Job being
created or running is Progressing (and not yet Ready), a success is Ready
and neither Progressing nor Failed, a failure is Failed with the engine's
reason, and a resource that cannot run is Failed without ever Progressing.
"""

from __future__ import annotations

from typing import Any

import pytest
from revisor.contract import ExitCode
from revisor_operator.decisions.bodies import JsonDict
from revisor_operator.decisions.observe import observe_run
from revisor_operator.decisions.reconcile import Decision
from revisor_operator.decisions.references import References, SecretCheck

from .factories import LATER, NOW, decide_on, job_for, migration, pod, result
from .test_reconcile import OK_REFS


def conditions(decision: Decision) -> dict[str, tuple[str, str]]:
    """Condition type -> (status, reason) of the status ``decision`` writes."""
    assert decision.status is not None, decision
    return {c["type"]: (c["status"], c["reason"]) for c in decision.status["conditions"]}


def _decide(status: JsonDict | None = None, runs: Any = (), now: str = NOW, **kw: Any) -> Decision:
    return decide_on(
        migration(status=status), runs=list(runs), references=kw.get("references", OK_REFS), now=now
    )


def _finished(code: ExitCode, **result_args: Any) -> Any:
    job = job_for(state="complete" if code is ExitCode.OK else "failed")
    message = result(code, **result_args)
    name = job["metadata"]["name"]
    return observe_run(job=job, pods=[pod(job=name, exit_code=int(code), message=message)])


def test_creating_the_job_is_progressing_and_not_yet_ready() -> None:
    decision = _decide()
    assert decision.action == "create"
    assert conditions(decision) == {
        "Ready": ("False", "Running"),
        "Progressing": ("True", "Running"),
        "Failed": ("False", "Running"),
    }


def test_a_running_job_is_progressing_and_not_yet_ready() -> None:
    running = observe_run(job=job_for(state="active"), pods=[pod(job="shop-g1-abcdef")])
    decision = _decide(runs=[running])
    assert decision.action == "wait"
    assert decision.status is not None and decision.status["phase"] == "Running"
    assert conditions(decision) == {
        "Ready": ("False", "Running"),
        "Progressing": ("True", "Running"),
        "Failed": ("False", "Running"),
    }


def test_success_is_ready_and_neither_progressing_nor_failed() -> None:
    decision = _decide(runs=[_finished(ExitCode.OK)])
    assert decision.action == "record"
    assert conditions(decision) == {
        "Ready": ("True", "Migrated"),
        "Progressing": ("False", "Migrated"),
        "Failed": ("False", "Migrated"),
    }


@pytest.mark.parametrize(
    ("code", "args", "phase", "reason"),
    [
        (ExitCode.MIGRATION_FAILED, {"error": "boom"}, "Failed", "MigrationFailed"),
        (ExitCode.MIGRATION_FAILED, {"error": "boom", "rolled_back": True}, "RolledBack", "RolledBack"),
        (ExitCode.LOCK_TIMEOUT, {"error": "held", "applied": ()}, "Failed", "LockTimeout"),
        (ExitCode.BAD_INPUT, {"error": "no such revision", "applied": (), "detail_reason": "InvalidTarget"}, "Failed", "InvalidTarget"),
    ],
    ids=["failed", "rolled-back", "lock-timeout", "invalid-target"],
)  # fmt: skip
def test_a_failure_is_failed_with_the_engines_reason(
    code: ExitCode, args: dict[str, Any], phase: str, reason: str
) -> None:
    decision = _decide(runs=[_finished(code, **args)])
    assert decision.action == "record"
    assert decision.status is not None and decision.status["phase"] == phase
    assert conditions(decision) == {
        "Ready": ("False", reason),
        "Progressing": ("False", reason),
        "Failed": ("True", reason),
    }
    failed = next(c for c in decision.status["conditions"] if c["type"] == "Failed")
    assert failed["message"] == decision.status["lastRun"]["message"] != ""


def test_a_resource_that_cannot_run_is_failed_and_never_progressing() -> None:
    missing = References(
        secret=SecretCheck(name="shop-db", exists=False), config_map=OK_REFS.config_map
    )
    decision = _decide(references=missing)
    assert decision.action == "report" and decision.job is None
    assert conditions(decision) == {
        "Ready": ("False", "SecretNotFound"),
        "Progressing": ("False", "SecretNotFound"),
        "Failed": ("True", "SecretNotFound"),
    }


def test_progressing_turns_false_when_the_run_ends_and_only_changed_conditions_move() -> None:
    """lastTransitionTime moves for Progressing and Ready; Failed stayed False, so its does not."""
    started = _decide(now=NOW)
    assert started.status is not None
    ended = _decide(status=started.status, runs=[_finished(ExitCode.OK)], now=LATER)
    assert ended.status is not None
    since = {c["type"]: c["lastTransitionTime"] for c in ended.status["conditions"]}
    assert since == {"Ready": LATER, "Progressing": LATER, "Failed": NOW}
    assert all(c["observedGeneration"] == 1 for c in ended.status["conditions"])
