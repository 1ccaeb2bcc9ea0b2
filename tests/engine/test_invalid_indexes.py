"""A concurrent index build that fails leaves an INVALID index; the run names it and the fix.

``CREATE INDEX CONCURRENTLY`` runs in an autocommit block, outside any
transaction, so when it fails (a duplicate in a unique index, a statement
timeout, a killed runner) PostgreSQL keeps the half-built index, marked
INVALID, and no rollback removes it. Left alone, every later run of the
same revision fails with ``relation "ix" already exists``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.engine.conftest import version
from tests.support.projects import Rev, make_project

pytestmark = pytest.mark.postgres

REVS = [
    Rev(
        id="1dx000000001",
        message="create t with duplicates",
        upgrade="""
            op.create_table('t', sa.Column('id', sa.Integer), sa.Column('code', sa.Text))
            op.execute("INSERT INTO t VALUES (1, 'a'), (2, 'a')")
        """,
        downgrade="op.drop_table('t')",
    ),
    Rev(
        id="1dx000000002",
        down="1dx000000001",
        message="unique code",
        upgrade="""
            with op.get_context().autocommit_block():
                op.execute("CREATE UNIQUE INDEX CONCURRENTLY ix_code ON t (code)")
        """,
        downgrade="op.execute('DROP INDEX ix_code')",
    ),
]


def _execute(url: str, statement: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()


def test_a_failed_concurrent_index_is_named_with_its_fix_and_does_not_fail_the_next_run_obscurely(
    revisor, pg_url: str, tmp_path: Path
) -> None:
    project = make_project(tmp_path, REVS)
    args = (*project.args(), "--database-url", pg_url, "--output", "json")

    first = revisor(*args, "upgrade")
    assert first.code == 4
    error = first.result["error"]
    assert "could not create unique index" in error
    assert "it left INVALID index(es) public.ix_code" in error
    assert "DROP INDEX CONCURRENTLY public.ix_code before running again" in error
    assert version(pg_url) == {"1dx000000001"}

    second = revisor(*args, "upgrade")
    assert second.code == 4
    assert "INVALID index(es) public.ix_code found" in second.result["warnings"][0]
    assert "warning: INVALID index(es) public.ix_code found" in second.err
    assert 'relation "ix_code" already exists' in second.result["error"]
    assert (
        "public.ix_code is an INVALID index an earlier failed run left behind: "
        "DROP INDEX CONCURRENTLY public.ix_code, then run again"
    ) in second.result["error"]

    _execute(pg_url, "DROP INDEX CONCURRENTLY public.ix_code")
    _execute(pg_url, "UPDATE t SET code = 'b' WHERE id = 2")
    third = revisor(*args, "upgrade")
    assert third.code == 0, third.err
    assert "warnings" not in third.result
    assert version(pg_url) == {"1dx000000002"}
