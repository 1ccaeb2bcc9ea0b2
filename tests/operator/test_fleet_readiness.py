"""`revisor-operator wait dbmset/NAME`: done only when the current rollout succeeded."""

from __future__ import annotations

from typing import Any

from revisor_operator.decisions.fleet.readiness import expected_rollout, judge_set

from .fleet_factories import SCRIPTS, raw_set_spec, rollout_of, set_body


def with_status(
    phase: str,
    *,
    rollout: str,
    reason: str = "Progressing",
    message: str = "m",
    generation: int = 1,
    ready: bool = False,
) -> dict[str, Any]:
    body = set_body(generation=generation)
    body["status"] = {
        "observedGeneration": generation,
        "phase": phase,
        "rollout": {"hash": rollout, "generation": 1},
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "reason": reason,
                "message": message,
            }
        ],
    }
    return body


def test_the_expected_rollout_is_the_operators() -> None:
    body = set_body()
    assert expected_rollout(body, scripts=SCRIPTS) == rollout_of(body)
    marked = set_body(annotations={"revisor.dev/release": "4"})
    assert expected_rollout(marked, scripts=SCRIPTS) != rollout_of(body)
    assert expected_rollout(set_body(raw_set_spec(template={})), scripts=SCRIPTS) is None


def test_ready_only_for_the_current_rollout() -> None:
    current = rollout_of(set_body())
    done = with_status("Succeeded", rollout=current, reason="RolloutComplete", ready=True)
    assert judge_set(done, expected=current).outcome == "Ready"
    assert judge_set(done, expected="new-scripts").outcome == "Waiting"
    assert judge_set(done, expected=None).outcome == "Waiting"


def test_a_halt_or_a_finish_with_failures_fails_the_wait_with_the_sets_words() -> None:
    current = rollout_of(set_body())
    halted = with_status(
        "Halted",
        rollout=current,
        reason="Halted",
        message="Halted at wave 1/2 (canary): target 'acme' failed: boom",
    )
    progress = judge_set(halted, expected=current)
    assert progress.outcome == "Failed"
    assert "'acme' failed: boom" in progress.message
    finished = with_status("Failed", rollout=current, reason="TargetsFailed")
    assert judge_set(finished, expected=current).outcome == "Failed"


def test_an_unobserved_generation_is_waited_for() -> None:
    body = with_status("Succeeded", rollout="x", ready=True, generation=1)
    body["metadata"]["generation"] = 2
    progress = judge_set(body, expected="x")
    assert progress.outcome == "Waiting"
    assert "generation 2" in progress.message


def test_an_invalid_spec_or_a_query_that_never_answered_fails_at_once() -> None:
    invalid = with_status("Failed", rollout="", reason="InvalidSpec", message="spec.x: bad")
    assert judge_set(invalid, expected=None).outcome == "Failed"
    query = with_status("Failed", rollout="", reason="SchemasQueryFailed")
    assert judge_set(query, expected="r").outcome == "Failed"


def test_progress_is_waited_for() -> None:
    current = rollout_of(set_body())
    going = with_status("Progressing", rollout=current, message="Rollout 1, wave 1/1: 3/5 Ready")
    progress = judge_set(going, expected=current)
    assert progress.outcome == "Waiting"
    assert "3/5 Ready" in progress.message
