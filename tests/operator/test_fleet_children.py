"""A set's child: the run it is admitted to, and what the set reads back from it.

A child of a set runs what the set admitted it to, not whatever its scripts
ConfigMap holds now: new revision files reach the tenants wave by wave.
"""

from __future__ import annotations

import copy
from typing import Any

from revisor_operator.decisions.admission import ROLLOUT_ANNOTATION, SCRIPTS_ANNOTATION
from revisor_operator.decisions.fleet.children import Rollout, SetRef, child_body, summarize
from revisor_operator.decisions.references import ConfigMapCheck, References, SecretCheck

from .factories import decide_on
from .fleet_factories import SCRIPTS, SET, SET_UID, parsed, set_body, target_of

OWNER = SetRef(name=SET, namespace="shop", uid=SET_UID)
ROLLOUT = Rollout(hash="r" * 64, generation=3, scripts=SCRIPTS)
LIVE = ConfigMapCheck("shop-migrations", True, "f" * 64)  # the scripts SCRIPTS names


def a_child(**status: Any) -> dict[str, Any]:
    body = set_body()
    made = child_body(
        owner=OWNER, template=parsed(body).template, target=target_of(body, "acme"), rollout=ROLLOUT
    )
    made["metadata"].update(uid="c-1", generation=1, resourceVersion="3")
    if status:
        made["status"] = status
    return made


def references(config_map: ConfigMapCheck = LIVE) -> References:
    return References(
        secret=SecretCheck("acme", True, frozenset({"url"}), version="1"), config_map=config_map
    )


def test_a_child_runs_what_it_was_admitted_to() -> None:
    decision = decide_on(a_child(), references=references())  # type: ignore[arg-type]
    assert decision.action == "create"
    assert decision.job is not None
    assert decision.job["metadata"]["labels"]["revisor.dev/set"] == SET


def test_a_child_whose_scripts_changed_after_admission_holds_instead_of_running() -> None:
    newer = ConfigMapCheck("shop-migrations", True, "e" * 64)
    decision = decide_on(a_child(), references=references(newer))  # type: ignore[arg-type]
    assert decision.action == "report"
    assert decision.job is None
    assert decision.verdict is not None
    assert decision.verdict.reason == "WaitingForSet"
    assert "DatabaseMigrationSet tenants admitted" in decision.verdict.message


def test_new_scripts_make_no_new_run_of_a_child_that_ran_its_rollout() -> None:
    """The run's identity is the rollout: the same with the old scripts and the new."""
    first = decide_on(a_child(), references=references())  # type: ignore[arg-type]
    assert first.job is not None
    ran = a_child(
        phase="Succeeded",
        observedGeneration=1,
        lastRun={"job": first.job["metadata"]["name"], "phase": "Succeeded", "generation": 1},
    )
    newer = ConfigMapCheck("shop-migrations", True, "e" * 64)
    decision = decide_on(ran, references=references(newer))  # type: ignore[arg-type]
    assert decision.action == "nothing"


def test_a_new_rollout_is_a_new_run() -> None:
    first = decide_on(a_child(), references=references())  # type: ignore[arg-type]
    readmitted = a_child()
    readmitted["metadata"]["annotations"][ROLLOUT_ANNOTATION] = "s" * 64
    second = decide_on(readmitted, references=references())  # type: ignore[arg-type]
    assert first.job is not None and second.job is not None
    assert first.job["metadata"]["name"] != second.job["metadata"]["name"]


def test_the_set_reads_back_a_childs_outcome_for_its_rollout() -> None:
    created = decide_on(a_child(), references=references())  # type: ignore[arg-type]
    assert created.job is not None
    job = created.job["metadata"]["name"]
    ready = a_child(
        phase="Succeeded",
        observedGeneration=1,
        currentRevision="3c9a1f0b2e44",
        conditions=[{"type": "Ready", "status": "True", "reason": "Migrated", "message": "ok"}],
        lastRun={"job": job, "desiredRun": job, "phase": "Succeeded"},
    )
    summary = summarize(ready)  # type: ignore[arg-type]
    assert summary is not None
    assert (summary.target, summary.set_uid, summary.outcome) == ("acme", SET_UID, "Ready")
    assert summary.rollout == ROLLOUT.hash
    assert summary.revision == "3c9a1f0b2e44"
    assert summary.recorded_jobs == frozenset({job})
    key = summary.spec_key
    assert summary.state(rollout=ROLLOUT.hash, key=key) == "Ready"
    assert summary.state(rollout="another", key=key) == "Pending"


def test_a_running_child_and_a_blocked_one() -> None:
    running = summarize(a_child(phase="Running", observedGeneration=1))  # type: ignore[arg-type]
    assert running is not None and running.running and running.outcome == "Waiting"
    missing = a_child(
        phase="Pending",
        observedGeneration=1,
        conditions=[
            {"type": "Ready", "status": "False", "reason": "SecretNotFound", "message": "gone"}
        ],
    )
    blocked = summarize(missing)  # type: ignore[arg-type]
    assert blocked is not None and blocked.blocked
    assert blocked.state(rollout=ROLLOUT.hash, key=blocked.spec_key) == "Failed"


def test_a_migration_no_set_controls_is_not_a_child() -> None:
    body = copy.deepcopy(a_child())
    body["metadata"]["ownerReferences"] = []
    assert summarize(body) is None  # type: ignore[arg-type]


def test_the_child_carries_what_the_set_admitted() -> None:
    made = a_child()
    annotations = made["metadata"]["annotations"]
    assert annotations[SCRIPTS_ANNOTATION] == SCRIPTS
    assert annotations["fleet.revisor.dev/target"] == "acme"
    assert made["spec"]["source"] == {"configMap": {"name": "shop-migrations"}}
