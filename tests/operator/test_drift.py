"""spec.drift: when a check runs, what its Job is, what the resource says, and how Block refuses."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from revisor.contract import DriftDetails, ExitCode, Reason, Result
from revisor_operator.adapters import metrics
from revisor_operator.decisions.bodies import Job, Migration
from revisor_operator.decisions.drift import (
    CHECK_JOB_TTL_SECONDS,
    check_job_name,
    check_request,
    due,
)
from revisor_operator.decisions.jobs import Owner, build_job, engine_request
from revisor_operator.decisions.observe import Run, observe_run
from revisor_operator.decisions.readiness import judge_wait
from revisor_operator.decisions.reconcile import Decision
from revisor_operator.decisions.rollout import parse_time
from revisor_operator.decisions.spec import InvalidSpec, parse_spec

from .factories import DEFAULTS, LATER, NOW, decide_on, migration, pod, raw_spec, result
from .test_reconcile import OK_REFS

HASH = "a" * 64
OTHER_HASH = "b" * 64
DIFFERENCES = (
    "~ column orders.status: VARCHAR(20) -> VARCHAR(40)",
    "+ index ix_orders_total on orders(total_cents)",
    "+ table tmp_import (2 columns)",
    "- index ix_customers_email",
)


def spec_with(**drift: Any) -> dict[str, Any]:
    return raw_spec(drift=drift)


def decide(body: Migration, runs: list[Run] | None = None, now: str = LATER) -> Decision:
    return decide_on(body, runs=runs or [], references=OK_REFS, now=now)


def settle(body: Migration, runs: list[Run]) -> Migration:
    """The resource once its runs are recorded (as the operator's passes would)."""
    body = copy.deepcopy(body)
    for _ in range(5):
        decision = decide(body, runs)
        if decision.action not in ("record", "drift") or decision.status is None:
            return body
        body["status"] = {**(body.get("status") or {}), **decision.status}
        body["status"] = {k: v for k, v in body["status"].items() if v is not None}
    return body


def finished_migration(body: Migration) -> tuple[Migration, Run]:
    """Its desired run, created and finished successfully, and recorded."""
    created = decide(body)
    assert created.action == "create" and created.job is not None, created
    return ran(body, created.job)


def ran(body: Migration, job: Job) -> tuple[Migration, Run]:
    """Migration Job ``job`` finished successfully, and recorded."""
    job = finish(job, code=0, message=result())
    run = observe_run(
        job=job, pods=[pod(job=job["metadata"]["name"], exit_code=0, message=result())]
    )
    return settle(body, [run]), run


def finish(job: Job, *, code: int, message: str) -> Job:
    job = copy.deepcopy(job)
    job["metadata"]["creationTimestamp"] = NOW
    if code == 0:
        job["status"] = {
            "conditions": [{"type": "Complete", "status": "True"}],
            "completionTime": LATER,
        }
    else:
        job["status"] = {
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "PodFailurePolicy",
                    "lastTransitionTime": LATER,
                }
            ]
        }
    return job


def drift_result(
    reason: str, *, drifted: bool = True, accepted: bool = False, live: str = HASH
) -> str:
    code = ExitCode.MISMATCH if reason == Reason.DRIFTED else ExitCode.OK
    details: dict[str, Any] = {}
    error = None
    if reason == Reason.NO_SNAPSHOT:
        code = ExitCode.BAD_INPUT
        error = "no schema snapshot is recorded for revision 3c9a1f0b2e44"
    else:
        details = DriftDetails.bounded(
            differences=DIFFERENCES if drifted else (),
            drifted=drifted,
            hash=live,
            recorded_hash="c" * 64,
            recorded_at="2025-01-02T03:00:00Z",
            recorded_by="apply",
            accepted=accepted,
        ).to_details()
    if code is ExitCode.MISMATCH:
        error = f"schema drift at 3c9a1f0b2e44: 4 difference(s); revisor drift --accept {live}"
    return Result(
        command="drift",
        exit_code=code,
        from_revisions=("3c9a1f0b2e44",),
        to_revisions=("3c9a1f0b2e44",),
        error=error,
        started_at=LATER,
        finished_at=LATER,
        details=details,
        detail_reason=reason,
    ).to_json()


def check_ran(decision: Decision, message: str) -> Run:
    """The drift check ``decision`` created, finished with ``message`` as its result."""
    assert decision.action == "check" and decision.job is not None, decision
    code = int(Result.from_json(message).exit_code)
    job = finish(decision.job, code=code, message=message)
    return observe_run(
        job=job, pods=[pod(job=job["metadata"]["name"], exit_code=code, message=message)]
    )


def conditions(body: Any) -> dict[str, dict[str, Any]]:
    """A resource's (or a status patch's) conditions by type."""
    status: dict[str, Any] = body.get("status") or body
    return {c["type"]: c for c in status.get("conditions") or []}


# -- the spec ---------------------------------------------------------------------------------


def test_drift_and_baseline_are_read_from_the_spec() -> None:
    spec = parse_spec(
        raw_spec(
            drift={"interval": "1h", "policy": "Block", "acceptedHash": HASH, "ignore": ["tmp_*"]},
            baseline="head",
        )
    )
    assert spec.drift is not None
    assert (spec.drift.interval_seconds, spec.drift.policy, spec.drift.accepted_hash) == (
        3600,
        "Block",
        HASH,
    )
    assert spec.drift.ignore == ("tmp_*",) and spec.drift.blocks
    assert spec.baseline == "head"
    assert parse_spec(raw_spec()).drift is None
    assert parse_spec(raw_spec(drift={})).drift is not None


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ({"drift": {"interval": "30s"}}, "spec.drift.interval", "at least 1m"),
        ({"drift": {"interval": "soon"}}, "spec.drift.interval", "not a duration"),
        ({"drift": {"policy": "Ignore"}}, "spec.drift.policy", "not one of Report, Block"),
        ({"drift": {"acceptedHash": "ABC"}}, "spec.drift.acceptedHash", "status.drift.hash"),
        ({"drift": {"ignore": "tmp_*"}}, "spec.drift.ignore", "a list"),
        ({"drift": {"ignore": [""]}}, "spec.drift.ignore", "not a pattern"),
        ({"baseline": "base"}, "spec.baseline", "head for a database create_all() built"),
        ({"baseline": "-1"}, "spec.baseline", "not a revision to adopt"),
    ],
)
def test_a_bad_drift_or_baseline_field_is_named_with_its_fix(
    raw: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_spec(raw_spec(**raw))
    [problem] = caught.value.problems
    assert problem.field == field
    assert words in problem.text


def test_baseline_reaches_every_run_of_the_engine() -> None:
    spec = parse_spec(raw_spec(baseline="9d2e7a11c0f3"))
    owner = Owner(name="shop", namespace="shop", uid="u", generation=1)
    job = build_job(
        owner=owner, spec=spec, name="shop-g1-abcdef", fingerprint="f" * 64, defaults=DEFAULTS
    )
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--baseline") + 1] == "9d2e7a11c0f3"
    plan = parse_spec(raw_spec(baseline="head", mode="Plan"))
    assert "--baseline" in engine_request(plan).to_argv()


# -- the check's Job -----------------------------------------------------------------------------


def test_the_check_is_the_engines_drift_command_with_the_specs_sources() -> None:
    spec = parse_spec(
        raw_spec(
            drift={"acceptedHash": HASH, "ignore": ["tmp_*", "-odd"]},
            versionTable={"name": "versions"},
            lock={"timeoutSeconds": 5},
            baseline="head",
        )
    )
    argv = check_request(spec).to_argv()
    assert argv[argv.index("--scripts") + 1] == "/scripts"
    assert argv[argv.index("--version-table") + 1] == "versions"
    assert argv[argv.index("--output") + 1] == "json"
    assert argv[argv.index("drift") :] == [
        "drift",
        "--lock-timeout",
        "5",
        "--ignore=tmp_*",
        "--ignore=-odd",
        "--accept",
        HASH,
    ]
    assert "--baseline" not in argv and "--" not in argv


def test_a_check_job_is_bounded_and_unprivileged_like_a_migration() -> None:
    body, _ = finished_migration(migration(spec=spec_with()))
    decision = decide(body)
    assert decision.action == "check" and decision.job is not None
    check = decision.job
    migration_job = decide(migration()).job
    assert migration_job is not None
    mine, theirs = check["spec"]["template"]["spec"], migration_job["spec"]["template"]["spec"]
    assert mine["automountServiceAccountToken"] is False
    assert mine["securityContext"] == theirs["securityContext"]
    assert mine["volumes"] == theirs["volumes"]
    for key in ("securityContext", "resources", "env", "volumeMounts", "image"):
        assert mine["containers"][0][key] == theirs["containers"][0][key], key
    assert check["spec"]["activeDeadlineSeconds"] == migration_job["spec"]["activeDeadlineSeconds"]
    assert check["spec"]["podFailurePolicy"] == migration_job["spec"]["podFailurePolicy"]
    assert check["spec"]["ttlSecondsAfterFinished"] == CHECK_JOB_TTL_SECONDS
    assert check["metadata"]["annotations"]["revisor.dev/purpose"] == "drift"
    assert (
        check["metadata"]["ownerReferences"][0]["uid"]
        == migration_job["metadata"]["ownerReferences"][0]["uid"]
    )
    assert "drift" in mine["containers"][0]["command"]


@given(
    st.text(min_size=1, max_size=253, alphabet="abcdefghijklmnopqrstuvwxyz0123456789-."),
    st.text(max_size=60),
    st.text(max_size=60),
)
def test_check_names_fit_a_job_and_follow_the_situation(
    owner: str, desired: str, request: str
) -> None:
    spec = parse_spec(spec_with())
    name = check_job_name(
        owner, spec=spec, desired=desired, after="a", request=request, previous=""
    )
    assert len(name) <= 63 and "-drift-" in name
    assert name == check_job_name(
        owner, spec=spec, desired=desired, after="a", request=request, previous=""
    )
    assert name != check_job_name(
        owner, spec=spec, desired=desired, after="a", request=request, previous=name
    )


# -- when a check is due ------------------------------------------------------------------------


def test_nothing_is_checked_without_spec_drift_or_before_a_run() -> None:
    body, _ = finished_migration(migration())
    assert decide(body).action == "nothing"
    drift = parse_spec(spec_with(interval="1m")).drift
    now = parse_time(LATER)
    assert now is not None
    assert due(drift, status={}, request="x", now=now) is None


def test_a_check_follows_each_successful_run_and_is_not_repeated() -> None:
    body, _ = finished_migration(migration(spec=spec_with()))
    decision = decide(body)
    assert decision.action == "check" and decision.status is None
    assert decide(body).job == decision.job, (
        "the same situation, the same Job (a restart adopts it)"
    )
    check = check_ran(decision, drift_result(Reason.NO_DRIFT, drifted=False))
    body = settle(body, [check])
    assert body["status"]["drift"]["afterRun"] == body["status"]["lastRun"]["job"]
    assert decide(body, [check]).action == "nothing"


def test_a_failed_run_is_not_followed_by_a_check() -> None:
    body = migration(spec=spec_with())
    created = decide(body)
    assert created.job is not None
    message = result(ExitCode.MIGRATION_FAILED, error="boom", applied=())
    job = finish(created.job, code=4, message=message)
    run = observe_run(
        job=job, pods=[pod(job=job["metadata"]["name"], exit_code=4, message=message)]
    )
    assert decide(settle(body, [run]), [run]).action == "nothing"


def test_an_interval_schedules_checks_after_the_last_one_finished() -> None:
    body, _ = finished_migration(migration(spec=spec_with(interval="1h")))
    check = check_ran(decide(body), drift_result(Reason.NO_DRIFT, drifted=False))
    body = settle(body, [check])
    checked = parse_time(body["status"]["drift"]["checkedAt"])
    assert checked is not None
    soon = (checked + timedelta(minutes=59)).isoformat()
    later = (checked + timedelta(minutes=60)).isoformat()
    assert decide(body, [check], now=soon).action == "nothing"
    again = decide(body, [check], now=later)
    assert again.action == "check" and again.job is not None
    assert again.job["metadata"]["name"] != check.job


def test_the_annotation_asks_for_a_check_once_per_value() -> None:
    body, _ = finished_migration(migration(spec=spec_with()))
    check = check_ran(decide(body), drift_result(Reason.NO_DRIFT, drifted=False))
    body = settle(body, [check])
    body["metadata"]["annotations"] = {"revisor.dev/drift-check": "1"}
    asked = decide(body, [check])
    assert asked.action == "check" and asked.job is not None
    answered = check_ran(asked, drift_result(Reason.NO_DRIFT, drifted=False))
    body = settle(body, [check, answered])
    assert body["status"]["drift"]["request"] == "1"
    assert decide(body, [check, answered]).action == "nothing"


def test_a_running_check_is_waited_for_without_a_status_write() -> None:
    body, _ = finished_migration(migration(spec=spec_with()))
    created = decide(body)
    assert created.job is not None
    running = observe_run(job=job_for_check(created.job), pods=[])
    decision = decide(body, [running])
    assert decision.action == "wait" and decision.status is None


def job_for_check(job: Job) -> Job:
    job = copy.deepcopy(job)
    job["metadata"]["creationTimestamp"] = NOW
    job["status"] = {"active": 1}
    return job


def test_no_check_while_a_rollback_window_is_open() -> None:
    body, _ = finished_migration(migration(spec=spec_with()))
    body["status"]["rollout"] = {
        "state": "Watching",
        "job": "someone-else",
        "generation": 1,
        "deployment": "web",
        "since": NOW,
        "until": "2099-01-01T00:00:00Z",
    }
    assert decide(body).action == "nothing"


# -- what a check says ---------------------------------------------------------------------------


def test_drift_is_a_true_condition_with_the_first_differences_and_the_hash_to_accept() -> None:
    body, _ = finished_migration(migration(spec=spec_with()))
    decision = decide(body)
    check = check_ran(decision, drift_result(Reason.DRIFTED))
    recorded = decide(body, [check])
    assert recorded.action == "drift" and recorded.status is not None
    drifted = conditions(recorded.status)["Drifted"]
    assert (drifted["status"], drifted["reason"]) == ("True", "Drifted")
    assert drifted["message"].startswith(
        "Schema drift at 3c9a1f0b2e44: 4 difference(s) from the schema recorded "
        "2025-01-02T03:00:00Z by apply: ~ column orders.status: VARCHAR(20) -> VARCHAR(40); "
        "+ index ix_orders_total on orders(total_cents); + table tmp_import (2 columns) "
        "(and 1 more in status.drift)"
    )
    assert f"set spec.drift.acceptedHash to {HASH}" in drifted["message"]
    assert recorded.status["drift"]["differences"] == list(DIFFERENCES)
    assert recorded.status["drift"]["hash"] == HASH and recorded.status["drift"]["drifted"] is True
    assert recorded.event is not None and (recorded.event.type, recorded.event.reason) == (
        "Warning",
        "Drifted",
    )
    # Ready is about the target, not about drift: it stays as the run left it.
    assert conditions(recorded.status)["Ready"]["status"] == "True"


def test_an_event_only_when_the_answer_changes() -> None:
    body, _ = finished_migration(migration(spec=spec_with()))
    first = check_ran(decide(body), drift_result(Reason.DRIFTED))
    body = settle(body, [first])
    body["metadata"]["annotations"] = {"revisor.dev/drift-check": "again"}
    same = check_ran(decide(body, [first]), drift_result(Reason.DRIFTED))
    assert decide(body, [first, same]).event is None
    more = check_ran(decide(body, [first]), drift_result(Reason.DRIFTED, live=OTHER_HASH))
    assert decide(body, [first, more]).event is not None, "more drift: a new hash is news"
    gone = check_ran(decide(body, [first]), drift_result(Reason.NO_DRIFT, drifted=False))
    news = decide(body, [first, gone])
    assert news.event is not None and (news.event.type, news.event.reason) == ("Normal", "NoDrift")
    assert news.status is not None
    assert conditions(news.status)["Drifted"]["status"] == "False"


def test_no_snapshot_is_unknown_not_drift_and_says_how_to_record_one() -> None:
    body, _ = finished_migration(migration(spec=spec_with()))
    check = check_ran(decide(body), drift_result(Reason.NO_SNAPSHOT))
    recorded = decide(body, [check])
    assert recorded.status is not None
    unknown = conditions(recorded.status)["Drifted"]
    assert (unknown["status"], unknown["reason"]) == ("Unknown", "NoSnapshot")
    assert unknown["message"].startswith(
        "Not drift: no schema snapshot is recorded for 3c9a1f0b2e44"
    )
    assert "kubectl annotate dbm/shop revisor.dev/retry=$(date +%s)" in unknown["message"]
    assert "drifted" not in recorded.status["drift"]


def test_a_database_at_base_has_nothing_to_compare_with_and_that_is_no_warning() -> None:
    """Block's check before the very first run: no revision, hence no snapshot, and fine."""
    body = migration(spec=spec_with(policy="Block"))
    fresh = Result(
        command="drift",
        exit_code=ExitCode.BAD_INPUT,
        error="no schema snapshot is recorded for revision base",
        detail_reason=Reason.NO_SNAPSHOT,
    ).to_json()
    recorded = decide(body, [check_ran(decide(body), fresh)])
    assert recorded.status is not None and recorded.event is not None
    unknown = conditions(recorded.status)["Drifted"]
    assert (unknown["status"], unknown["reason"]) == ("Unknown", "NoSnapshot")
    assert unknown["message"].startswith(
        "Nothing to compare with yet: the database has no revision"
    )
    assert recorded.event.type == "Normal"


def test_a_check_that_could_not_tell_is_unknown_with_its_reason() -> None:
    body, _ = finished_migration(migration(spec=spec_with()))
    decision = decide(body)
    assert decision.job is not None
    job = finish(decision.job, code=3, message="")
    failed = observe_run(job=job, pods=[])
    recorded = decide(body, [failed])
    assert recorded.status is not None
    unknown = conditions(recorded.status)["Drifted"]
    assert (unknown["status"], unknown["reason"]) == ("Unknown", "JobFailed")
    assert "could not tell: the Job failed (PodFailurePolicy" in unknown["message"]


# -- Block ----------------------------------------------------------------------------------------


def blocked_setup() -> tuple[Migration, list[Run]]:
    """Block: run 1 at generation 1 (a fresh database: nothing to compare with), then a new
    target."""
    body = migration(spec=spec_with(policy="Block"))
    before = check_ran(decide(body), drift_result(Reason.NO_SNAPSHOT))
    body = settle(body, [before])
    assert conditions(body)["Drifted"]["status"] == "Unknown"
    created = decide(body, [before])
    assert created.action == "create" and created.job is not None, "NoSnapshot is not drift"
    body, run = ran(body, created.job)
    runs = [before, run]
    body = settle(body, runs)
    check = check_ran(decide(body, runs), drift_result(Reason.NO_DRIFT, drifted=False))
    runs.append(check)
    body = settle(body, runs)
    body["metadata"]["generation"] = 2
    body["spec"]["target"] = "9d2e7a11c0f3"
    return body, runs


def test_block_checks_before_an_apply_and_refuses_it_while_drifted() -> None:
    body, runs = blocked_setup()
    first = decide(body, runs)
    assert first.action == "check"
    assert first.status is not None and first.status["phase"] == "Running"
    assert (
        "to check for schema drift before migrating to 9d2e7a11c0f3"
        in conditions(first.status)["Ready"]["message"]
    )
    runs.append(check_ran(first, drift_result(Reason.DRIFTED)))
    body = settle(body, runs)
    refused = decide(body, runs)
    assert refused.action == "report" and refused.job is None
    assert refused.status is not None and refused.status["phase"] == "Pending"
    ready = conditions(refused.status)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "Drifted")
    assert ready["message"] == (
        "Not migrating to 9d2e7a11c0f3: the schema at 3c9a1f0b2e44 has drifted (spec.drift.policy "
        "Block): ~ column orders.status: VARCHAR(20) -> VARCHAR(40); + index ix_orders_total on "
        "orders(total_cents); + table tmp_import (2 columns) (and 1 more). Accept it: set "
        f"spec.drift.acceptedHash to {HASH}; or fix the schema, then ask for a check "
        "(annotation revisor.dev/drift-check) or wait for the next one"
    )
    body["status"] = {**body["status"], **refused.status}
    assert decide(body, runs).status is None, "said once"
    assert judge_wait(body, expected_job="anything").outcome == "Failed"


def test_block_lets_the_run_go_once_a_later_check_finds_the_drift_gone() -> None:
    body, runs = blocked_setup()
    runs.append(check_ran(decide(body, runs), drift_result(Reason.DRIFTED)))
    body = settle(body, runs)
    body["metadata"]["annotations"] = {"revisor.dev/drift-check": "fixed"}
    again = decide(body, runs)
    assert again.action == "check"
    runs.append(check_ran(again, drift_result(Reason.NO_DRIFT, drifted=False)))
    body = settle(body, runs)
    go = decide(body, runs)
    assert go.action == "create" and go.job is not None
    assert go.job["metadata"]["name"].startswith("shop-g2-")


def test_block_accepts_the_drift_whose_hash_the_spec_names() -> None:
    body, runs = blocked_setup()
    runs.append(check_ran(decide(body, runs), drift_result(Reason.DRIFTED)))
    body = settle(body, runs)
    body["metadata"]["generation"] = 3
    body["spec"]["drift"]["acceptedHash"] = HASH
    check = decide(body, runs)
    assert check.action == "check" and check.job is not None
    command = check.job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--accept") + 1] == HASH
    runs.append(check_ran(check, drift_result(Reason.DRIFT_ACCEPTED, accepted=True)))
    body = settle(body, runs)
    accepted = conditions(body)["Drifted"]
    assert (accepted["status"], accepted["reason"]) == ("False", "DriftAccepted")
    go = decide(body, runs)
    assert go.action == "create" and go.job is not None
    assert go.job["metadata"]["name"].startswith("shop-g3-")


def test_report_never_refuses_and_block_never_refuses_a_plan() -> None:
    for spec in (spec_with(policy="Report"), {**spec_with(policy="Block"), "mode": "Plan"}):
        body, run = finished_migration(migration(spec=spec))
        body["metadata"]["annotations"] = {"revisor.dev/drift-check": "1"}  # a plan: no check after
        runs = [run, check_ran(decide(body, [run]), drift_result(Reason.DRIFTED))]
        body = settle(body, runs)
        assert conditions(body)["Drifted"]["status"] == "True"
        body["metadata"]["generation"] = 2
        body["spec"]["target"] = "9d2e7a11c0f3"
        assert decide(body, runs).action == "create", spec


# -- metrics ---------------------------------------------------------------------------------------


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"namespace": "drift-ns", "migration": "m"})


def test_drift_gauges_follow_the_status_and_go_with_the_resource() -> None:
    drifted: dict[str, Any] = {"drifted": True, "differencesTotal": 4}
    metrics.drift_observed(namespace="drift-ns", migration="m", drift=drifted)
    assert (gauge("revisor_schema_drifted"), gauge("revisor_schema_drift_differences")) == (1, 4)
    accepted = {"drifted": False, "accepted": True, "differencesTotal": 4}
    metrics.drift_observed(namespace="drift-ns", migration="m", drift=accepted)
    assert (gauge("revisor_schema_drifted"), gauge("revisor_schema_drift_differences")) == (0, 4)
    metrics.drift_observed(namespace="drift-ns", migration="m", drift={"result": "NoSnapshot"})
    assert gauge("revisor_schema_drifted") is None, "unknown: no series"
    metrics.drift_observed(namespace="drift-ns", migration="m", drift={"drifted": False})
    assert gauge("revisor_schema_drift_differences") == 0
    metrics.forget_migration(namespace="drift-ns", name="m")
    assert gauge("revisor_schema_drifted") is None
    assert gauge("revisor_schema_drift_differences") is None
