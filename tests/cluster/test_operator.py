"""The operator on a real control plane: the CRD as the apiserver sees it, and one migration.

The logic is unit-tested in tests/operator; these tests prove the wiring:
the CRD's schema and CEL rules compile and reject what they should, and the
operator (in-process, kopf's KopfRunner) turns a DatabaseMigration into a
Job whose pod runs the real engine, then writes the result back as status.
"""

from __future__ import annotations

import base64
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kopf.testing import KopfRunner
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster.conftest import Kube
from tests.support.kube import condition, wait_for
from tests.support.operator_kit import create, install_crd, migration, read, running_operator

pytestmark = pytest.mark.cluster

REVISION = "a1b2c3d4e5f6"
SCRIPT = textwrap.dedent(
    f'''\
    """create orders"""
    import sqlalchemy as sa
    from alembic import op

    revision = "{REVISION}"
    down_revision = None
    branch_labels = None
    depends_on = None


    def upgrade():
        op.create_table("orders", sa.Column("id", sa.Integer, primary_key=True))


    def downgrade():
        op.drop_table("orders")
    '''
)


@pytest.fixture(scope="module")
def crd(kube: Kube) -> None:
    install_crd(kube)


@pytest.mark.usefixtures("crd")
def test_apiserver_applies_defaults(kube: Kube, namespace: str) -> None:
    """The CRD's defaults are what the operator documents."""
    spec = create(kube, namespace, migration("defaults"))["spec"]
    assert spec["target"] == "head"
    assert spec["mode"] == "Apply"
    assert spec["onFailure"] == "Rollback"
    assert spec["database"]["urlSecretRef"]["key"] == "url"


@pytest.mark.usefixtures("crd")
@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (
            {"source": {"configMap": {"name": "a"}, "image": {"image": "b"}}},
            "exactly one of source",
        ),
        ({"target": "head+"}, "target must be head, heads, base"),
        ({"mode": "Yolo"}, "Unsupported value"),
        ({"timeouts": {"statement": "ten minutes"}}, "timeouts.statement"),
    ],
)
def test_apiserver_rejects_malformed_specs(
    kube: Kube, namespace: str, spec: dict[str, Any], words: str
) -> None:
    """CEL rules and patterns compile and refuse bad input at kubectl-apply time."""
    with pytest.raises(ApiException) as caught:
        create(kube, namespace, migration("bad", **spec))
    assert caught.value.status == 422
    assert words in str(caught.value.body)


@pytest.fixture
def operator(kube: Kube, namespace: str) -> Iterator[KopfRunner]:
    with running_operator(kube, namespace) as runner:
        yield runner
    # Shown by pytest when the test failed: what the operator said.
    print(runner.output)


@pytest.mark.usefixtures("crd")
def test_migration_runs_as_a_job_and_reports_ready(
    process_kubelet: Kube, namespace: str, operator: KopfRunner, tmp_path: Path
) -> None:
    """Secret + ConfigMap + DatabaseMigration -> a Job runs the engine -> Ready, at the head."""
    kube = process_kubelet
    core = client.CoreV1Api(kube.api)
    tmp_path.chmod(0o777)
    url = f"sqlite:///{tmp_path / 'app.db'}"
    core.create_namespaced_secret(namespace, client.V1Secret.model_validate({
        "metadata": {"name": "app-db"},
        "data": {"url": base64.b64encode(url.encode()).decode()},
    }))  # fmt: skip
    core.create_namespaced_config_map(namespace, client.V1ConfigMap.model_validate({
        "metadata": {"name": "app-migrations"},
        "data": {f"{REVISION}_create_orders.py": SCRIPT},
    }))  # fmt: skip
    create(kube, namespace, migration("app"))
    done = wait_for(
        lambda: read(kube, namespace, "app"),
        lambda obj: (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed", "RolledBack"),
        timeout=90,
        what="the migration to finish",
    )
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert condition(done, "Ready") == "True"
    assert status["currentRevision"] == REVISION
    assert status["lastRun"]["exitCode"] == 0
    assert url not in str(done)


@pytest.mark.usefixtures("crd")
def test_missing_secret_is_a_condition_and_no_job(
    kube: Kube, namespace: str, operator: KopfRunner
) -> None:
    """No Secret: SecretNotFound says what to create; no Job is made."""
    core = client.CoreV1Api(kube.api)
    core.create_namespaced_config_map(namespace, client.V1ConfigMap.model_validate({
        "metadata": {"name": "app-migrations"}, "data": {"x.py": "revision = 'x'"},
    }))  # fmt: skip
    create(kube, namespace, migration("app"))
    done = wait_for(
        lambda: read(kube, namespace, "app"),
        lambda obj: condition(obj, "Ready") is not None,
        timeout=60,
        what="a Ready condition",
    )
    ready = next(c for c in done["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "SecretNotFound"
    assert f"Secret {namespace}/app-db not found" in ready["message"]
    jobs = client.BatchV1Api(kube.api).list_namespaced_job(namespace).items
    assert jobs == []
