"""Concurrent runners, the lock timeout, and a runner killed mid-revision."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from revisor.connection import resolve_database
from revisor.dialects import lock_key

from tests.engine.conftest import history_rows, tables, version
from tests.support.projects import Rev, chain, make_project, revisor_process

pytestmark = pytest.mark.slow


def slow_chain(flag: Path) -> list[Rev]:
    """Three revisions; the second sleeps while ``flag`` exists (after creating its table)."""
    revs = chain(3)
    revs[1] = Rev(
        id=revs[1].id,
        down=revs[1].down,
        message="slow one",
        upgrade=(
            "op.create_table('t2', sa.Column('id', sa.Integer))\n"
            f"import os\nwhile os.path.exists({str(flag)!r}):\n    time.sleep(0.05)"
        ),
        downgrade="op.drop_table('t2')",
    )
    return revs


def test_concurrent_runners_exactly_one_applies_and_all_succeed(db_url, tmp_path: Path) -> None:
    """N processes race on one database: one migrates, the others wait, find nothing, exit 0."""
    flag = tmp_path / "hold"
    flag.touch()
    project = make_project(tmp_path, slow_chain(flag))
    procs = [
        revisor_process(*project.args(), "--database-url", db_url, "--output", "json", "upgrade")
        for _ in range(5)
    ]
    time.sleep(1.0)  # let all five reach the lock while the first is inside revision 2
    flag.unlink()
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 5, [err for _, err in outputs]
    applied_counts = sorted(len(__import__("json").loads(out)["applied"]) for out, _ in outputs)
    assert applied_counts == [0, 0, 0, 0, 3]
    assert version(db_url) == {"0003t0000000"}
    runs = history_rows(db_url)
    assert len(runs) == 1 and runs[0]["status"] == "succeeded"


@pytest.mark.postgres
def test_lock_timeout_is_exit_3_and_names_the_holder(revisor, pg_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(1))
    key = lock_key(resolve_database(url=pg_url), schema=None, table="alembic_version")
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.connect() as holder:
        holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key.value})
        holder.commit()
        started = time.monotonic()
        run = revisor(
            *project.args(),
            "--database-url",
            pg_url,
            "--output",
            "json",
            "upgrade",
            "--lock-timeout",
            "0.5",
        )
        waited = time.monotonic() - started
        assert run.code == 3
        assert run.result["reason"] == "LockTimeout"
        assert "another migration holds the lock" in run.err and "held by backend pid" in run.err
        assert 0.4 < waited < 10
        tried = revisor(*project.args(), "--database-url", pg_url, "upgrade", "--lock-timeout", "0")
        assert tried.code == 3
    engine.dispose()
    assert version(pg_url) == set()


def test_sqlite_lock_timeout_is_exit_3(revisor, tmp_path: Path) -> None:
    import fcntl

    db = tmp_path / "app.db"
    project = make_project(tmp_path, chain(1))
    with (tmp_path / "app.db.revisor-lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        run = revisor(
            *project.args(), "--database-url", f"sqlite:///{db}", "upgrade", "--lock-timeout", "0.3"
        )
    assert run.code == 3 and "lock file" in run.err


def test_runner_killed_mid_revision_leaves_last_commit_and_a_free_lock(
    db_url, tmp_path: Path
) -> None:
    """SIGKILL inside revision 2: database at revision 1, lock free, rerun converges."""
    flag = tmp_path / "hold"
    flag.touch()
    project = make_project(tmp_path, slow_chain(flag))
    proc = revisor_process(
        *project.args(), "--database-url", db_url, "upgrade", start_new_session=True
    )
    deadline = time.monotonic() + 30
    while version(db_url) != {"0001t0000000"}:
        assert time.monotonic() < deadline, "revision 1 never committed"
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.3)  # now inside revision 2, which has created t2 and is sleeping
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert version(db_url) == {"0001t0000000"}
    assert "t2" not in tables(db_url), "revision 2's uncommitted DDL is gone"
    flag.unlink()
    refused = revisor_process(*project.args(), "--database-url", db_url, "upgrade", "ffff")
    refused.communicate(timeout=60)
    assert refused.returncode == 2
    assert [r["status"] for r in history_rows(db_url)] == ["running"], "bad input writes nothing"
    rerun = revisor_process(
        *project.args(), "--database-url", db_url, "upgrade", "--lock-timeout", "20"
    )
    _, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    assert version(db_url) == {"0003t0000000"}
    runs = history_rows(db_url)
    assert [r["status"] for r in runs] == ["interrupted", "succeeded"]
    assert "marked 1 run(s) left by a stopped runner as interrupted" in err
