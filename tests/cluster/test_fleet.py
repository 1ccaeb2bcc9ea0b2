"""DatabaseMigrationSets on a real control plane: fleets of SQLite databases, rolled out.

One operator (in-process) serves the module. Each test makes a fleet of
tenants (a SQLite file each, behind a labelled Secret), a ConfigMap of
revisions and a set, and reads the outcome from the set's status, its
children, their Jobs (counted by a watch: never more running than the wave
allows), its Events, and the databases themselves.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from kopf.testing import KopfRunner
from kubernetes import client

from tests.cluster.conftest import Kube
from tests.support.fleet_kit import (
    JobCounter,
    child_of,
    children,
    create_set,
    delete_set,
    install_set_crd,
    kubectl_get,
    label_secret,
    migration_set,
    names_of,
    patch_set,
    read_set,
    ready_message,
    set_gone,
    set_reaches,
    tenant_secret,
)
from tests.support.kube import wait_for
from tests.support.operator_kit import (
    HEAD,
    REVS,
    create_config_map,
    db_tables,
    db_version,
    events_with,
    history_rows,
    install_crd,
    running_operator,
    slow,
)

pytestmark = pytest.mark.cluster

#: The ``ns`` fixture (tests/cluster/conftest.py) names namespaces after it.
PREFIX = "fleet"
#: What REVS[0] creates: a tenant whose database already has it cannot be migrated.
FIRST_TABLE = "t1"


@pytest.fixture(scope="module")
def fleet_operator(kube: Kube) -> Iterator[KopfRunner]:
    install_crd(kube)
    install_set_crd(kube)
    with running_operator(kube, f"{PREFIX}-*") as runner:
        yield runner
    print(runner.output)


@pytest.fixture
def dbs(tmp_path: Path) -> Path:
    """A directory the engine's pods may write SQLite files to."""
    tmp_path.chmod(0o777)
    return tmp_path


def sqlite(dbs: Path, tenant: str) -> str:
    return f"sqlite:///{dbs / f'{tenant}.db'}"


def tenants(kube: Kube, ns: str, dbs: Path, names: list[str], **labels: dict[str, str]) -> None:
    for name in names:
        tenant_secret(kube, ns, name, sqlite(dbs, name), {"tenant": "yes", **labels.get(name, {})})


@contextlib.contextmanager
def counting(kube: Kube, ns: str, set_name: str) -> Iterator[JobCounter]:
    counter = JobCounter(kube, ns, set_name)
    try:
        yield counter
    finally:
        counter.stop()


@pytest.mark.usefixtures("fleet_operator")
def test_three_waves_roll_out_in_order_never_more_than_max_parallel(
    process_kubelet: Kube, ns: str, dbs: Path
) -> None:
    """A canary, then the tenants labelled early two at a time, then the rest three at a time."""
    kube = process_kubelet
    names = ["acme", "beta", "delta", "gamma", "kappa", "omega"]
    tenants(kube, ns, dbs, names, beta={"tier": "early"}, gamma={"tier": "early"})
    create_config_map(kube, ns, REVS)
    waves = [
        {"name": "canary", "targets": ["acme"], "maxParallel": 1},
        {"name": "early", "selector": {"matchLabels": {"tier": "early"}}, "maxParallel": 2},
        {"name": "rest", "maxParallel": 3},
    ]
    with counting(kube, ns, "shop") as jobs:
        create_set(kube, ns, migration_set("shop", waves=waves))
        done = set_reaches(kube, ns, "shop", "Succeeded", "Halted", "Failed")
    status = done["status"]
    assert status["phase"] == "Succeeded", ready_message(done)
    assert status["readyTargets"] == "6/6"
    assert status["counts"] == {"ready": 6, "running": 0, "failed": 0, "pending": 0}
    assert status["currentRevision"] == HEAD
    assert [(w["name"], w["targets"], w["ready"]) for w in status["waves"]] == [
        ("canary", 1, 1),
        ("early", 2, 2),
        ("rest", 3, 3),
    ]
    assert jobs.max_running <= 3
    assert all(count == 1 for count in jobs.per_child().values()), jobs.per_child()
    # Each wave ran after the one before it had finished: by the runs in the databases.
    runs = {n: history_rows(sqlite(dbs, n), "run")[0] for n in names}
    assert all(db_version(sqlite(dbs, n)) == {HEAD} for n in names)
    canary_done = runs["acme"]["finished_at"]
    early = [runs[n] for n in ("beta", "gamma")]
    rest = [runs[n] for n in ("delta", "kappa", "omega")]
    assert all(r["started_at"] >= canary_done for r in early)
    assert all(r["started_at"] >= max(e["finished_at"] for e in early) for r in rest)
    # Every tenant has its own DatabaseMigration, labelled for kubectl.
    listed = children(kube, ns, "shop")
    assert len(listed) == 6
    assert {c["metadata"]["labels"]["revisor.dev/target"] for c in listed} == set(names)
    table = kubectl_get(kube, ns, "dbmset")
    print(f"$ kubectl get dbmset\n{table}")  # the README shows this, from a real run
    assert "TARGET" in table and "6/6" in table and "3/3 rest" in table and "Succeeded" in table
    events = events_with(
        kube, ns, ["RolloutStarted", "WaveStarted", "RolloutComplete"], involving="shop"
    )
    started = sorted(e["message"] for e in events if e["reason"] == "WaveStarted")
    assert len(started) == 3 and "Wave 1/3 (canary) started" in started[0]


@pytest.mark.usefixtures("fleet_operator")
def test_halt_at_a_broken_tenant_leaves_later_waves_untouched_then_goes_on(
    process_kubelet: Kube, ns: str, dbs: Path
) -> None:
    """A tenant whose database already has the first revision's table halts the rollout."""
    kube = process_kubelet
    names = ["a1", "b1", "b2", "c1", "c2"]
    tenants(kube, ns, dbs, names)
    with contextlib.closing(sqlite3.connect(dbs / "b2.db")) as broken:
        broken.execute(f"CREATE TABLE {FIRST_TABLE} (id integer)")  # what rev 1 would create
        broken.commit()
    (dbs / "b2.db").chmod(0o666)
    create_config_map(kube, ns, REVS)
    waves = [{"targets": ["a*"]}, {"targets": ["b*"], "maxParallel": 2}, {"maxParallel": 2}]
    create_set(kube, ns, migration_set("shop", waves=waves))
    halted = set_reaches(kube, ns, "shop", "Halted", "Succeeded", "Failed")
    status = halted["status"]
    assert status["phase"] == "Halted", ready_message(halted)
    assert status["failedTargets"][0]["target"] == "b2"
    message = ready_message(halted)
    assert "'b2'" in message and FIRST_TABLE in message
    assert status["counts"]["failed"] == 1 and status["counts"]["ready"] == 2
    # The third wave never started: no child, no table.
    assert child_of(kube, ns, "shop", "c1") is None and child_of(kube, ns, "shop", "c2") is None
    assert not (dbs / "c1.db").exists() or db_tables(sqlite(dbs, "c1")) == set()
    events_with(kube, ns, ["Halted"], involving="shop", warnings_only=True)

    # Fixed by hand, and run again (the child's retry annotation): the halt lifts.
    with contextlib.closing(sqlite3.connect(dbs / "b2.db")) as fixed:
        fixed.execute(f"DROP TABLE {FIRST_TABLE}")
        fixed.commit()
    broken_child = child_of(kube, ns, "shop", "b2")
    assert broken_child is not None
    client.CustomObjectsApi(kube.api).patch_namespaced_custom_object(
        "revisor.dev",
        "v1alpha1",
        ns,
        "databasemigrations",
        broken_child["metadata"]["name"],
        {"metadata": {"annotations": {"revisor.dev/retry": "1"}}},
    )
    done = set_reaches(kube, ns, "shop", "Succeeded", timeout=240)
    assert done["status"]["readyTargets"] == "5/5"
    assert all(db_version(sqlite(dbs, n)) == {HEAD} for n in names)


@pytest.mark.usefixtures("fleet_operator")
def test_continue_goes_past_failures_until_max_failures(
    process_kubelet: Kube, ns: str, dbs: Path
) -> None:
    kube = process_kubelet
    names = ["a-ok", "b-bad", "c-ok", "d-bad", "e-ok"]
    tenants(kube, ns, dbs, names)
    for bad in ("b-bad", "d-bad"):
        with contextlib.closing(sqlite3.connect(dbs / f"{bad}.db")) as db:
            db.execute(f"CREATE TABLE {FIRST_TABLE} (id integer)")
            db.commit()
        (dbs / f"{bad}.db").chmod(0o666)
    create_config_map(kube, ns, REVS)
    create_set(kube, ns, migration_set("shop", failurePolicy="Continue", maxFailures=1))
    halted = set_reaches(kube, ns, "shop", "Halted", "Succeeded", "Failed")
    status = halted["status"]
    assert status["phase"] == "Halted", ready_message(halted)
    assert "more than maxFailures 1 failed" in ready_message(halted)
    assert status["counts"] == {"ready": 2, "running": 0, "failed": 2, "pending": 1}
    assert [t["target"] for t in status["failedTargets"]] == ["b-bad", "d-bad"]
    assert child_of(kube, ns, "shop", "e-ok") is None


@pytest.mark.usefixtures("fleet_operator")
def test_pause_resume_a_secret_labelled_meanwhile_joins_and_one_unlabelled_leaves(
    process_kubelet: Kube, ns: str, dbs: Path
) -> None:
    kube = process_kubelet
    tenants(kube, ns, dbs, ["acme", "beta"])
    flag = dbs / "hold"
    flag.touch()
    create_config_map(kube, ns, [REVS[0], slow(REVS[1], flag), REVS[2]])
    create_set(kube, ns, migration_set("shop", paused=True, maxParallel=2))
    paused = set_reaches(kube, ns, "shop", "Paused")
    assert "Paused at wave 1/1 (rest): 0/2 Ready" in ready_message(paused)
    assert children(kube, ns, "shop") == []

    patch_set(kube, ns, "shop", {"spec": {"paused": False}})
    wait_for(
        lambda: read_set(kube, ns, "shop"),
        lambda o: o["status"]["counts"]["running"] == 2,
        timeout=60,
        what="both tenants running",
    )
    tenant_secret(kube, ns, "zeta", sqlite(dbs, "zeta"))  # labelled during the rollout
    joined = wait_for(
        lambda: read_set(kube, ns, "shop"),
        lambda o: o["status"]["targets"] == 3,
        timeout=60,
        what="the new tenant to join",
    )
    assert joined["status"]["counts"]["pending"] == 1
    flag.unlink()
    done = set_reaches(kube, ns, "shop", "Succeeded")
    assert done["status"]["readyTargets"] == "3/3"
    assert db_version(sqlite(dbs, "zeta")) == {HEAD}

    label_secret(kube, ns, "beta", {"tenant": None})
    left = wait_for(
        lambda: read_set(kube, ns, "shop"),
        lambda o: o["status"]["targets"] == 2,
        timeout=60,
        what="the unlabelled tenant to leave",
    )
    assert left["status"]["readyTargets"] == "2/2"
    wait_for(
        lambda: child_of(kube, ns, "shop", "beta"),
        lambda c: c is None,
        timeout=60,
        what="its child to be removed",
    )
    assert db_version(sqlite(dbs, "beta")) == {HEAD}  # its database is left as it is
    events_with(kube, ns, ["Paused", "Resumed", "TargetRemoved"], involving="shop")


@pytest.mark.usefixtures("fleet_operator")
def test_deleting_the_set_removes_its_children_never_a_database(
    process_kubelet: Kube, ns: str, dbs: Path
) -> None:
    kube = process_kubelet
    tenants(kube, ns, dbs, ["acme", "beta"])
    create_config_map(kube, ns, REVS)
    create_set(kube, ns, migration_set("shop", maxParallel=2))
    set_reaches(kube, ns, "shop", "Succeeded")
    assert len(children(kube, ns, "shop")) == 2
    delete_set(kube, ns, "shop")
    wait_for(lambda: set_gone(kube, ns, "shop"), bool, timeout=60, what="the set to go")
    wait_for(
        lambda: names_of(children(kube, ns, "shop")),
        lambda n: n == [],
        timeout=120,
        what="its children to go",
    )
    assert db_version(sqlite(dbs, "acme")) == {HEAD}
    assert db_version(sqlite(dbs, "beta")) == {HEAD}
