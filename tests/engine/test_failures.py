"""When a revision fails: stop where it failed, or undo the run; and dry runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.engine.conftest import history_rows, tables, version
from tests.support.projects import Rev, chain, make_project, revisor_process

BOOM = "op.execute('SELECT * FROM no_such_table_anywhere')"


def failing_project(tmp_path: Path, *, downgrade_of_second: str = "op.drop_table('t2')"):
    revs = chain(2)
    revs[1] = Rev(
        id=revs[1].id, down=revs[1].down, message="create t2",
        upgrade="op.create_table('t2', sa.Column('id', sa.Integer))", downgrade=downgrade_of_second,
    )  # fmt: skip
    revs.append(
        Rev(
            id="0003f0000000",
            down=revs[1].id,
            message="breaks",
            upgrade=f"op.create_table('t3', sa.Column('id', sa.Integer))\n{BOOM}",
            downgrade="op.drop_table('t3')",
        )
    )
    return make_project(tmp_path, revs)


def test_on_failure_stop_leaves_the_last_committed_revision(
    revisor, db_url, tmp_path: Path
) -> None:
    project = failing_project(tmp_path)
    run = revisor(
        *project.args(),
        "--database-url",
        db_url,
        "--output",
        "json",
        "upgrade",
        "--on-failure",
        "stop",
    )
    assert run.code == 4
    assert version(db_url) == {"0002t0000000"}
    assert {"t1", "t2"} <= tables(db_url) and "t3" not in tables(db_url), (
        "the failed step left nothing"
    )
    result = run.result
    assert result["reason"] == "MigrationFailed"
    assert [s["revision"] for s in result["applied"]] == ["0001t0000000", "0002t0000000"]
    assert "upgrade 0003f0000000 (breaks) failed" in result["error"]
    assert "no_such_table_anywhere" in result["error"]
    assert "[3/3] 0003f0000000 breaks … FAILED\n" in run.err
    assert run.err.count("error: ") == 1, "the failure is said once, at the end"
    runs = history_rows(db_url)
    assert runs[-1]["status"] == "failed"
    steps = history_rows(db_url, "step")
    assert [(s["revision"], s["status"]) for s in steps] == [
        ("0001t0000000", "applied"), ("0002t0000000", "applied"), ("0003f0000000", "failed"),
    ]  # fmt: skip


def test_on_failure_rollback_restores_the_starting_revision(
    revisor, db_url, tmp_path: Path
) -> None:
    project = failing_project(tmp_path)
    args = (*project.args(), "--database-url", db_url, "--output", "json")
    assert revisor(*args, "upgrade", "0001").code == 0
    run = revisor(*args, "upgrade", "--on-failure", "rollback")
    assert run.code == 4
    assert run.result["rolledBack"] is True and run.result["reason"] == "RolledBack"
    assert run.result["to"] == ["0001t0000000"]
    assert version(db_url) == {"0001t0000000"}
    assert "t2" not in tables(db_url) and "t1" in tables(db_url)
    assert history_rows(db_url)[-1]["status"] == "rolled_back"
    assert "rolling back 1 step(s)" in run.err
    lines = run.err.splitlines()
    assert lines[-1].startswith("error: upgrade 0003f0000000 (breaks) failed")
    assert run.err.count("error: ") == 1


def test_failing_rollback_is_exit_5(revisor, db_url, tmp_path: Path) -> None:
    project = failing_project(tmp_path, downgrade_of_second=BOOM)
    run = revisor(
        *project.args(),
        "--database-url",
        db_url,
        "--output",
        "json",
        "upgrade",
        "--on-failure",
        "rollback",
    )
    assert run.code == 5
    assert run.result["reason"] == "RollbackFailed"
    assert "then the rollback failed" in run.result["error"]
    assert version(db_url) == {"0002t0000000"}, "the database is where the failed rollback stopped"
    assert history_rows(db_url)[-1]["status"] == "rollback_failed"


def test_single_transaction_is_all_or_nothing(revisor, db_url, tmp_path: Path) -> None:
    project = failing_project(tmp_path)
    run = revisor(
        *project.args(),
        "--database-url",
        db_url,
        "--output",
        "json",
        "upgrade",
        "--single-transaction",
    )
    assert run.code == 4
    assert version(db_url) == set()
    assert not {"t1", "t2", "t3"} & tables(db_url)
    assert run.result["applied"] == []


@pytest.mark.postgres
def test_statement_timeout_aborts_a_slow_statement(revisor, pg_url, tmp_path: Path) -> None:
    project = make_project(
        tmp_path,
        [Rev(id="aaaa00000001", upgrade="op.execute('SELECT pg_sleep(5)')", downgrade="pass")],
    )
    run = revisor(
        *project.args(), "--database-url", pg_url, "upgrade", "--statement-timeout", "200ms"
    )
    assert run.code == 4
    assert "statement timeout" in run.err
    assert version(pg_url) == set()


@pytest.mark.postgres
def test_ddl_lock_timeout_fails_a_revision_blocked_by_another_sessions_lock(
    pg_url, tmp_path: Path
) -> None:
    """A table locked elsewhere fails the ALTER after --ddl-lock-timeout, not never.

    The other session holds its lock for the whole test, so only the
    engine's ``lock_timeout`` can end the wait; the steps before the blocked
    one stay committed.
    """
    import psycopg

    revs = [
        *chain(2),
        Rev(
            id="0003a0000000",
            down="0002t0000000",
            message="alter t1",
            upgrade="op.add_column('t1', sa.Column('note', sa.Text))",
            downgrade="op.drop_column('t1', 'note')",
        ),
    ]
    project = make_project(tmp_path, revs)
    args = (*project.args(), "--database-url", pg_url, "--output", "json")
    first = revisor_process(*args, "upgrade", "0001")
    assert first.wait(timeout=120) == 0, first.communicate()
    libpq = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(libpq) as holder:
        holder.execute("LOCK TABLE t1 IN ACCESS EXCLUSIVE MODE")
        proc = revisor_process(*args, "upgrade", "--ddl-lock-timeout", "1s")
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("the run waited for the table lock past --ddl-lock-timeout")
        holder.rollback()
    assert proc.returncode == 4, err
    result = json.loads(out)
    assert "canceling statement due to lock timeout" in result["error"]
    assert "upgrade 0003a0000000 (alter t1) failed" in result["error"]
    assert "ALTER TABLE t1 ADD COLUMN note" in result["error"]
    assert [s["revision"] for s in result["applied"]] == ["0002t0000000"]
    assert version(pg_url) == {"0002t0000000"}, "the last committed revision"
    assert history_rows(pg_url, "step")[-1]["status"] == "failed"


def test_dry_run_runs_everything_and_leaves_no_trace(revisor, db_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(3))
    run = revisor(
        *project.args(), "--database-url", db_url, "--output", "json", "upgrade", "--dry-run"
    )
    assert run.code == 0, run.err
    assert run.result["dryRun"] is True
    assert len(run.result["applied"]) == 3
    assert not tables(db_url), "no tables, no version table, no history"


def test_dry_run_reports_the_failure_a_real_run_would_hit(revisor, db_url, tmp_path: Path) -> None:
    project = failing_project(tmp_path)
    run = revisor(
        *project.args(), "--database-url", db_url, "--output", "json", "upgrade", "--dry-run"
    )
    assert run.code == 4
    assert "no_such_table_anywhere" in run.result["error"]
    assert not tables(db_url)


def test_dry_run_refuses_autocommit_scripts(revisor, db_url, tmp_path: Path) -> None:
    rev = Rev(
        id="aaaa00000001",
        upgrade="with op.get_context().autocommit_block():\n    op.execute('SELECT 1')",
    )
    project = make_project(tmp_path, [rev])
    run = revisor(*project.args(), "--database-url", db_url, "upgrade", "--dry-run")
    assert run.code == 2
    assert "--dry-run cannot undo autocommit_block()" in run.err and "aaaa00000001" in run.err
    assert not tables(db_url)


def test_require_reversible_refuses_an_upgrade_that_could_not_be_undone(
    revisor, db_url, tmp_path: Path
) -> None:
    """What the operator asks when a failed deploy must be able to downgrade the schema."""
    project = failing_project(tmp_path, downgrade_of_second="raise NotImplementedError()")
    args = (*project.args(), "--database-url", db_url, "--output", "json")
    run = revisor(*args, "upgrade", "0002", "--on-failure", "stop", "--require-reversible")
    assert run.code == 2
    assert run.result["reason"] == "NotReversible"
    assert (
        "--require-reversible needs every planned revision to be reversible" in run.result["error"]
    )
    assert "0002t0000000" in run.result["error"] and "raises" in run.result["error"]
    assert not tables(db_url)
    assert revisor(*args, "upgrade", "0001", "--require-reversible").code == 0


DEFERRED = [
    Rev(
        id="0001d0000000",
        message="parent and child, checked at commit",
        upgrade="""
            op.create_table("parent", sa.Column("id", sa.Integer, primary_key=True))
            op.execute(
                "CREATE TABLE child (parent_id integer REFERENCES parent (id) "
                "DEFERRABLE INITIALLY DEFERRED)"
            )
        """,
        downgrade="op.drop_table('child')\nop.drop_table('parent')",
    ),
    Rev(
        id="0002d0000000",
        down="0001d0000000",
        message="an orphan",
        upgrade="op.execute('INSERT INTO child VALUES (42)')",
        downgrade="op.execute('DELETE FROM child')",
    ),
]


@pytest.mark.postgres
@pytest.mark.parametrize("driver", ["postgresql+psycopg", "postgresql+asyncpg"])
def test_a_revision_that_fails_at_commit_is_that_revisions_failure(
    revisor, pg_url: str, driver: str, tmp_path: Path
) -> None:
    """A deferred constraint fails only at COMMIT: the step that wrote it failed, exit 4.

    On psycopg the step's history row and its COMMIT go in one round trip,
    so the error comes back from Revisor's own pipeline, not Alembic's
    commit; the outcome must be the same as on asyncpg, where Alembic commits.
    """
    project = make_project(tmp_path, DEFERRED)
    url = pg_url.replace("postgresql+psycopg", driver)
    run = revisor(*project.args(), "--database-url", url, "--output", "json", "upgrade")
    assert run.code == 4, run.err
    result = run.result
    assert result["reason"] == "MigrationFailed"
    assert [s["revision"] for s in result["applied"]] == ["0001d0000000"]
    assert "upgrade 0002d0000000 (an orphan) failed" in result["error"]
    assert "foreign key" in result["error"]
    assert "revisor_history" not in result["error"], "the user's COMMIT failed, not our row"
    assert version(pg_url) == {"0001d0000000"}
    steps = history_rows(pg_url, "step")
    assert [(s["revision"], s["status"]) for s in steps] == [
        ("0001d0000000", "applied"),
        ("0002d0000000", "failed"),
    ]
    assert history_rows(pg_url)[-1]["status"] == "failed"
    # A rerun starts after the committed revision and retries only the orphan.
    again = revisor(*project.args(), "--database-url", url, "--output", "json", "upgrade")
    assert again.code == 4 and again.result["applied"] == []
    assert again.result["from"] == ["0001d0000000"]


SESSION_ENDS_AT_COMMIT = [
    Rev(
        id="0001x0000000",
        message="a trigger that ends the session at commit",
        upgrade="""
            op.execute("CREATE TABLE trap (x integer)")
            op.execute(
                "CREATE FUNCTION end_session() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$"
            )
            op.execute(
                "CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON trap "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION end_session()"
            )
        """,
        downgrade="op.execute('DROP TABLE trap')\nop.execute('DROP FUNCTION end_session()')",
    ),
    Rev(
        id="0002x0000000",
        down="0001x0000000",
        message="springs it",
        upgrade="op.execute('INSERT INTO trap VALUES (1)')",
    ),
]


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("driver", "reason"),
    [
        ("postgresql+psycopg", "server closed the connection unexpectedly"),
        ("postgresql+asyncpg", "terminating connection due to administrator command"),
    ],
)
def test_a_session_lost_at_commit_stops_the_run_with_the_drivers_reason(
    revisor, pg_url: str, driver: str, reason: str, tmp_path: Path
) -> None:
    """The server ends the session during the step's COMMIT: exit 6, the reason kept.

    On psycopg that COMMIT travels with the history row; the connection must
    be invalidated as SQLAlchemy would, or what follows replaces the driver's
    reason with "the connection is lost". The lock went with the session, so
    the run writes nothing more (no new session, tests/engine/test_faults.py):
    its run row stays "running" for the next runner to mark interrupted, and
    the result claims no revision, since the COMMIT's outcome is unknown.
    """
    project = make_project(tmp_path, SESSION_ENDS_AT_COMMIT)
    url = pg_url.replace("postgresql+psycopg", driver)
    run = revisor(*project.args(), "--database-url", url, "--output", "json", "upgrade")
    assert run.code == 6, run.err
    assert run.result["reason"] == "DatabaseUnreachable"
    error = run.result["error"]
    assert error.startswith(
        "lost the connection to the database during 0002x0000000 (springs it): "
    )
    assert reason in error and "the connection is lost" not in error
    assert "went during the COMMIT of 0002x0000000" in error
    assert "the database is at 0001x0000000 or at 0002x0000000" in error
    assert version(pg_url) == {"0001x0000000"}
    assert [s["status"] for s in history_rows(pg_url, "step")] == ["applied"]
    assert [r["status"] for r in history_rows(pg_url)] == ["running"]


@pytest.mark.postgres
def test_a_history_row_that_cannot_be_written_fails_its_step_naming_the_insert(
    revisor, pg_url: str, tmp_path: Path
) -> None:
    """The other half of the one-round-trip path: the row itself fails, not the COMMIT."""
    revs = [
        *chain(1),
        Rev(id="0002h0000000", down="0001t0000000", message="drops our table",
            upgrade="op.drop_table('revisor_history')"),
    ]  # fmt: skip
    project = make_project(tmp_path, revs)
    run = revisor(*project.args(), "--database-url", pg_url, "--output", "json", "upgrade")
    assert run.code == 4, run.err
    error = run.result["error"]
    assert error.startswith("upgrade 0002h0000000 (drops our table) failed: ")
    assert 'relation "revisor_history" does not exist' in error
    assert "[SQL: INSERT INTO revisor_history" in error
    assert version(pg_url) == {"0001t0000000"}, "the step rolled back with its row"


def test_a_failing_revision_is_named_with_its_file_and_line(
    revisor, any_db_url, tmp_path: Path
) -> None:
    """The frame in the revision file: where to look, in the output, the result and history."""
    project = make_project(
        tmp_path,
        [
            Rev(
                id="0005b0000000",
                message="boom",
                upgrade="x = 1\nraise RuntimeError('boom in 0005')",
            )
        ],
    )
    path = project.versions / "0005b0000000_rev.py"
    line = path.read_text().splitlines().index("    raise RuntimeError('boom in 0005')") + 1
    run = revisor(*project.args(), "--database-url", any_db_url, "--output", "json", "upgrade")
    assert run.code == 4
    where = f"failed at {path}:{line}: RuntimeError: boom in 0005"
    assert where in run.result["error"]
    assert where in run.err
    assert where in history_rows(any_db_url)[-1]["error"]
