"""Automatic schema rollback when the application's rollout fails after a migration.

The application is a real Deployment on the process-kubelet: its pods run
``sleep`` and an exec readinessProbe decides whether they ever become Ready.
The real controller-manager judges the rollout (``progressDeadlineSeconds``),
the operator follows it through ``spec.rollback.deploymentRef``, and the
database is a real PostgreSQL that the engine's Jobs move up and back down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cluster.conftest import Kube
from tests.support.kube import apply, wait_for
from tests.support.operator_kit import (
    HEAD,
    REVS,
    create,
    create_config_map,
    create_secret,
    db_version,
    engine_upgrade,
    events_with,
    migration,
    read,
    ready,
    settled,
    unique_prefix,
    window_closed,
)

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.usefixtures("operator")]

PREFIX = unique_prefix("rollback")
START = REVS[0].id


def web(*, ready_command: str, progress_deadline: int) -> dict[str, Any]:
    """The application: one replica whose readiness is ``ready_command``."""
    labels = {"app": "web"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "progressDeadlineSeconds": progress_deadline,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "web",
                            "image": "web:2",
                            "command": ["sleep", "3600"],
                            "readinessProbe": {
                                "exec": {"command": [ready_command]},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            },
        },
    }


def deploy(kube: Kube, ns: str, *, ready_command: str, progress_deadline: int) -> None:
    apply(
        kube.api,
        web(ready_command=ready_command, progress_deadline=progress_deadline),
        namespace=ns,
    )


def release(kube: Kube, ns: str, pg_url: str, tmp_path: Path) -> None:
    """The database at the first revision; a release migrates to head and deploys ``web``."""
    engine_upgrade(pg_url, REVS, START, tmp_path)
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, REVS)
    spec = {"rollback": {"deploymentRef": {"name": "web"}, "window": "2m"}}
    create(kube, ns, migration("app", **spec))


def test_rollout_that_never_becomes_ready_rolls_the_schema_back(
    kube: Kube, ns: str, pg_url: str, tmp_path: Path
) -> None:
    """New pods never Ready -> ProgressDeadlineExceeded -> database back at the start revision."""
    release(kube, ns, pg_url, tmp_path)
    deploy(kube, ns, ready_command="false", progress_deadline=5)

    done = wait_for(
        lambda: read(kube, ns, "app"),
        lambda obj: (
            (obj.get("status") or {}).get("phase") in ("RolledBack", "Failed")
            and (obj["status"].get("rollout") or {}).get("state") in ("RolledBack", "Failed")
        ),
        timeout=90,
        interval=0.5,
        what="the schema to be rolled back after the failed rollout",
    )
    status = done["status"]
    assert status["phase"] == "RolledBack", status
    condition = ready(done)
    assert (condition["status"], condition["reason"]) == ("False", "DeployFailedRolledBack")
    assert "Deployment web" in condition["message"]
    assert "ProgressDeadlineExceeded" in condition["message"]
    assert status["currentRevision"] == START
    assert status["rollout"]["state"] == "RolledBack"
    assert status["rollout"]["previousRevision"] == START
    assert [(h["direction"], h["to"]) for h in status["history"]] == [
        ("downgrade", [START]),
        ("upgrade", [HEAD]),
    ]
    assert db_version(pg_url) == {START}
    reasons = {"DeployFailed", "DeployFailedRolledBack"}
    warnings = [e for e in events_with(kube, ns, reasons) if e["reason"] in reasons]
    assert all("Deployment web" in e["message"] for e in warnings), warnings


def test_rollout_that_succeeds_closes_the_window_without_rollback(
    kube: Kube, ns: str, pg_url: str, tmp_path: Path
) -> None:
    """Pods become Ready: the window closes as Succeeded and the database stays at head."""
    release(kube, ns, pg_url, tmp_path)
    # A deadline a loaded machine cannot miss: this rollout must not fail by accident.
    deploy(kube, ns, ready_command="true", progress_deadline=120)

    first = settled(kube, ns, "app")
    assert first["status"]["phase"] == "Succeeded", first["status"]
    closed = window_closed(kube, ns, "app", timeout=60)
    status = closed["status"]
    assert status["rollout"]["state"] == "Succeeded", status["rollout"]
    assert "rolled out" in status["rollout"]["message"]
    assert status["phase"] == "Succeeded"
    assert ready(closed)["reason"] == "Migrated"
    assert len(status["history"]) == 1
    assert db_version(pg_url) == {HEAD}
