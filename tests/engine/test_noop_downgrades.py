"""Downgrades whose body is only ``pass`` run as no-ops, as in Alembic; missing ones stop a rollback.

Real histories are full of them: data backfills, enum values PostgreSQL
cannot drop, renames nobody wanted to reverse. Alembic runs such a
downgrade (the version moves, the changes stay); so does Revisor, and it
says which steps were no-ops. A revision with no ``downgrade()`` at all, or
one that raises, cannot run backwards: an upgrade may still apply it, and a
failure after it rolls back as far as it can and says where it stopped.
"""

from __future__ import annotations

from pathlib import Path

from tests.engine.conftest import history_rows, tables, version
from tests.support.projects import Rev, chain, make_project

BACKFILL = Rev(
    id="0002b0000000",
    down="0001t0000000",
    message="backfill t1",
    upgrade="op.execute('INSERT INTO t1 (id) VALUES (1)')",
    downgrade="pass",
)
BOOM = "raise RuntimeError('boom')"


def backfill_project(tmp_path: Path, *more: Rev):
    return make_project(tmp_path, [*chain(1), BACKFILL, *more])


def test_downgrade_base_runs_pass_downgrades_as_no_ops_and_marks_them(
    revisor, any_db_url, tmp_path: Path
) -> None:
    project = backfill_project(tmp_path)
    args = (*project.args(), "--database-url", any_db_url, "--output", "json")
    assert revisor(*args, "upgrade").code == 0
    plan = revisor(*args, "plan", "base")
    assert plan.code == 0
    assert [(s["revision"], s.get("noop", False)) for s in plan.result["plan"]] == [
        ("0002b0000000", True),
        ("0001t0000000", False),
    ]
    run = revisor(*args, "downgrade", "base")
    assert run.code == 0, run.err
    assert [s.get("noop", False) for s in run.result["applied"]] == [True, False]
    assert version(any_db_url) == set()
    assert "t1" not in tables(any_db_url)
    assert revisor(*args, "upgrade").code == 0, "and back up again"
    assert version(any_db_url) == {"0002b0000000"}


def test_plan_text_says_which_steps_are_no_ops(revisor, any_db_url, tmp_path: Path) -> None:
    project = backfill_project(tmp_path)
    args = (*project.args(), "--database-url", any_db_url)
    assert revisor(*args, "upgrade").code == 0
    plan = revisor(*args, "plan", "base")
    steps = [line for line in plan.out.splitlines() if line.startswith("  ")]
    assert "0002b0000000" in steps[0] and "(no-op: its downgrade() is only pass)" in steps[0]
    assert "no-op" not in steps[1]
    run = revisor(*args, "downgrade", "base")
    assert "(down) 0002b0000000 backfill t1 (no-op)" in run.err


def test_an_upgrade_under_on_failure_rollback_runs_over_pass_downgrades_and_rolls_them_back(
    revisor, any_db_url, tmp_path: Path
) -> None:
    """The default of the operator: a failure rolls back through the no-op to the start."""
    breaks = Rev(id="0003f0000000", down="0002b0000000", message="breaks", upgrade=BOOM)
    project = backfill_project(tmp_path, breaks)
    args = (*project.args(), "--database-url", any_db_url, "--output", "json")
    run = revisor(*args, "upgrade", "--on-failure", "rollback")
    assert run.code == 4, run.err
    assert run.result["reason"] == "RolledBack"
    assert run.result["to"] == []
    assert version(any_db_url) == set()


def test_a_failure_after_a_revision_without_downgrade_rolls_back_to_it_and_says_why(
    revisor, any_db_url, tmp_path: Path
) -> None:
    """RollbackIncomplete: the run went back as far as it could, and names the revision."""
    project = make_project(tmp_path, chain(2))
    (project.versions / "0003_nodown.py").write_text(
        '"""no way back"""\n'
        "from alembic import op\nimport sqlalchemy as sa\n"
        "revision = '0003n0000000'\ndown_revision = '0002t0000000'\nbranch_labels = None\n"
        "depends_on = None\n\n\ndef upgrade():\n"
        "    op.create_table('n', sa.Column('id', sa.Integer))\n"
    )
    project.add(
        Rev(id="0004t0000000", down="0003n0000000", message="t4",
            upgrade="op.create_table('t4', sa.Column('id', sa.Integer))",
            downgrade="op.drop_table('t4')"),
        Rev(id="0005f0000000", down="0004t0000000", message="breaks", upgrade=BOOM),
    )  # fmt: skip
    args = (*project.args(), "--database-url", any_db_url, "--output", "json")
    run = revisor(*args, "upgrade", "--on-failure", "rollback")
    assert run.code == 4, run.err
    assert run.result["reason"] == "RollbackIncomplete"
    error = run.result["error"]
    assert "upgrade 0005f0000000 (breaks) failed" in error
    assert "rolled back 1 of 4 step(s), to 0003n0000000" in error
    assert "0003n0000000 (no way back) has no downgrade()" in error
    assert version(any_db_url) == {"0003n0000000"}
    assert "t4" not in tables(any_db_url) and {"t1", "t2", "n"} <= tables(any_db_url)
    runs = history_rows(any_db_url)
    assert runs[-1]["status"] == "rollback_partial"
    assert "stopped there" in runs[-1]["error"]


def test_require_reversible_refuses_pass_downgrades_in_an_upgrade(
    revisor, any_db_url, tmp_path: Path
) -> None:
    """The strict mode of old, for teams who want every step undoable."""
    project = backfill_project(tmp_path)
    args = (*project.args(), "--database-url", any_db_url, "--output", "json")
    run = revisor(*args, "upgrade", "--require-reversible")
    assert run.code == 2
    assert run.result["reason"] == "NotReversible"
    assert "0002b0000000 (backfill t1) has an empty downgrade() (only pass)" in run.result["error"]
    assert version(any_db_url) == set()
    assert revisor(*args, "upgrade").code == 0, "without it the same upgrade runs"
