"""Approved plans: ``--expect-plan-hash`` applies exactly the plan a person approved.

When the plan changed (new revisions, or the database moved), the engine
refuses before writing anything and its result carries the *new* plan and
its full hash, so the operator can ask for that approval without another
planning run.
"""

from __future__ import annotations

from pathlib import Path

from tests.engine.conftest import tables, version
from tests.support.projects import chain, make_project


def test_the_approved_plan_is_applied(revisor, any_db_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(2))
    args = (*project.args(), "--database-url", any_db_url, "--output", "json")
    planned = revisor(*args, "plan").result
    applied = revisor(*args, "upgrade", "--expect-plan-hash", planned["planHash"])
    assert applied.code == 0
    assert version(any_db_url) == {"0002t0000000"}


def test_a_changed_plan_is_refused_with_the_new_plan_and_its_full_hash(
    revisor, any_db_url, tmp_path: Path
) -> None:
    project = make_project(tmp_path, chain(2))
    args = (*project.args(), "--database-url", any_db_url, "--output", "json")
    approved = revisor(*args, "plan").result["planHash"]
    project.add(*chain(3)[2:])
    now = revisor(*args, "plan").result
    assert now["planHash"] != approved

    refused = revisor(*args, "upgrade", "--expect-plan-hash", approved)

    assert refused.code == 2
    assert refused.result["reason"] == "PlanChanged"
    assert refused.result["planHash"] == now["planHash"]
    assert [s["revision"] for s in refused.result["plan"]] == [
        "0001t0000000",
        "0002t0000000",
        "0003t0000000",
    ]
    assert refused.result["from"] == [] and refused.result["to"] == []
    assert f"approved {approved}, now {now['planHash']}" in refused.err
    assert not tables(any_db_url), "a refused plan must leave the database untouched"


def test_an_empty_plan_needs_no_approval(revisor, any_db_url, tmp_path: Path) -> None:
    """At the target already, whatever hash was approved, there is nothing to refuse."""
    project = make_project(tmp_path, chain(1))
    args = (*project.args(), "--database-url", any_db_url, "--output", "json")
    assert revisor(*args, "upgrade").code == 0
    again = revisor(*args, "upgrade", "--expect-plan-hash", "0" * 64)
    assert again.code == 0
    assert again.result["applied"] == []
    assert version(any_db_url) == {"0001t0000000"}
