"""A DatabaseMigrationSet's decision: waves, maxParallel, failure policy, pause, rollouts."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from revisor_operator.decisions.fleet.children import Child
from revisor_operator.decisions.fleet.naming import child_name
from revisor_operator.decisions.fleet.rollout import JobInfo
from revisor_operator.decisions.fleet.targets import Resolved
from revisor_operator.decisions.policy import Policy

from .fleet_factories import (
    SET,
    admitted,
    after,
    child,
    decide,
    failed,
    raw_set_spec,
    ready,
    rollout_of,
    set_body,
)

TENANTS = ["acme", "beta", "gamma", "delta", "omega"]


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_first_pass_admits_the_first_wave_in_name_order_up_to_max_parallel() -> None:
    body = set_body(raw_set_spec(maxParallel=2))
    decision = decide(body, secrets=TENANTS)
    assert admitted(decision) == ["acme", "beta"]
    status = decision.status or {}
    assert [a["target"] for a in status["active"]] == ["acme", "beta"]
    assert status["phase"] == "Progressing"
    assert status["readyTargets"] == "0/5"
    assert status["counts"] == {"ready": 0, "running": 2, "failed": 0, "pending": 3}
    assert status["rollout"]["generation"] == 1
    assert status["wave"]["text"] == "1/1 rest"
    assert [e.reason for e in decision.events] == ["RolloutStarted", "WaveStarted"]
    child_body = decision.apply[0]
    assert child_body["metadata"]["name"] == child_name(set_name=SET, target="acme")
    assert child_body["metadata"]["labels"] == {
        "revisor.dev/set": SET,
        "revisor.dev/target": "acme",
    }
    assert child_body["spec"]["database"] == {"urlSecretRef": {"name": "acme", "key": "url"}}
    assert child_body["spec"]["target"] == "head"
    assert child_body["metadata"]["ownerReferences"][0]["kind"] == "DatabaseMigrationSet"


def test_admitted_targets_are_not_admitted_again_while_the_index_lags() -> None:
    """status.active, written before the children, counts them before the index does."""
    body = set_body(raw_set_spec(maxParallel=2))
    first = decide(body, secrets=TENANTS)
    second = decide(after(body, first), secrets=TENANTS)  # no child in the index yet
    assert admitted(second) == ["acme", "beta"]  # written again (idempotent), nothing more
    assert [a["target"] for a in (second.status or after(body, first)["status"])["active"]] == [
        "acme",
        "beta",
    ]


def test_a_finished_target_frees_its_slot_for_the_next() -> None:
    body = set_body(raw_set_spec(maxParallel=2))
    body = after(body, decide(body, secrets=TENANTS))
    decision = decide(
        body, secrets=TENANTS, children=[ready(body, "acme"), child(body, "beta", running=True)]
    )
    assert admitted(decision) == ["delta"]  # name order: acme, beta, delta, gamma, omega
    assert [a["target"] for a in (decision.status or {})["active"]] == ["beta", "delta"]
    assert (decision.status or {})["counts"]["ready"] == 1


def test_halt_stops_new_targets_at_the_first_failure_and_names_it() -> None:
    body = set_body(raw_set_spec(maxParallel=2))
    body = after(body, decide(body, secrets=TENANTS))
    children = [
        failed(body, "acme", message="Migration to head failed: relation x does not exist"),
        child(body, "beta", running=True),
    ]
    decision = decide(body, secrets=TENANTS, children=children)
    assert admitted(decision) == []
    status = decision.status or {}
    assert status["phase"] == "Halted"
    halted = condition(status, "Failed")
    assert halted["status"] == "True"
    assert "'acme'" in halted["message"]
    assert "relation x does not exist" in halted["message"]
    assert status["failedTargets"][0]["target"] == "acme"
    assert [e.reason for e in decision.events] == ["Halted"]
    assert decision.events[0].type == "Warning"


def test_a_halt_lifts_once_the_failed_target_is_ready_again() -> None:
    body = set_body(raw_set_spec(maxParallel=1))
    body = after(body, decide(body, secrets=TENANTS))
    body = after(body, decide(body, secrets=TENANTS, children=[failed(body, "acme")]))
    assert body["status"]["phase"] == "Halted"
    decision = decide(body, secrets=TENANTS, children=[ready(body, "acme")])
    assert admitted(decision) == ["beta"]
    assert (decision.status or {})["phase"] == "Progressing"
    assert [e.reason for e in decision.events] == ["Resumed"]


def test_continue_goes_on_until_more_than_max_failures_failed() -> None:
    body = set_body(raw_set_spec(maxParallel=1, failurePolicy="Continue", maxFailures=1))
    body = after(body, decide(body, secrets=TENANTS))
    one = decide(body, secrets=TENANTS, children=[failed(body, "acme")])
    assert admitted(one) == ["beta"]
    body = after(body, one)
    two = decide(body, secrets=TENANTS, children=[failed(body, "acme"), failed(body, "beta")])
    assert admitted(two) == []
    assert (two.status or {})["phase"] == "Halted"
    assert "more than maxFailures 1 failed" in condition(two.status or {}, "Failed")["message"]


def test_continue_finishes_with_failures_within_the_limit() -> None:
    body = set_body(raw_set_spec(maxParallel=5, failurePolicy="Continue"))
    children = [ready(body, t) for t in TENANTS[1:]] + [failed(body, "acme")]
    decision = decide(body, secrets=TENANTS, children=children)
    status = decision.status or {}
    assert status["phase"] == "Failed"
    assert condition(status, "Ready")["reason"] == "TargetsFailed"
    assert "4/5 Ready, 1 failed (maxFailures unlimited)" in condition(status, "Ready")["message"]


def test_a_wave_starts_only_when_the_wave_before_is_ready() -> None:
    spec = raw_set_spec(
        waves=[
            {"name": "canary", "targets": ["gamma"], "maxParallel": 1},
            {"name": "rest", "maxParallel": 3},
        ]
    )
    body = set_body(spec)
    first = decide(body, secrets=TENANTS)
    assert admitted(first) == ["gamma"]
    assert (first.status or {})["wave"]["text"] == "1/2 canary"
    body = after(body, first)
    waiting = decide(body, secrets=TENANTS, children=[child(body, "gamma", running=True)])
    assert admitted(waiting) == []
    body = after(body, waiting) if waiting.status else body
    second = decide(body, secrets=TENANTS, children=[ready(body, "gamma")])
    assert admitted(second) == ["acme", "beta", "delta"]
    assert (second.status or {})["wave"]["text"] == "2/2 rest"
    assert "WaveStarted" in [e.reason for e in second.events]
    assert [w["ready"] for w in (second.status or {})["waves"]] == [1, 0]


def test_waves_choose_by_name_patterns_and_by_their_secrets_labels() -> None:
    spec = raw_set_spec(
        waves=[
            {"name": "canary", "targets": ["a*"]},
            {"name": "early", "selector": {"matchLabels": {"tier": "early"}}, "maxParallel": 5},
            {"name": "rest", "maxParallel": 5},
        ]
    )
    body = set_body(spec)
    children = [ready(body, "acme")]
    decision = decide(body, secrets=TENANTS, children=children, selected={1: frozenset({"omega"})})
    assert admitted(decision) == ["omega"]
    assert [w["targets"] for w in (decision.status or {})["waves"]] == [1, 1, 3]


def test_paused_admits_nothing_and_says_where_it_holds() -> None:
    body = set_body(raw_set_spec(maxParallel=2, paused=True))
    decision = decide(body, secrets=TENANTS)
    assert admitted(decision) == []
    status = decision.status or {}
    assert status["phase"] == "Paused"
    assert "Paused at wave 1/1 (rest)" in condition(status, "Ready")["message"]
    assert "Paused" in [e.reason for e in decision.events]


def test_a_changed_template_is_a_new_rollout_from_the_first_wave() -> None:
    spec = raw_set_spec(maxParallel=2, waves=[{"targets": ["omega"]}, {"maxParallel": 2}])
    body = set_body(spec)
    old = rollout_of(body)
    done = [ready(body, t) for t in TENANTS]
    body = after(body, decide(body, secrets=TENANTS, children=done))
    assert body["status"]["phase"] == "Succeeded"
    changed = set_body(
        {**spec, "template": {**spec["template"], "target": "9d2e7a11c0f3"}},
        status=body["status"],
        generation=2,
    )
    assert rollout_of(changed) != old
    decision = decide(changed, secrets=TENANTS, children=done)
    status = decision.status or {}
    assert status["rollout"]["generation"] == 2
    assert admitted(decision) == ["omega"]
    assert status["counts"] == {"ready": 0, "running": 1, "failed": 0, "pending": 4}
    assert "RolloutStarted" in [e.reason for e in decision.events]


def test_new_scripts_are_a_new_rollout_but_more_parallelism_is_not() -> None:
    body = set_body(raw_set_spec(maxParallel=1))
    body = after(body, decide(body, secrets=TENANTS))
    wider = set_body(raw_set_spec(maxParallel=3), status=body["status"], generation=2)
    decision = decide(wider, secrets=TENANTS)
    assert (decision.status or {})["rollout"]["generation"] == 1
    assert admitted(decision) == ["acme", "beta", "delta"]
    new_scripts = decide(body, secrets=TENANTS, scripts="configmap\0" + "e" * 64)
    assert (new_scripts.status or {})["rollout"]["generation"] == 2


def test_a_child_still_running_from_the_last_rollout_takes_a_slot() -> None:
    body = set_body(raw_set_spec(maxParallel=2))
    old = child(body, "omega", running=True, rollout="an-older-rollout")
    decision = decide(body, secrets=TENANTS, children=[old])
    assert admitted(decision) == ["acme"]


def test_a_target_that_left_loses_its_child_but_only_when_the_list_is_complete() -> None:
    body = set_body(raw_set_spec(maxParallel=5))
    children = [ready(body, t) for t in TENANTS]
    decision = decide(body, secrets=TENANTS[:4], children=children)
    assert decision.delete_children == (child_name(set_name=SET, target="omega"),)
    assert "TargetRemoved" in [e.reason for e in decision.events]
    unknown = decide(
        body, resolved=Resolved((), complete=False, waiting="no answer yet"), children=children
    )
    assert unknown.delete_children == ()


def test_every_target_ready_is_success_with_the_revision_they_share() -> None:
    body = set_body(raw_set_spec(maxParallel=5))
    decision = decide(body, secrets=TENANTS, children=[ready(body, t) for t in TENANTS])
    status = decision.status or {}
    assert status["phase"] == "Succeeded"
    assert status["readyTargets"] == "5/5"
    assert status["currentRevision"] == "3c9a1f0b2e44"
    ready_condition = condition(status, "Ready")
    assert ready_condition["status"] == "True"
    assert ready_condition["reason"] == "RolloutComplete"
    assert "RolloutComplete" in [e.reason for e in decision.events]


def test_an_invalid_spec_is_a_failed_condition_and_no_action() -> None:
    body = set_body(raw_set_spec(maxParallel=0, template={"target": "head"}))
    decision = decide(body, secrets=TENANTS)
    status = decision.status or {}
    assert status["phase"] == "Failed"
    message = condition(status, "Ready")["message"]
    assert "spec.maxParallel: must be at least 1" in message
    assert "spec.template.source: is required" in message
    assert decision.apply == () and decision.delete_children == ()


def test_the_template_is_held_to_the_operators_policy() -> None:
    spec = raw_set_spec(template={**raw_set_spec()["template"], "runner": {"image": "evil:1"}})
    decision = decide(set_body(spec), secrets=TENANTS, policy=Policy())
    message = condition(decision.status or {}, "Ready")["message"]
    assert "spec.template.runner.image" in message
    assert decision.apply == ()


def test_a_missing_config_map_is_pending_and_starts_nothing() -> None:
    decision = decide(set_body(), secrets=TENANTS, scripts=None)
    status = decision.status or {}
    assert status["phase"] == "Pending"
    assert condition(status, "Ready")["reason"] == "ConfigMapNotFound"
    assert decision.apply == ()


def test_no_matching_secret_says_which_selector() -> None:
    decision = decide(set_body(), secrets=[])
    status = decision.status or {}
    assert status["phase"] == "Pending"
    assert (
        "No Secret in namespace shop matches tier=tenant" in condition(status, "Ready")["message"]
    )


def test_a_blocked_child_counts_as_failed() -> None:
    body = set_body(raw_set_spec(maxParallel=1))
    blocked = child(body, "acme", blocked=True, reason="SecretNotFound", message="no key 'url'")
    decision = decide(body, secrets=TENANTS, children=[blocked])
    assert (decision.status or {})["phase"] == "Halted"


def test_finished_jobs_beyond_the_limits_are_deleted_once_recorded() -> None:
    body = set_body(
        raw_set_spec(maxParallel=5, successfulJobsHistoryLimit=1, failedJobsHistoryLimit=1)
    )
    names = {t: child_name(set_name=SET, target=t) for t in TENANTS}
    jobs = [
        JobInfo(
            f"{t}-job",
            names[t],
            finished=True,
            succeeded=t != "gamma",
            finished_at=f"2025-01-02T03:0{i}:00Z",
        )
        for i, t in enumerate(TENANTS)
    ] + [JobInfo("running-job", names["acme"], finished=False, succeeded=False)]
    children = [
        replace(ready(body, t), recorded_jobs=frozenset({f"{t}-job"}))
        for t in TENANTS
        if t != "omega"  # its run is not recorded yet: its Job is kept
    ] + [ready(body, "omega")]
    decision = decide(body, secrets=TENANTS, children=children, jobs=jobs)
    # Newest succeeded first: omega (unrecorded, kept), delta kept, beta and acme deleted;
    # the one failed Job (gamma) is within its limit.
    assert decision.delete_jobs == ("acme-job", "beta-job")


def test_children_of_another_set_with_the_same_name_are_not_ours() -> None:
    body = set_body(raw_set_spec(maxParallel=1))
    stranger = replace(ready(body, "acme"), set_uid="another-uid")
    decision = decide(body, secrets=["acme"], children=[stranger])
    assert admitted(decision) == ["acme"]


# -- the bound, whatever happens ---------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    parallel=st.integers(min_value=1, max_value=4),
    count=st.integers(min_value=1, max_value=9),
    seed=st.integers(min_value=0, max_value=10_000),
    policy=st.sampled_from(["Halt", "Continue"]),
)
def test_never_more_than_max_parallel_in_flight_and_each_target_admitted_once(
    parallel: int, count: int, seed: int, policy: str
) -> None:
    """A simulated rollout: children finish (or fail) in random order; the index lags.

    Whatever order things happen in, no pass lets more than maxParallel targets be in
    flight, no target is admitted twice in one rollout, and a Continue rollout finishes.
    """
    rng = random.Random(seed)
    tenants = [f"t{i:02d}" for i in range(count)]
    body = set_body(raw_set_spec(maxParallel=parallel, failurePolicy=policy))
    index: dict[str, Child] = {}
    admissions: list[str] = []
    for _ in range(count * 6):
        decision = decide(body, secrets=tenants, children=list(index.values()))
        new = [t for t in admitted(decision) if t not in index and t not in admissions]
        admissions += new
        body = after(body, decision) if decision.status else body
        in_flight = {a["target"] for a in body["status"].get("active", [])}
        in_flight |= {c.target for c in index.values() if c.running}
        assert len(in_flight) <= parallel
        # The index catches up with some admissions; some running children finish.
        for target in admitted(decision):
            if rng.random() < 0.7:
                index[target] = child(body, target, running=True)
        for target, summary in list(index.items()):
            if summary.running and rng.random() < 0.5:
                index[target] = failed(body, target) if rng.random() < 0.2 else ready(body, target)
    assert len(admissions) == len(set(admissions))
    if policy == "Continue":
        assert body["status"]["phase"] in ("Succeeded", "Failed", "Progressing")
