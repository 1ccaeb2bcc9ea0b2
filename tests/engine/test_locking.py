"""Concurrent runners, the lock timeout, and a runner killed mid-revision."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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


def test_concurrent_runners_exactly_one_applies_while_the_others_wait_for_its_lock(
    db_url, tmp_path: Path
) -> None:
    """N processes race on one database: one migrates, the others wait, find nothing, exit 0.

    The winner's second revision holds until the test removes a flag, and the
    test removes it only once every other runner has logged that it is
    waiting for the lock. So each of them provably started before the winner
    finished, waited for it, and planned after its commit; no timing involved.
    """
    flag = tmp_path / "hold"
    flag.touch()
    project = make_project(tmp_path, slow_chain(flag))
    argv = [sys.executable, "-m", "revisor", *project.args(), "--database-url", db_url]
    argv += ["--output", "json", "upgrade", "--lock-timeout", "600"]
    logs = [tmp_path / f"runner-{i}.log" for i in range(5)]
    procs = []
    for log in logs:
        with log.open("w") as stderr:
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True))

    def waiting() -> list[Path]:
        return [log for log in logs if "for the lock" in log.read_text()]

    deadline = time.monotonic() + 240  # a hang guard for a loaded machine, not a measurement
    while len(waiting()) < 4:
        assert time.monotonic() < deadline, [log.read_text() for log in logs]
        assert all(p.poll() is None for p in procs), "a runner finished while the winner held"
        time.sleep(0.1)
    flag.unlink()
    results = [json.loads(p.communicate(timeout=240)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0] * 5, [log.read_text() for log in logs]
    winners = [i for i, r in enumerate(results) if r["applied"]]
    assert len(winners) == 1 and len(results[winners[0]]["applied"]) == 3
    assert waiting() == [log for i, log in enumerate(logs) if i not in winners]
    for i, result in enumerate(results):
        if i not in winners:
            assert result["from"] == ["0003t0000000"], "planned only after the winner's commit"
            assert "nothing to do" in logs[i].read_text()
    assert results[winners[0]]["from"] == []
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


@pytest.mark.parametrize(
    ("timeout", "said"),
    [("0.3", "waiting for up to 0.3s for the lock file"), ("0", None)],
    ids=["bounded-wait", "zero-tries-once"],
)
def test_sqlite_lock_timeout_is_exit_3(
    revisor, tmp_path: Path, timeout: str, said: str | None
) -> None:
    """A held lock file: exit 3; a waiting runner says so once, a zero timeout never waits."""
    import fcntl

    db = tmp_path / "app.db"
    project = make_project(tmp_path, chain(1))
    with (tmp_path / "app.db.revisor-lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        run = revisor(
            *project.args(),
            "--database-url",
            f"sqlite:///{db}",
            "upgrade",
            "--lock-timeout",
            timeout,
        )
    assert run.code == 3 and "lock file" in run.err
    if said is None:
        assert "waiting" not in run.err
    else:
        assert said in run.err


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
