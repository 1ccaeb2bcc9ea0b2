"""A revision left partially applied (MySQL/MariaDB, exit 8): a person must act, the operator won't.

The resource says so in its own reason, ``PartiallyApplied``, with a message
that names the revision, the statement that failed and why, the statements
that committed, and the way out (undo them, or finish the revision and
``revisor stamp``). Nothing runs again by itself: not on a Secret change,
and no rollback window opens over it. A new value of ``revisor.dev/retry``
(after the fix) does run it again.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from revisor.contract import ExitCode, PartiallyApplied, Result, Step
from revisor_operator.decisions.observe import Run, observe_run
from revisor_operator.decisions.partial import partially_applied_message
from revisor_operator.decisions.reconcile import Decision
from revisor_operator.decisions.rollback import window_after
from revisor_operator.decisions.rollout import parse_time
from revisor_operator.decisions.spec import parse_spec
from revisor_operator.decisions.status import MESSAGE_LIMIT, finished_verdict, status_patch

from .factories import LATER, NOW, job_for, pod, raw_spec
from .test_schema_moves_only_when_asked import World, refs

START, T2, HALF = "9d2e7a11c0f3", "1a2b3c4d5e6f", "0003h0000000"
FAILED_SQL = "SELECT * FROM no_such_table_anywhere"
CAUSE = "(1146, \"Table 'shop.no_such_table_anywhere' doesn't exist\")"
STATEMENTS = (
    "CREATE TABLE a ( id INTEGER NOT NULL AUTO_INCREMENT, PRIMARY KEY (id) )",
    "CREATE TABLE b ( id INTEGER NOT NULL AUTO_INCREMENT, PRIMARY KEY (id) )",
)
ENGINE_ERROR = (
    f"upgrade {HALF} (half of it) failed at versions/{HALF}_rev.py:22: {CAUSE} [SQL: "
    f"{FAILED_SQL}]; {HALF} is partially applied: ... Fix: undo them by hand and run again, "
    f"or finish {HALF} by hand, then `revisor stamp {HALF}`"
)


def partial_result(
    *,
    statements: tuple[str, ...] = STATEMENTS,
    committed: int = 2,
    direction: str = "upgrade",
    details: bool = True,
    target: str = "head",
) -> Result:
    partial = PartiallyApplied(
        revision=HALF,
        committed=committed,
        statements=statements,
        direction=direction,
        failed_statement=FAILED_SQL,
        cause=CAUSE,
        stamp=(HALF,) if direction == "upgrade" else (T2,),
    )
    return Result(
        command="apply",
        exit_code=ExitCode.PARTIALLY_APPLIED,
        direction="upgrade",
        target=target,
        from_revisions=(START,),
        to_revisions=(T2,),
        applied=(Step(revision=T2, direction="upgrade", seconds=0.1),),
        error=ENGINE_ERROR,
        started_at=NOW,
        finished_at=LATER,
        details=partial.to_details() if details else {},
    )


def finished_with(document: Result, *, spec: dict[str, Any] | None = None) -> Run:
    job = job_for(spec=spec, state="failed")
    message = document.to_json()
    return observe_run(
        job=job, pods=[pod(job=job["metadata"]["name"], exit_code=8, message=message)]
    )


def test_the_resource_says_partially_applied_with_the_revision_the_statements_and_the_fix() -> None:
    run = finished_with(partial_result())
    verdict = finished_verdict(run, lock_timeout_seconds=60)
    assert (verdict.phase, verdict.reason) == ("Failed", "PartiallyApplied")
    assert verdict.failed and not verdict.ready and not verdict.progressing
    message = verdict.message
    assert message.startswith(f"Migration to head stopped: revision {HALF} is partially applied")
    assert f'It failed at "{FAILED_SQL}" with {CAUSE} after' in message
    assert "after 2 of its statement(s) had committed on their own" in message
    assert f"the version table still says {T2}" in message
    assert f"(1) {STATEMENTS[0]}; (2) {STATEMENTS[1]}." in message
    assert f"finish revision {HALF} by hand and run `revisor stamp {HALF}`" in message
    assert "undo those statements by hand" in message
    assert "Not retried, and nothing was rolled back over it" in message
    assert "a change of the Secret" not in message, "a new Secret cures nothing here"
    patch = status_patch(current={}, verdict=verdict, generation=1, now=NOW, run=run)
    assert patch["currentRevision"] == T2 and patch["lastRun"]["exitCode"] == 8
    assert patch["lastRun"]["reason"] == "PartiallyApplied"
    assert ENGINE_ERROR.split(" [SQL", maxsplit=1)[0] in patch["lastRun"]["error"]


def test_many_long_statements_are_cut_and_counted_and_the_fix_stays_whole() -> None:
    long = tuple(f"ALTER TABLE t{i} ADD COLUMN c{i} " + "VARCHAR(255) " * 30 for i in range(3))
    statements = (*long, "… 94 more …", *long)
    verdict = finished_verdict(finished_with(partial_result(statements=statements, committed=100)))
    message = verdict.message
    assert len(message) <= MESSAGE_LIMIT
    assert "(1) ALTER TABLE t0 ADD COLUMN c0" in message
    assert "more (in lastRun.error and revisor history)" in message
    assert message.endswith(
        "then a new value of the annotation revisor.dev/retry (or a change of the spec) "
        "runs it again"
    )
    assert f"`revisor stamp {HALF}`" in message


def test_the_statements_after_the_engines_gap_keep_their_numbers() -> None:
    statements = ("CREATE TABLE a (id INT)", "… 5 more …", "CREATE TABLE z (id INT)")
    message = partially_applied_message(
        target="head",
        result=partial_result(statements=statements, committed=7),
        limit=MESSAGE_LIMIT,
    )
    assert "(1) CREATE TABLE a (id INT); (7) CREATE TABLE z (id INT); … 5 more" in message


def test_a_result_that_dropped_its_details_still_gives_the_engines_words_and_the_fix() -> None:
    verdict = finished_verdict(finished_with(partial_result(details=False)))
    assert verdict.reason == "PartiallyApplied"
    assert "stopped at a partially applied revision; the database is at " in verdict.message
    assert f"`revisor stamp {HALF}`" in verdict.message, "the engine's own fix, kept"
    assert "Not retried" in verdict.message


def test_a_partially_applied_downgrade_names_what_to_stamp_below_it() -> None:
    message = partially_applied_message(
        target=START, result=partial_result(direction="downgrade"), limit=MESSAGE_LIMIT
    )
    assert f"the downgrade of {HALF} is partially applied" in message
    assert f"finish the downgrade of {HALF} by hand and run `revisor stamp {T2}`" in message


def _record(world: World, document: Result) -> Decision:
    """The newest Job of ``world`` ends with ``document``; the operator records it."""
    job = world.jobs[-1]
    job["status"] = {
        "startTime": NOW,
        "completionTime": NOW,
        "conditions": [{"type": "Failed", "status": "True"}],
    }
    world.results[job["metadata"]["name"]] = (ExitCode.PARTIALLY_APPLIED, document.to_json())
    recorded = world.step()
    assert recorded.action == "record", recorded
    return recorded


def test_a_new_secret_does_not_run_it_again_a_retry_annotation_does() -> None:
    """Running the same revision over its own committed statements would fail on them, or
    worse: only a person who finished or undid it may ask for the next run."""
    world = World(raw_spec())
    assert world.step().action == "create"
    recorded = _record(world, partial_result())
    assert recorded.verdict is not None and recorded.verdict.reason == "PartiallyApplied"
    assert world.step().action == "nothing"
    world.references = refs(secret_version="2")
    again = world.step()
    assert again.action == "nothing" and again.job is None, "a changed Secret is no fix"
    assert len(world.jobs) == 1
    world.annotate(**{"revisor.dev/retry": "stamped-by-hand"})
    retry = world.step()
    assert retry.action == "create" and retry.job is not None
    assert len(world.jobs) == 2


@pytest.mark.parametrize("on_failure", ["Rollback", "Stop"])
def test_no_rollback_window_opens_over_a_partially_applied_revision(on_failure: str) -> None:
    """With rollback.deploymentRef, a failed Deployment must not downgrade over it."""
    spec = raw_spec(onFailure=on_failure, rollback={"deploymentRef": {"name": "web"}})
    run = finished_with(partial_result(), spec=spec)
    verdict = finished_verdict(run)
    now = parse_time(NOW)
    assert now is not None
    change = window_after(
        run=run, verdict=verdict, spec=parse_spec(spec), current=None, deployment=None, now=now
    )
    assert change.changed is False and change.rollout is None


def test_a_rollback_run_left_partially_applied_says_so_and_is_final() -> None:
    world = World(raw_spec(rollback={"deploymentRef": {"name": "web"}, "window": "2m"}))
    world.step()
    document = partial_result(direction="downgrade", target=START)
    rollback_job = copy.deepcopy(job_for(state="failed"))
    rollback_job["metadata"]["annotations"].update(
        {"revisor.dev/purpose": "rollback", "revisor.dev/deployment": "web"}
    )
    name = rollback_job["metadata"]["name"]
    run = observe_run(
        job=rollback_job, pods=[pod(job=name, exit_code=8, message=document.to_json())]
    )
    assert run.is_rollback
    verdict = finished_verdict(run)
    assert (verdict.phase, verdict.reason) == ("Failed", "PartiallyApplied")
    assert "Moving the database back, migration to" in verdict.message
    assert f"the downgrade of {HALF} is partially applied" in verdict.message
    assert f"`revisor stamp {T2}`" in verdict.message
    assert len(verdict.message) <= MESSAGE_LIMIT
