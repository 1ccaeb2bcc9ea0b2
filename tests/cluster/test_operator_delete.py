"""Deleting a DatabaseMigration whose Job is running never kills the migration halfway.

The operator's finalizer keeps the resource until its Job has finished; only
then does the resource go (and its Job with it, by garbage collection).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kubernetes import client

from tests.cluster.conftest import Kube
from tests.support.kube import wait_for
from tests.support.operator_kit import (
    HEAD,
    REVS,
    create,
    create_config_map,
    create_secret,
    db_version,
    gone,
    history_rows,
    jobs_of,
    migration,
    read,
    running_operator,
    slow,
)

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]


#: The ``ns`` fixture (tests/cluster/conftest.py) names namespaces after it.
PREFIX = "delete"


def _running(job: dict) -> bool:  # type: ignore[type-arg]
    conditions = job["status"].get("conditions") or []
    return not any(
        c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions
    )


def test_deleting_a_resource_waits_for_its_running_job(
    kube: Kube, ns: str, pg_url: str, tmp_path: Path
) -> None:
    """`kubectl delete dbm` mid-migration: the resource waits, the migration completes."""
    flag = tmp_path / "hold"
    flag.touch()
    revs = [REVS[0], slow(REVS[1], flag), REVS[2]]
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, revs)
    api = client.CustomObjectsApi(kube.api)
    try:
        with running_operator(kube, ns):
            create(kube, ns, migration("app"))
            wait_for(lambda: db_version(pg_url), lambda v: v == {REVS[0].id}, timeout=60)
            [job] = jobs_of(kube, ns, "app")
            api.delete_namespaced_custom_object(
                "revisor.dev", "v1alpha1", ns, "databasemigrations", "app"
            )
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                obj = read(kube, ns, "app")
                assert obj["metadata"].get("deletionTimestamp"), "deletion was requested"
                assert "revisor.dev/finalizer" in obj["metadata"]["finalizers"]
                [still] = jobs_of(kube, ns, "app")
                assert still["metadata"]["uid"] == job["metadata"]["uid"] and _running(still)
                time.sleep(0.2)
            flag.unlink()
            wait_for(lambda: gone(kube, ns, "app"), bool, timeout=90, what="the resource to go")
    finally:
        flag.unlink(missing_ok=True)
    assert db_version(pg_url) == {HEAD}, "the migration ran to its end"
    runs = history_rows(pg_url, "run")
    assert [r["status"] for r in runs] == ["succeeded"]
