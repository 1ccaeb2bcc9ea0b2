"""Migrations the operator runs to the end: upgrade, downgrade, failures, locks, approval.

One operator (in-process, kopf's KopfRunner) serves the whole module; each
test has its own namespace (which that operator watches by prefix) and its
own PostgreSQL database. Pods run the real ``revisor`` engine as local
processes, so what the tests read back from the database is what the Jobs
did to it.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.cluster.conftest import Kube
from tests.support.kube import kubectl as find_kubectl
from tests.support.kube import wait_for
from tests.support.operator_kit import (
    HEAD,
    RESYNC_SECONDS,
    REVS,
    create,
    create_config_map,
    create_secret,
    db_tables,
    db_version,
    engine_upgrade,
    history_rows,
    jobs_of,
    migration,
    patch_spec,
    read,
    ready,
    replace_config_map,
    settled,
    slow,
    unique_prefix,
)
from tests.support.projects import REPO, Rev, chain

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.usefixtures("operator")]

PREFIX = unique_prefix("runs")


def test_target_change_downgrades_in_a_new_job(kube: Kube, ns: str, pg_url: str) -> None:
    """head -> Succeeded at the head; target set to the first revision -> a second Job downgrades."""
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, REVS)
    create(kube, ns, migration("app"))

    first = settled(kube, ns, "app")
    status = first["status"]
    assert status["phase"] == "Succeeded", status
    assert ready(first)["status"] == "True"
    assert ready(first)["reason"] == "Migrated"
    assert status["currentRevision"] == HEAD
    assert [s["revision"] for s in status["lastRun"]["applied"]] == [r.id for r in REVS]
    assert db_version(pg_url) == {HEAD}

    generation = patch_spec(kube, ns, "app", {"target": REVS[0].id})
    assert generation == 2
    second = settled(kube, ns, "app", generation=2, runs=2)
    status = second["status"]
    assert status["phase"] == "Succeeded", status
    assert status["currentRevision"] == REVS[0].id
    assert status["previousRevision"] == HEAD
    assert status["lastRun"]["direction"] == "downgrade"
    assert [s["revision"] for s in status["lastRun"]["applied"]] == [REVS[2].id, REVS[1].id]
    assert [(h["generation"], h["direction"]) for h in status["history"]] == [
        (2, "downgrade"),
        (1, "upgrade"),
    ]
    assert db_version(pg_url) == {REVS[0].id}
    assert db_tables(pg_url) >= {"t1"} and not db_tables(pg_url) & {"t2", "t3"}
    jobs = jobs_of(kube, ns, "app")
    assert sorted(j["metadata"]["annotations"]["revisor.dev/generation"] for j in jobs) == [
        "1",
        "2",
    ]


FAILING = Rev(
    id="0004bad00000",
    down=REVS[2].id,
    message="fails halfway",
    upgrade="op.create_table('t4', sa.Column('id', sa.Integer))\nraise RuntimeError('boom in 0004')",
    downgrade="op.drop_table('t4')",
)


def _timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_config_map_with_env_py_runs_it_and_not_as_a_revision(
    kube: Kube, ns: str, pg_url: str
) -> None:
    """``source.envPy`` with env.py beside the revisions in the ConfigMap.

    The pod mounts the ConfigMap as the kubelet does (every key a symlink into
    ``..data``): env.py is the project's environment, run on the engine's
    connection, and never loaded as a revision, on the run and on the run at
    head that follows it.
    """
    create_secret(kube, ns, pg_url)
    env_py = (REPO / "examples" / "shop" / "migrations" / "env.py").read_text()
    create_config_map(kube, ns, REVS, extra={"env.py": env_py})
    create(
        kube, ns, migration("app", source={"configMap": {"name": "app-migrations"}, "envPy": True})
    )
    first = settled(kube, ns, "app")
    assert first["status"]["phase"] == "Succeeded", first["status"]
    assert first["status"]["currentRevision"] == HEAD
    assert db_version(pg_url) == {HEAD}
    assert [s["revision"] for s in first["status"]["lastRun"]["applied"]] == [r.id for r in REVS]


def test_spec_change_during_a_run_is_applied_right_after_it(
    kube: Kube, ns: str, pg_url: str, tmp_path: Path
) -> None:
    """A target changed while a Job runs is queued, then run as soon as that Job is recorded."""
    flag = tmp_path / "hold"
    flag.touch()
    revs = [REVS[0], slow(REVS[1], flag), REVS[2]]
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, revs)
    create(kube, ns, migration("app"))
    try:
        wait_for(lambda: db_version(pg_url), lambda v: v == {REVS[0].id}, timeout=60)
        patch_spec(kube, ns, "app", {"target": REVS[0].id})
        queued = wait_for(
            lambda: read(kube, ns, "app"),
            lambda obj: "generation 2 will be applied after it" in str(obj.get("status")),
            what="the running verdict to mention the queued generation",
        )
        assert queued["status"]["phase"] == "Running"
        assert len(jobs_of(kube, ns, "app")) == 1
    finally:
        flag.unlink()

    done = settled(kube, ns, "app", generation=2, runs=2)
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert status["currentRevision"] == REVS[0].id
    assert [(h["generation"], h["direction"]) for h in status["history"]] == [
        (2, "downgrade"),
        (1, "upgrade"),
    ]
    jobs = {
        j["metadata"]["annotations"]["revisor.dev/generation"]: j for j in jobs_of(kube, ns, "app")
    }
    # Started by recording the first run, not by the next resync tick.
    finished = _timestamp(jobs["1"]["status"]["completionTime"])
    started = _timestamp(jobs["2"]["metadata"]["creationTimestamp"])
    assert (started - finished).total_seconds() < RESYNC_SECONDS / 2


@dataclass(frozen=True)
class Outcome:
    on_failure: str
    phase: str
    reason: str
    left_at: str


@pytest.mark.parametrize(
    "outcome",
    [
        Outcome("Rollback", "RolledBack", "RolledBack", left_at=REVS[0].id),
        Outcome("Stop", "Failed", "MigrationFailed", left_at=REVS[2].id),
    ],
    ids=lambda o: o.on_failure,
)
def test_failed_revision_rolls_back_or_stops(
    kube: Kube, ns: str, pg_url: str, tmp_path: Path, outcome: Outcome
) -> None:
    """A revision raises: Rollback returns to the starting revision, Stop keeps the last good one."""
    revs = [*REVS, FAILING]
    engine_upgrade(pg_url, revs, REVS[0].id, tmp_path)  # the run starts from the first revision
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, revs)
    create(kube, ns, migration("app", onFailure=outcome.on_failure))

    done = settled(kube, ns, "app")
    status = done["status"]
    assert status["phase"] == outcome.phase, status
    condition = ready(done)
    assert condition["status"] == "False"
    assert condition["reason"] == outcome.reason
    assert "boom in 0004" in condition["message"]
    assert status["currentRevision"] == outcome.left_at
    assert status["lastRun"]["exitCode"] == 4
    assert db_version(pg_url) == {outcome.left_at}
    assert "t4" not in db_tables(pg_url)
    jobs = jobs_of(kube, ns, "app")
    assert len(jobs) == 1 and jobs[0]["status"].get("failed")


def _advisory_lock_waiters(url: str) -> int:
    """Engine sessions connected while another engine session holds the migration lock.

    A waiter polls the lock (it never sits inside pg_advisory_lock), so it
    shows as a connected ``revisor`` session that holds no advisory lock.
    """
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    query = (
        "SELECT count(*) FILTER (WHERE l.pid IS NULL), count(*) FILTER (WHERE l.pid IS NOT NULL) "
        "FROM pg_stat_activity a LEFT JOIN pg_locks l "
        "ON l.pid = a.pid AND l.locktype = 'advisory' AND l.granted "
        "WHERE a.application_name = 'revisor' AND a.datname = current_database()"
    )
    try:
        with engine.connect() as conn:
            waiting, holding = conn.execute(sa.text(query)).one()
            return int(waiting) if holding == 1 else 0
    finally:
        engine.dispose()


def test_two_resources_on_one_database_are_serialized_by_the_lock(
    kube: Kube, ns: str, pg_url: str, tmp_path: Path
) -> None:
    """Two resources, one database: one Job migrates while the other waits, then finds nothing."""
    flag = tmp_path / "hold"
    flag.touch()
    revs = [REVS[0], slow(REVS[1], flag), REVS[2]]
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, revs)
    create(kube, ns, migration("left"))
    create(kube, ns, migration("right"))
    try:
        # One engine sits inside the slow revision; the other queues on the advisory lock.
        wait_for(
            lambda: _advisory_lock_waiters(pg_url),
            lambda waiters: waiters == 1,
            timeout=60,
            what="the second runner to wait on the migration lock",
        )
    finally:
        flag.unlink()

    results = {name: settled(kube, ns, name) for name in ("left", "right")}
    for obj in results.values():
        assert obj["status"]["phase"] == "Succeeded", obj["status"]
        assert ready(obj)["status"] == "True"
        assert obj["status"]["currentRevision"] == HEAD
    applied = sorted(len(obj["status"]["lastRun"]["applied"]) for obj in results.values())
    assert applied == [0, 3]
    assert db_version(pg_url) == {HEAD}
    runs = history_rows(pg_url, "run")
    assert len(runs) == 1, runs
    assert runs[0]["status"] == "succeeded"
    steps = history_rows(pg_url, "step")
    assert [s["revision"] for s in steps] == [r.id for r in revs]
    assert {s["run_id"] for s in steps} == {runs[0]["run_id"]}


def test_kubectl_wait_for_ready_returns_once_migrated(
    kube: Kube, ns: str, pg_url: str, kubectl: str
) -> None:
    """`kubectl wait --for=condition=Ready dbm/NAME` blocks until the migration is done."""
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, REVS)
    create(kube, ns, migration("app"))
    waited = subprocess.run(
        [kubectl, "--kubeconfig", str(kube.kubeconfig), "-n", ns, "wait",
         "--for=condition=Ready", "dbm/app", "--timeout=90s"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert waited.returncode == 0, waited.stderr
    assert "condition met" in waited.stdout
    assert read(kube, ns, "app")["status"]["currentRevision"] == HEAD


@pytest.fixture(scope="module")
def kubectl() -> str:
    from localkube import BinariesMissingError

    try:
        return find_kubectl()
    except BinariesMissingError as error:
        pytest.skip(f"no kubectl: {error}")


def test_new_revision_in_config_map_runs_without_spec_change(
    kube: Kube, ns: str, pg_url: str
) -> None:
    """A revision file added to the ConfigMap: a new Job moves the database to the new head."""
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, REVS[:2])
    create(kube, ns, migration("app"))
    first = settled(kube, ns, "app")
    assert first["status"]["currentRevision"] == REVS[1].id

    replace_config_map(kube, ns, REVS)
    second = settled(kube, ns, "app", runs=2)
    status = second["status"]
    assert second["metadata"]["generation"] == 1
    assert status["phase"] == "Succeeded", status
    assert status["currentRevision"] == HEAD
    assert [s["revision"] for s in status["lastRun"]["applied"]] == [HEAD]
    assert db_version(pg_url) == {HEAD}
    assert len(jobs_of(kube, ns, "app")) == 2


def test_an_unlabelled_config_map_is_read_on_resync(kube: Kube, ns: str, pg_url: str) -> None:
    """Without the revisor.dev/scripts label the operator never watches the ConfigMap (the
    API filters the watch), yet a new revision in it still runs, at the next resync."""
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, REVS[:2], labelled=False)
    create(kube, ns, migration("app"))
    assert settled(kube, ns, "app")["status"]["currentRevision"] == REVS[1].id
    replace_config_map(kube, ns, REVS)
    second = settled(kube, ns, "app", runs=2)
    assert second["status"]["currentRevision"] == HEAD
    assert db_version(pg_url) == {HEAD}


def test_approval_required_waits_for_the_plan_hash(kube: Kube, ns: str, pg_url: str) -> None:
    """approval.required: a plan first (AwaitingApproval); its hash in spec applies it."""
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, REVS)
    create(kube, ns, migration("app", approval={"required": True}))

    planned = settled(kube, ns, "app")
    status = planned["status"]
    assert status["phase"] == "AwaitingApproval", status
    assert ready(planned)["status"] == "False"
    plan = status["plan"]
    assert [s["revision"] for s in plan["steps"]] == [r.id for r in REVS]
    assert db_version(pg_url) == set()

    patch_spec(kube, ns, "app", {"approval": {"required": True, "planHash": plan["hash"]}})
    applied = settled(kube, ns, "app", generation=2, runs=2)
    status = applied["status"]
    assert status["phase"] == "Succeeded", status
    assert status["currentRevision"] == HEAD
    assert db_version(pg_url) == {HEAD}

    # A new revision makes the approved hash stale: the engine refuses it and
    # the resource asks for the new plan's approval, without touching the database.
    revs = chain(4)
    replace_config_map(kube, ns, revs)
    stale = settled(kube, ns, "app", generation=2, runs=3)
    status = stale["status"]
    assert status["phase"] == "AwaitingApproval", status
    assert ready(stale)["reason"] == "PlanChanged"
    assert [s["revision"] for s in status["plan"]["steps"]] == [revs[3].id]
    assert status["plan"]["hash"] in ready(stale)["message"]
    assert db_version(pg_url) == {HEAD}

    approval = {"required": True, "planHash": status["plan"]["hash"]}
    patch_spec(kube, ns, "app", {"approval": approval})
    final = settled(kube, ns, "app", generation=3, runs=4)
    assert final["status"]["phase"] == "Succeeded", final["status"]
    assert db_version(pg_url) == {revs[3].id}
