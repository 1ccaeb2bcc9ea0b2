"""Resources the operator cannot act on yet, and what it tells the user to fix.

A missing Secret or ConfigMap is a condition that names the object and how
to create it, and no Job; creating the object later is enough for the
resource to converge (the operator notices by itself: a ConfigMap watch, a
periodic re-check for Secrets). A target the scripts do not know is only
found out by the engine: its Job fails and the engine's own reason reaches
the condition.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.cluster.conftest import Kube
from tests.support.kube import wait_for
from tests.support.operator_kit import (
    HEAD,
    REVS,
    create,
    create_config_map,
    create_secret,
    db_version,
    events_with,
    jobs_of,
    migration,
    patch_spec,
    read,
    ready,
    reason_is,
    settled,
    termination_message,
    unique_prefix,
)

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.usefixtures("operator")]

PREFIX = unique_prefix("fail")


def conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Condition type -> (status, reason), as ``kubectl get dbm -o yaml`` shows them."""
    return {c["type"]: (c["status"], c["reason"]) for c in obj["status"]["conditions"]}


def test_missing_secret_is_explained_and_converges_once_created(
    kube: Kube, ns: str, pg_url: str
) -> None:
    """No Secret: SecretNotFound names it and its key, no Job; creating it is enough."""
    create_config_map(kube, ns, REVS)
    create(kube, ns, migration("app"))
    waiting = wait_for(
        lambda: read(kube, ns, "app"),
        reason_is("SecretNotFound"),
        what="a SecretNotFound condition",
    )
    assert waiting["status"]["phase"] == "Pending"
    assert conditions(waiting) == {
        "Ready": ("False", "SecretNotFound"),
        "Progressing": ("False", "SecretNotFound"),
        "Failed": ("True", "SecretNotFound"),
    }
    assert ready(waiting)["message"] == (
        f"Secret {ns}/app-db not found: create it with key 'url' holding the database URL, "
        "or fix spec.database"
    )
    assert jobs_of(kube, ns, "app") == []
    events_with(kube, ns, {"SecretNotFound"}, warnings_only=True)

    create_secret(kube, ns, pg_url)
    done = settled(kube, ns, "app")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert ready(done)["status"] == "True"
    assert done["status"]["currentRevision"] == HEAD
    assert db_version(pg_url) == {HEAD}


def test_missing_config_map_is_explained_and_converges_once_created(
    kube: Kube, ns: str, pg_url: str
) -> None:
    """No ConfigMap: ConfigMapNotFound says how to create it, no Job; creating it is enough."""
    create_secret(kube, ns, pg_url)
    create(kube, ns, migration("app"))
    waiting = wait_for(
        lambda: read(kube, ns, "app"),
        reason_is("ConfigMapNotFound"),
        what="a ConfigMapNotFound condition",
    )
    assert waiting["status"]["phase"] == "Pending"
    message = ready(waiting)["message"]
    assert message.startswith(f"ConfigMap {ns}/app-migrations not found: ")
    assert f"kubectl -n {ns} create configmap app-migrations --from-file=versions/" in message
    assert "spec.source.configMap.name" in message
    assert jobs_of(kube, ns, "app") == []
    events_with(kube, ns, {"ConfigMapNotFound"}, warnings_only=True)

    create_config_map(kube, ns, REVS)
    done = settled(kube, ns, "app")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["currentRevision"] == HEAD
    assert db_version(pg_url) == {HEAD}


def test_unknown_target_fails_the_job_with_invalid_target(kube: Kube, ns: str, pg_url: str) -> None:
    """target ffffffff passes the CRD but not the engine: InvalidTarget; fixing it converges."""
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, REVS)
    create(kube, ns, migration("app", target="ffffffff"))

    failed = settled(kube, ns, "app")
    status = failed["status"]
    assert status["phase"] == "Failed", status
    condition = ready(failed)
    assert condition["status"] == "False"
    assert condition["reason"] == "InvalidTarget"
    assert conditions(failed) == {
        "Ready": ("False", "InvalidTarget"),
        "Progressing": ("False", "InvalidTarget"),
        "Failed": ("True", "InvalidTarget"),
    }
    assert condition["message"].startswith("The engine rejected target 'ffffffff': ")
    assert "ffffffff" in condition["message"].split(": ", 1)[1]
    assert status["lastRun"]["exitCode"] == 2
    [job] = jobs_of(kube, ns, "app")
    assert job["status"].get("failed")
    result = termination_message(kube, ns, job["metadata"]["name"])
    assert result["reason"] == "InvalidTarget"
    assert result["exitCode"] == 2
    events_with(kube, ns, {"InvalidTarget"}, warnings_only=True)
    assert db_version(pg_url) == set()

    patch_spec(kube, ns, "app", {"target": "head"})
    fixed = settled(kube, ns, "app", generation=2, runs=2)
    assert fixed["status"]["phase"] == "Succeeded", fixed["status"]
    assert conditions(fixed) == {
        "Ready": ("True", "Migrated"),
        "Progressing": ("False", "Migrated"),
        "Failed": ("False", "Migrated"),
    }
    assert db_version(pg_url) == {HEAD}
