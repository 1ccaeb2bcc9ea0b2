"""Moving a database up and down, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from pathlib import Path

from tests.engine.conftest import history_rows, tables, version
from tests.support.projects import chain, make_project


def test_upgrade_head_applies_every_revision_and_reports_each_step(
    revisor, any_db_url, tmp_path: Path
) -> None:
    """`upgrade` with no target goes to head; the result lists each applied step."""
    project = make_project(tmp_path, chain(3))
    run = revisor(*project.args(), "--database-url", any_db_url, "--output", "json", "upgrade")
    assert run.code == 0, run.err
    assert {"t1", "t2", "t3"} <= tables(any_db_url)
    assert version(any_db_url) == {"0003t0000000"}
    result = run.result
    assert result["schema"] == "revisor.dev/result/v1"
    assert result["direction"] == "upgrade"
    assert result["from"] == [] and result["to"] == ["0003t0000000"]
    assert [s["revision"] for s in result["applied"]] == [
        "0001t0000000",
        "0002t0000000",
        "0003t0000000",
    ]
    assert all(s["seconds"] >= 0 for s in result["applied"])
    assert "[3/3] 0003t0000000 create t3 …" in run.err


def test_second_upgrade_finds_nothing_to_do(revisor, any_db_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(2))
    assert revisor(*project.args(), "--database-url", any_db_url, "upgrade").code == 0
    again = revisor(*project.args(), "--database-url", any_db_url, "--output", "json", "upgrade")
    assert again.code == 0
    assert again.result["applied"] == [] and again.result["direction"] == "none"
    assert "nothing to do" in again.err
    assert len(history_rows(any_db_url)) == 1, "a run that did nothing records nothing"


def test_downgrade_relative_and_to_base(revisor, any_db_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(3))
    revisor(*project.args(), "--database-url", any_db_url, "upgrade")
    down = revisor(
        *project.args(), "--database-url", any_db_url, "--output", "json", "downgrade", "-1"
    )
    assert down.code == 0, down.err
    assert version(any_db_url) == {"0002t0000000"}
    assert "t3" not in tables(any_db_url)
    assert down.result["direction"] == "downgrade"
    base = revisor(*project.args(), "--database-url", any_db_url, "downgrade", "base")
    assert base.code == 0
    assert version(any_db_url) == set()
    assert not {"t1", "t2", "t3"} & tables(any_db_url)


def test_apply_moves_in_whichever_direction_reaches_the_target(
    revisor, any_db_url, tmp_path: Path
) -> None:
    """`apply` is what the operator runs: it does not need to know where the database is."""
    project = make_project(tmp_path, chain(3))
    args = (*project.args(), "--database-url", any_db_url, "--output", "json")
    assert revisor(*args, "apply", "0002").result["direction"] == "upgrade"
    assert version(any_db_url) == {"0002t0000000"}
    assert revisor(*args, "apply", "head").result["direction"] == "upgrade"
    back = revisor(*args, "apply", "0001t0000000")
    assert back.code == 0 and back.result["direction"] == "downgrade"
    assert version(any_db_url) == {"0001t0000000"}
    assert revisor(*args, "apply", "base").result["direction"] == "downgrade"
    assert version(any_db_url) == set()


def test_upgrade_relative_steps(revisor, any_db_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(4))
    args = (*project.args(), "--database-url", any_db_url)
    assert revisor(*args, "upgrade", "+2").code == 0
    assert version(any_db_url) == {"0002t0000000"}
    assert revisor(*args, "upgrade", "+1").code == 0
    assert version(any_db_url) == {"0003t0000000"}


def test_plan_shows_steps_and_a_stable_hash_without_changing_anything(
    revisor, any_db_url, tmp_path: Path
) -> None:
    project = make_project(tmp_path, chain(3))
    args = (*project.args(), "--database-url", any_db_url, "--output", "json")
    first = revisor(*args, "plan")
    second = revisor(*args, "plan")
    assert first.code == 0
    assert [s["revision"] for s in first.result["plan"]] == [
        "0001t0000000",
        "0002t0000000",
        "0003t0000000",
    ]
    assert first.result["planHash"] == second.result["planHash"]
    assert version(any_db_url) == set() and "t1" not in tables(any_db_url)
    assert "revisor_history" not in tables(any_db_url)


def test_plan_hash_changes_when_a_planned_script_changes(
    revisor, any_db_url, tmp_path: Path
) -> None:
    project = make_project(tmp_path, chain(2))
    args = (*project.args(), "--database-url", any_db_url, "--output", "json")
    before = revisor(*args, "plan").result["planHash"]
    script = next(project.versions.glob("0002*"))
    script.write_text(script.read_text() + "\n# edited\n")
    assert revisor(*args, "plan").result["planHash"] != before


def test_approved_plan_hash_is_enforced(revisor, any_db_url, tmp_path: Path) -> None:
    """The operator's approval flow: apply only the plan that was approved."""
    project = make_project(tmp_path, chain(2))
    args = (*project.args(), "--database-url", any_db_url, "--output", "json")
    approved = revisor(*args, "plan").result["planHash"]
    refused = revisor(*args, "upgrade", "--expect-plan-hash", "0" * 64)
    assert refused.code == 2
    assert "plan changed since it was approved" in refused.result["error"]
    assert version(any_db_url) == set()
    ok = revisor(*args, "upgrade", "--expect-plan-hash", approved)
    assert ok.code == 0 and version(any_db_url) == {"0002t0000000"}


def test_current_and_heads(revisor, any_db_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(2))
    args = (*project.args(), "--database-url", any_db_url)
    assert "base" in revisor(*args, "current").out
    revisor(*args, "upgrade", "0001")
    assert revisor(*args, "current").out.startswith("0001t0000000 create t1")
    assert revisor(*args, "heads").out.startswith("0002t0000000 (head) create t2")


def test_stamp_records_a_revision_without_running_it(revisor, any_db_url, tmp_path: Path) -> None:
    """Baselining an existing database: the version moves, the schema does not."""
    project = make_project(tmp_path, chain(2))
    args = (*project.args(), "--database-url", any_db_url)
    run = revisor(*args, "stamp", "0002")
    assert run.code == 0, run.err
    assert version(any_db_url) == {"0002t0000000"}
    assert "t1" not in tables(any_db_url)
    assert history_rows(any_db_url)[-1]["direction"] == "stamp"


def test_the_version_table_is_written_with_one_statement_per_kind_of_write(
    revisor, any_db_url, tmp_path: Path
) -> None:
    """Alembic writes each id as a literal (a new statement to compile per step); Revisor binds it.

    Up from base (INSERT, then UPDATEs), down to base (UPDATEs, then DELETE) and a
    stamp: the version table ends where Alembic's writes would leave it, and each
    kind of write is one statement text, however many steps ran.
    """
    import sqlalchemy as sa

    written: list[str] = []

    def seen(*args: object) -> None:
        statement = str(args[2])  # (conn, cursor, statement, parameters, context, executemany)
        words = statement.lstrip().split(None, 1)
        if "alembic_version" in statement and words[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            written.append(statement)

    project = make_project(tmp_path, chain(6))
    sa.event.listen(sa.engine.Engine, "before_cursor_execute", seen)
    try:
        assert revisor(*project.args(), "--database-url", any_db_url, "upgrade", "head").code == 0
        assert version(any_db_url) == {"0006t0000000"}
        assert revisor(*project.args(), "--database-url", any_db_url, "downgrade", "base").code == 0
        assert version(any_db_url) == set()
        assert revisor(*project.args(), "--database-url", any_db_url, "stamp", "0004t").code == 0
        assert version(any_db_url) == {"0004t0000000"}
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", seen)
    assert len(written) == 6 + 6 + 1
    kinds = {statement.split(None, 1)[0].upper() for statement in set(written)}
    assert kinds == {"INSERT", "UPDATE", "DELETE"}
    assert len(set(written)) == 3, sorted(set(written))


def test_a_version_row_gone_under_a_step_fails_it_in_alembics_words(
    revisor, any_db_url, tmp_path: Path
) -> None:
    """A write that matches no row is Alembic's error, and the step rolls back."""
    from tests.support.projects import Rev

    revs = chain(2)
    rogue = Rev(
        id="0003r0000000", down=revs[-1].id, upgrade="op.execute('DELETE FROM alembic_version')"
    )
    project = make_project(tmp_path, [*revs, rogue])
    done = revisor(*project.args(), "--database-url", any_db_url, "upgrade", "head")
    assert done.code == 4, done.err
    assert (
        "Online migration expected to match one row when updating '0002t0000000' to "
        "'0003r0000000' in 'alembic_version'; 0 found" in done.err
    )
    assert version(any_db_url) == {"0002t0000000"}
