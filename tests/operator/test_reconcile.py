"""The decision table: from what exists to the one next step."""

from __future__ import annotations

from typing import Any

from revisor.contract import ExitCode
from revisor_operator.decisions.observe import Run, observe_run
from revisor_operator.decisions.reconcile import Decision
from revisor_operator.decisions.references import ConfigMapCheck, References, SecretCheck

from .factories import decide_on, job_for, migration, pod, raw_spec, result

OK_REFS = References(
    secret=SecretCheck(name="shop-db", exists=True, keys=frozenset({"url"})),
    config_map=ConfigMapCheck(name="shop-migrations", exists=True, fingerprint="c" * 64),
)


def run_decide(
    body: Any = None, runs: list[Run] | None = None, refs: References | None = OK_REFS
) -> Decision:
    return decide_on(body or migration(), runs=runs or [], references=refs)


def finished_run(*, generation: int = 1, name: str | None = None, code: int = 0) -> Run:
    j = job_for(generation=generation, name=name, state="complete" if code == 0 else "failed")
    message = result(ExitCode(code), error=None if code == 0 else "boom")
    return observe_run(
        job=j, pods=[pod(job=j["metadata"]["name"], exit_code=code, message=message)]
    )


def test_new_resource_creates_one_job_and_says_so() -> None:
    decision = run_decide()
    assert decision.action == "create"
    assert decision.job is not None
    assert decision.job["metadata"]["name"].startswith("shop-g1-")
    assert decision.status is not None and decision.status["phase"] == "Running"
    assert decision.event is not None and decision.event.reason == "Running"


def test_same_inputs_give_the_same_job_name() -> None:
    """A restarted operator computes the name of the Job it created before (then 409 adopts)."""
    first, second = run_decide(), run_decide()
    assert first.job is not None and second.job is not None
    assert first.job["metadata"]["name"] == second.job["metadata"]["name"]


def test_running_job_is_waited_for_not_duplicated() -> None:
    active = observe_run(job=job_for(state="active"), pods=[])
    decision = run_decide(runs=[active])
    assert decision.action == "wait"
    assert decision.job is None
    assert decision.status is not None and decision.status["phase"] == "Running"


def test_spec_change_during_a_run_waits_for_it() -> None:
    """Generation 2 arrives while generation 1 runs: wait, and say 2 comes next."""
    active = observe_run(job=job_for(state="active", generation=1), pods=[])
    decision = run_decide(migration(generation=2), runs=[active])
    assert decision.action == "wait"
    assert decision.status is not None
    assert decision.status["observedGeneration"] == 1
    assert "generation 2 will be applied after it" in decision.status["conditions"][0]["message"]


def test_finished_job_is_recorded_once() -> None:
    run = finished_run()
    decision = run_decide(runs=[run])
    assert decision.action == "record"
    assert decision.status is not None and decision.status["lastRun"]["job"] == run.job
    assert decision.event is not None and decision.event.type == "Normal"
    recorded = migration(status=decision.status)
    again = run_decide(recorded, runs=[run])
    assert again.action != "record"


def test_failed_run_is_recorded_with_a_warning_event() -> None:
    decision = run_decide(runs=[finished_run(code=4)])
    assert decision.action == "record"
    assert decision.event is not None and decision.event.type == "Warning"


def test_after_recording_the_old_generation_the_new_one_runs() -> None:
    run = finished_run(generation=1)
    recorded = run_decide(runs=[run])
    assert recorded.status is not None
    decision = run_decide(migration(generation=2, status=recorded.status), runs=[run])
    assert decision.action == "create"
    assert decision.job is not None and decision.job["metadata"]["name"].startswith("shop-g2-")


def test_desired_run_already_done_means_nothing_to_do() -> None:
    created = run_decide()
    assert created.job is not None
    name = created.job["metadata"]["name"]
    run = finished_run(name=name)
    recorded = run_decide(runs=[run])
    assert recorded.status is not None
    assert run_decide(migration(status=recorded.status), runs=[run]).action == "nothing"
    # ...and still nothing once the Job is gone (TTL): status remembers it.
    assert run_decide(migration(status=recorded.status), runs=[]).action == "nothing"


def test_config_map_content_change_starts_a_new_run() -> None:
    created = run_decide()
    assert created.job is not None
    run = finished_run(name=created.job["metadata"]["name"])
    status = run_decide(runs=[run]).status
    changed = References(
        secret=OK_REFS.secret,
        config_map=ConfigMapCheck(name="shop-migrations", exists=True, fingerprint="d" * 64),
    )
    decision = run_decide(migration(status=status), runs=[run], refs=changed)
    assert decision.action == "create"


def test_retry_annotation_reruns_an_unchanged_spec() -> None:
    created = run_decide()
    assert created.job is not None
    run = finished_run(name=created.job["metadata"]["name"], code=4)
    status = run_decide(runs=[run]).status
    body = migration(status=status)
    body["metadata"]["annotations"] = {"revisor.dev/retry": "1"}
    assert run_decide(body, runs=[run]).action == "create"


def test_missing_secret_says_what_to_create_and_makes_no_job() -> None:
    refs = References(
        secret=SecretCheck(name="shop-db", exists=False), config_map=OK_REFS.config_map
    )
    decision = run_decide(refs=refs)
    assert decision.action == "report"
    assert decision.job is None
    assert decision.status is not None and decision.status["phase"] == "Pending"
    ready = decision.status["conditions"][0]
    assert ready["reason"] == "SecretNotFound"
    assert ready["message"].startswith("Secret shop/shop-db not found: create it with key 'url'")
    assert decision.event is not None and decision.event.type == "Warning"


def test_secret_without_the_key_names_the_key() -> None:
    refs = References(
        secret=SecretCheck(name="shop-db", exists=True, keys=frozenset({"uri"})),
        config_map=OK_REFS.config_map,
    )
    decision = run_decide(refs=refs)
    assert decision.status is not None
    assert "has no key 'url'" in decision.status["conditions"][0]["message"]


def test_missing_config_map_says_how_to_create_it() -> None:
    refs = References(
        secret=OK_REFS.secret, config_map=ConfigMapCheck(name="shop-migrations", exists=False)
    )
    decision = run_decide(refs=refs)
    assert decision.action == "report" and decision.job is None
    assert decision.status is not None
    ready = decision.status["conditions"][0]
    assert ready["reason"] == "ConfigMapNotFound"
    assert "kubectl -n shop create configmap shop-migrations --from-file=" in ready["message"]


def test_unchanged_problem_is_not_rewritten_or_re_announced() -> None:
    refs = References(
        secret=SecretCheck(name="shop-db", exists=False), config_map=OK_REFS.config_map
    )
    first = run_decide(refs=refs)
    again = run_decide(migration(status=first.status), refs=refs)
    assert again.action == "report"
    assert again.status is None and again.event is None


def test_invalid_target_is_reported_without_a_job() -> None:
    decision = run_decide(migration(spec=raw_spec(target="head+")), refs=None)
    assert decision.action == "report" and decision.job is None
    assert decision.status is not None
    assert decision.status["phase"] == "Failed"
    assert decision.status["conditions"][0]["reason"] == "InvalidTarget"


def test_invalid_spec_is_reported_without_a_job() -> None:
    decision = run_decide(migration(spec=raw_spec(source={})), refs=None)
    assert decision.status is not None
    assert decision.status["conditions"][0]["reason"] == "InvalidSpec"


def test_reappearing_secret_restores_the_last_verdict() -> None:
    """Secret deleted after a success, then recreated: Ready comes back, no re-run."""
    created = run_decide()
    assert created.job is not None
    run = finished_run(name=created.job["metadata"]["name"])
    status = run_decide(runs=[run]).status
    missing = References(
        secret=SecretCheck(name="shop-db", exists=False), config_map=OK_REFS.config_map
    )
    problem = run_decide(migration(status=status), runs=[], refs=missing)
    assert problem.status is not None
    merged = {**(status or {}), **problem.status}
    back = run_decide(migration(status=merged), runs=[])
    assert back.action == "report"
    assert back.status is not None
    assert back.status["phase"] == "Succeeded"
    assert back.status["conditions"][0]["reason"] == "Migrated"


def test_deleting_resource_gets_no_new_job() -> None:
    assert run_decide(migration(deleting=True)).action == "nothing"


def test_deleting_resource_still_records_its_last_run() -> None:
    assert run_decide(migration(deleting=True), runs=[finished_run()]).action == "record"


def test_approval_flow_plans_then_waits_then_applies_the_approved_hash() -> None:
    spec = raw_spec(approval={"required": True})
    planned = run_decide(migration(spec=spec))
    assert planned.job is not None
    assert planned.status is not None and planned.status["phase"] == "Planning"
    command = planned.job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "plan" in command
    name = planned.job["metadata"]["name"]
    j = job_for(spec=spec, name=name, state="complete")
    plan_result = result(command="plan", applied=(), end=(), plan=("1a2b",), plan_hash="ab" * 16)
    run = observe_run(job=j, pods=[pod(job=name, exit_code=0, message=plan_result)])
    waiting = run_decide(migration(spec=spec), runs=[run])
    assert waiting.status is not None and waiting.status["phase"] == "AwaitingApproval"
    assert run_decide(migration(spec=spec, status=waiting.status), runs=[run]).action == "nothing"
    approved = raw_spec(approval={"required": True, "planHash": "ab" * 16})
    apply = run_decide(migration(spec=approved, generation=2, status=waiting.status), runs=[run])
    assert apply.action == "create" and apply.job is not None
    argv = apply.job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert argv[argv.index("--expect-plan-hash") + 1] == "ab" * 16


def test_a_stale_approval_waits_for_the_new_plan_to_be_approved() -> None:
    """The engine refuses a changed plan and says the new one; the resource asks for it.

    Nothing was changed, so the resource is not Failed: it awaits approval
    again, with the new steps and full hash in ``status.plan``, and no Job
    runs until ``spec.approval.planHash`` names that hash.
    """
    approved = raw_spec(approval={"required": True, "planHash": "ab" * 16})
    apply = run_decide(migration(spec=approved, generation=2))
    assert apply.job is not None
    name = apply.job["metadata"]["name"]
    refused = result(
        ExitCode.BAD_INPUT,
        applied=(),
        start=("9d2e7a11c0f3",),
        end=("9d2e7a11c0f3",),
        plan=("3c9a1f0b2e44", "77aa"),
        plan_hash="cd" * 16,
        error="the plan changed since it was approved",
        detail_reason="PlanChanged",
    )
    j = job_for(spec=approved, name=name, state="failed", generation=2)
    run = observe_run(job=j, pods=[pod(job=name, exit_code=2, message=refused)])
    stale = run_decide(migration(spec=approved, generation=2), runs=[run])
    assert stale.status is not None
    assert stale.status["phase"] == "AwaitingApproval"
    assert stale.status["plan"]["hash"] == "cd" * 16
    assert [s["revision"] for s in stale.status["plan"]["steps"]] == ["3c9a1f0b2e44", "77aa"]
    conditions = {c["type"]: c for c in stale.status["conditions"]}
    assert conditions["Ready"]["reason"] == "PlanChanged"
    assert "spec.approval.planHash to " + "cd" * 16 in conditions["Ready"]["message"]
    assert [conditions[t]["status"] for t in ("Ready", "Progressing", "Failed")] == ["False"] * 3
    settled = migration(spec=approved, generation=2, status=stale.status)
    assert run_decide(settled, runs=[run]).action == "nothing"
    again = raw_spec(approval={"required": True, "planHash": "cd" * 16})
    second = run_decide(migration(spec=again, generation=3, status=stale.status), runs=[run])
    assert second.action == "create" and second.job is not None
    argv = second.job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert argv[argv.index("--expect-plan-hash") + 1] == "cd" * 16
