"""A revision that times out waiting for a table lock is retried, or fails naming who held it.

``--ddl-lock-timeout`` keeps a migration from queueing behind a long reader
(and everyone else from queueing behind the migration); ``--ddl-lock-retries``
re-runs the whole revision after a growing, jittered pause, as pgroll does.
The lock here is a real one: another session reads the table in an open
transaction (ACCESS SHARE) for a few seconds, which ``ALTER TABLE`` (ACCESS
EXCLUSIVE) must wait for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.engine.conftest import history_rows, version
from tests.support.projects import Rev, chain, make_project

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ALTER = Rev(
    id="0002a0000000",
    down="0001t0000000",
    message="add t1.note",
    upgrade="op.add_column('t1', sa.Column('note', sa.Text))",
    downgrade="op.drop_column('t1', 'note')",
)


@contextmanager
def reader_holding_t1(url: str, *, seconds: float) -> Iterator[int]:
    """Another session reads t1 in an open transaction for ``seconds``; yields its pid."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    conn = engine.connect()
    pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    conn.execute(sa.text("SELECT count(*) FROM t1"))  # ACCESS SHARE until the transaction ends
    release = threading.Timer(seconds, conn.rollback)
    release.start()
    try:
        yield int(pid)
    finally:
        release.join()
        conn.close()
        engine.dispose()


def _project(tmp_path: Path, pg_url: str, revisor) -> tuple[str, ...]:
    project = make_project(tmp_path, [*chain(1), ALTER])
    args = (*project.args(), "--database-url", pg_url, "--output", "json")
    assert revisor(*args, "upgrade", "0001").code == 0
    return args


def test_without_retries_the_timeout_fails_the_revision_naming_the_blocker(
    revisor, pg_url: str, tmp_path: Path
) -> None:
    args = _project(tmp_path, pg_url, revisor)
    with reader_holding_t1(pg_url, seconds=3) as pid:
        run = revisor(*args, "upgrade", "--ddl-lock-timeout", "300ms")
    assert run.code == 4
    error = run.result["error"]
    assert "canceling statement due to lock timeout" in error
    assert f"blocked by pid {pid} (idle in transaction" in error
    assert "holding AccessShareLock on t1; its last query: SELECT count(*) FROM t1" in error
    assert version(pg_url) == {"0001t0000000"}


def test_retries_wait_the_reader_out_and_are_recorded(revisor, pg_url: str, tmp_path: Path) -> None:
    args = _project(tmp_path, pg_url, revisor)
    started = time.monotonic()
    with reader_holding_t1(pg_url, seconds=3) as pid:
        run = revisor(*args, "upgrade", "--ddl-lock-timeout", "300ms", "--ddl-lock-retries", "10")
    assert run.code == 0, run.err
    assert time.monotonic() - started >= 3, "it ran only once the reader let go"
    assert "0002a0000000 waited too long for a table lock; retrying it in" in run.err
    assert "(retry 1 of 10)" in run.err and f"blocked by pid {pid}" in run.err
    assert [s["revision"] for s in run.result["applied"]] == ["0002a0000000"]
    assert version(pg_url) == {"0002a0000000"}
    steps = history_rows(pg_url, "step")
    retried = [s for s in steps if s["status"] == "retried"]
    assert retried and all(s["revision"] == "0002a0000000" for s in retried)
    assert "lock timeout" in retried[0]["error"]
    assert [s["status"] for s in steps if s["revision"] == "0002a0000000"][-1] == "applied"


def test_a_revision_with_an_autocommit_block_is_never_retried(
    revisor, pg_url: str, tmp_path: Path
) -> None:
    """Part of it may have committed: running it again could apply that part twice."""
    project = make_project(
        tmp_path,
        [
            *chain(1),
            Rev(
                id="0002c0000000",
                down="0001t0000000",
                message="concurrent",
                upgrade="""
                    op.add_column('t1', sa.Column('note', sa.Text))
                    with op.get_context().autocommit_block():
                        op.execute('SELECT 1')
                """,
            ),
        ],
    )
    args = (*project.args(), "--database-url", pg_url, "--output", "json")
    assert revisor(*args, "upgrade", "0001").code == 0
    with reader_holding_t1(pg_url, seconds=2):
        run = revisor(*args, "upgrade", "--ddl-lock-timeout", "200ms", "--ddl-lock-retries", "5")
    assert run.code == 4
    assert "retrying" not in run.err
    assert not [s for s in history_rows(pg_url, "step") if s["status"] == "retried"]
