"""``revisor_history`` created by an older Revisor: read as it is, given new columns when written.

The table only gains nullable columns. A database that already has it (from
the release before ``statements_committed``/``statements`` existed) must
keep working: ``history --runs`` and ``verify`` read it untouched, and the
first run that writes to it adds the columns with ``ALTER TABLE ... ADD``,
keeping every old row.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.engine.conftest import history_rows, version
from tests.support.projects import Rev, chain, make_project


def old_history_table(metadata: sa.MetaData) -> sa.Table:
    """The table exactly as the release before the added columns defined it."""
    return sa.Table(
        "revisor_history",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(36), nullable=False, index=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("command", sa.String(16), nullable=False),
        sa.Column("direction", sa.String(10), nullable=False),
        sa.Column("from_revision", sa.String(255)),
        sa.Column("to_revision", sa.String(255)),
        sa.Column("revision", sa.String(64)),
        sa.Column("description", sa.Text),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("duration_seconds", sa.Float),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("checksum", sa.String(64)),
        sa.Column("runner", sa.String(255)),
        sa.Column("engine_version", sa.String(32)),
    )


def _with_old_table(url: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    table = old_history_table(sa.MetaData())
    with engine.begin() as conn:
        table.create(conn)
        conn.execute(
            table.insert().values(
                run_id="0ld-run", kind="run", command="upgrade", direction="upgrade",
                from_revision="base", to_revision="head", status="succeeded",
                started_at=dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC), runner="old-pod",
            )
        )  # fmt: skip
    engine.dispose()


def _columns(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns("revisor_history")}
    finally:
        engine.dispose()


def test_an_old_history_table_is_read_as_it_is_and_upgraded_by_the_next_run(
    revisor, any_db_url: str, tmp_path: Path
) -> None:
    _with_old_table(any_db_url)
    project = make_project(tmp_path, chain(2))
    args = (*project.args(), "--database-url", any_db_url)
    runs = revisor(*args, "history", "--runs")
    assert runs.code == 0, runs.err
    assert "by old-pod" in runs.out
    assert revisor(*args, "verify").code == 0
    assert "statements" not in _columns(any_db_url), "reading never alters the table"
    run = revisor(*args, "upgrade")
    assert run.code == 0, run.err
    assert {"statements_committed", "statements"} <= _columns(any_db_url)
    assert version(any_db_url) == {"0002t0000000"}
    rows = history_rows(any_db_url)
    old = rows[0]
    assert (old["run_id"], old["runner"], old["status"]) == ("0ld-run", "old-pod", "succeeded")
    assert [r["status"] for r in rows] == ["succeeded", "succeeded"]
    assert all(s["statements"] is None for s in history_rows(any_db_url, "step"))
    assert revisor(*args, "downgrade", "base").code == 0, "a second run finds them there"


@pytest.mark.mariadb
def test_a_partial_failure_is_recorded_in_an_old_table(
    revisor, mysql_url: str, tmp_path: Path
) -> None:
    """On MariaDB the columns exist by the time a half-applied step's row is written."""
    _with_old_table(mysql_url)
    half = Rev(id="0002h0000000", down="0001t0000000", message="half",
               upgrade="op.create_table('a', sa.Column('id', sa.Integer))\n"
                       "op.execute('SELECT * FROM nope')")  # fmt: skip
    project = make_project(tmp_path, [*chain(1), half])
    run = revisor(*project.args(), "--database-url", mysql_url, "upgrade")
    assert run.code == 8, run.err
    step = history_rows(mysql_url, "step")[-1]
    assert (step["status"], step["statements_committed"]) == ("partial", 1)
    assert step["statements"] == "CREATE TABLE a ( id INTEGER )"
