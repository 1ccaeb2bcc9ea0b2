"""The operator on MariaDB, end to end: the database named by its parts, as PostgreSQL's is.

The Secret holds host, port, database, user and password, and
``spec.database.driver`` says ``mysql+pymysql``, as a MariaDB operator's
generated Secret would be used. On the real control plane, with the real
engine in the Jobs and the suite's real MariaDB server, the module runs what
a PostgreSQL user runs: a plan (``mode: Plan``), an approval, an automatic
rollback when the application's Deployment never becomes Ready, and a
revision that fails after some of its DDL committed (``PartiallyApplied``):
the resource says what is in the database and what a person must do, nothing
runs again by itself, no rollback runs over it, and the documented way out
(finish it by hand, ``revisor stamp``, a new ``revisor.dev/retry``) converges.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from sqlalchemy.engine import make_url

from tests.cluster.conftest import Kube
from tests.cluster.test_rollback import deploy
from tests.support.kube import wait_for
from tests.support.mariadb import MariaDBServer
from tests.support.operator_kit import (
    HEAD,
    REVS,
    create,
    create_config_map,
    db_tables,
    db_version,
    engine_upgrade,
    events_with,
    history_rows,
    jobs_of,
    listed,
    migration,
    patch_spec,
    read,
    ready,
    scripts,
    settled,
    unique_prefix,
)
from tests.support.projects import Rev

pytestmark = [pytest.mark.cluster, pytest.mark.mariadb, pytest.mark.usefixtures("operator")]

PREFIX = unique_prefix("mariadb")
START = REVS[0].id
#: ``spec.database`` for a Secret of parts, the driver named as the CRD documents it.
DATABASE = {"secretRef": {"name": "app-db"}, "driver": "mysql+pymysql"}

#: Two tables commit (each CREATE TABLE commits on MySQL/MariaDB), then a statement fails.
HALF = Rev(
    id="0004h0000000",
    down=HEAD,
    message="half of it",
    upgrade="""
        op.create_table('a', sa.Column('id', sa.Integer, primary_key=True))
        op.create_table('b', sa.Column('id', sa.Integer, primary_key=True))
        op.execute('SELECT * FROM no_such_table_anywhere')
    """,
    downgrade="op.drop_table('b')\nop.drop_table('a')",
)


def create_parts_secret(kube: Kube, namespace: str, url: str) -> None:
    """Secret ``app-db`` with the connection's parts under the CRD's default keys."""
    parts = make_url(url)
    data = {
        "host": parts.host or "",
        "port": str(parts.port),
        "database": parts.database or "",
        "user": parts.username or "",
        "password": parts.password or "",
    }
    secret = {
        "metadata": {"name": "app-db"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }
    client.CoreV1Api(kube.api).create_namespaced_secret(
        namespace, client.V1Secret.model_validate(secret)
    )


def nowhere_the_password(kube: Kube, namespace: str, password: str) -> None:
    """The resource, the Events and the Jobs never hold the database password."""
    assert password
    searched: dict[str, Any] = {
        "resource": read(kube, namespace, "app"),
        "events": listed(kube, "events", namespace),
        "jobs": listed(kube, "jobs", namespace),
    }
    assert [where for where, what in searched.items() if password in json.dumps(what)] == []


def test_plan_then_approval_then_apply_from_a_secret_of_parts(
    kube: Kube, ns: str, mysql_url: str
) -> None:
    """mode: Plan moves nothing; approval.required waits for the plan's hash, then applies."""
    create_parts_secret(kube, ns, mysql_url)
    create_config_map(kube, ns, REVS)
    create(kube, ns, migration("app", database=DATABASE, mode="Plan"))

    planned = settled(kube, ns, "app")
    status = planned["status"]
    assert status["phase"] == "Planned", status
    assert [s["revision"] for s in status["plan"]["steps"]] == [r.id for r in REVS]
    assert db_version(mysql_url) == set()

    patch_spec(kube, ns, "app", {"mode": "Apply", "approval": {"required": True}})
    waiting = settled(kube, ns, "app", generation=2, runs=2)
    status = waiting["status"]
    assert status["phase"] == "AwaitingApproval", status
    plan_hash = status["plan"]["hash"]
    assert plan_hash in ready(waiting)["message"]
    assert db_version(mysql_url) == set()

    patch_spec(kube, ns, "app", {"approval": {"required": True, "planHash": plan_hash}})
    applied = settled(kube, ns, "app", generation=3, runs=3)
    status = applied["status"]
    assert status["phase"] == "Succeeded", status
    assert ready(applied)["reason"] == "Migrated"
    assert status["currentRevision"] == HEAD
    assert db_version(mysql_url) == {HEAD}
    assert [r["status"] for r in history_rows(mysql_url, "run")] == ["succeeded"]
    [job] = [j for j in jobs_of(kube, ns, "app") if j["metadata"]["annotations"].get(
        "revisor.dev/generation") == "3"]  # fmt: skip
    [container] = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["REVISOR_DATABASE_DRIVER"]["value"] == "mysql+pymysql"
    assert env["REVISOR_DATABASE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "app-db",
        "key": "password",
    }
    nowhere_the_password(kube, ns, make_url(mysql_url).password or "")


def test_a_deployment_that_never_becomes_ready_moves_the_schema_back(
    kube: Kube, ns: str, mysql_url: str, tmp_path: Path
) -> None:
    engine_upgrade(mysql_url, REVS, START, tmp_path)
    create_parts_secret(kube, ns, mysql_url)
    create_config_map(kube, ns, REVS)
    rollback = {"deploymentRef": {"name": "web"}, "window": "2m"}
    create(kube, ns, migration("app", database=DATABASE, rollback=rollback))
    deploy(kube, ns, ready_command="false", progress_deadline=5)

    done = wait_for(
        lambda: read(kube, ns, "app"),
        lambda obj: (
            (obj.get("status") or {}).get("phase") in ("RolledBack", "Failed")
            and ((obj["status"].get("rollout") or {}).get("state") in ("RolledBack", "Failed"))
        ),
        timeout=90,
        interval=0.5,
        what="the schema to be rolled back after the failed rollout",
    )
    status = done["status"]
    assert status["phase"] == "RolledBack", status
    assert ready(done)["reason"] == "DeployFailedRolledBack"
    assert status["currentRevision"] == START
    assert [(h["direction"], h["to"]) for h in status["history"]] == [
        ("downgrade", [START]),
        ("upgrade", [HEAD]),
    ]
    assert db_version(mysql_url) == {START}
    assert not {"t2", "t3"} & db_tables(mysql_url)


def test_a_partially_applied_revision_waits_for_a_person_then_converges(
    kube: Kube, ns: str, mysql_url: str, mariadb_server: MariaDBServer, tmp_path: Path
) -> None:
    """Exit 8: its own reason and message, one Job, no retry, no rollback; then the fix."""
    revs = [*REVS, HALF]
    engine_upgrade(mysql_url, revs, START, tmp_path)
    create_parts_secret(kube, ns, mysql_url)
    create_config_map(kube, ns, revs)
    # onFailure defaults to Rollback, and a rollback window is asked for: neither may act.
    spec = {"database": DATABASE, "rollback": {"deploymentRef": {"name": "web"}}}
    create(kube, ns, migration("app", **spec))

    done = settled(kube, ns, "app")
    status = done["status"]
    condition = ready(done)
    assert (status["phase"], condition["reason"]) == ("Failed", "PartiallyApplied"), status
    message = condition["message"]
    assert f"revision {HALF.id} is partially applied" in message
    assert 'It failed at "SELECT * FROM no_such_table_anywhere"' in message
    assert "doesn't exist" in message
    assert "after 2 of its statement(s) had committed" in message
    assert "(1) CREATE TABLE a (" in message and "(2) CREATE TABLE b (" in message
    assert f"the version table still says {HEAD}" in message
    assert f"run `revisor stamp {HALF.id}`" in message
    assert "Not retried, and nothing was rolled back over it" in message
    assert status["lastRun"]["exitCode"] == 8
    assert status["currentRevision"] == HEAD, "the revisions before it stay applied"
    assert "rollout" not in status, "no rollback window over a partially applied revision"
    assert db_version(mysql_url) == {HEAD}
    assert {"t1", "t2", "t3", "a", "b"} <= db_tables(mysql_url)
    [job] = jobs_of(kube, ns, "app")
    assert job["status"].get("failed") == 1, "exit 8 is final: the Job ran one pod"
    [step] = [s for s in history_rows(mysql_url, "step") if s["revision"] == HALF.id]
    assert step["status"] == "partial" and step["statements_committed"] == 2
    events = events_with(kube, ns, {"PartiallyApplied"}, warnings_only=True)
    assert any(f"revision {HALF.id} is partially applied" in e["message"] for e in events)

    # The way out the message names: finish it by hand (its last statement was only a
    # check here), stamp it, then ask for a new run.
    versions = tmp_path / "versions"
    versions.mkdir(exist_ok=True)
    for name, source in scripts(revs).items():
        (versions / name).write_text(source)
    stamp = subprocess.run(
        [sys.executable, "-m", "revisor", "--scripts", str(versions),
         "--database-url", mysql_url, "stamp", HALF.id],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert stamp.returncode == 0, stamp.stderr
    body = {"metadata": {"annotations": {"revisor.dev/retry": "stamped-by-hand"}}}
    client.CustomObjectsApi(kube.api).patch_namespaced_custom_object(
        "revisor.dev", "v1alpha1", ns, "databasemigrations", "app", body
    )
    fixed = settled(kube, ns, "app", runs=2)
    assert fixed["status"]["phase"] == "Succeeded", fixed["status"]
    assert fixed["status"]["currentRevision"] == HALF.id
    assert len(jobs_of(kube, ns, "app")) == 2
    nowhere_the_password(kube, ns, mariadb_server.password)
