"""Helm releases of examples/app-chart move the database with them, through revisor-migration.

Real Helm (``scripts/helm.sh``), a real control plane, the operator in this
process, the hook Jobs' ``revisor-operator wait`` and the engine's Jobs run
by the process-kubelet, a real PostgreSQL. Each release ships a different
set of revision files in the chart's ``migrations/`` directory, as an
application's releases would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kopf.testing import KopfRunner
from kubernetes import client
from revisor_operator.decisions.jobs import MIGRATION_LABEL

from tests.chart.render import helm
from tests.cluster.conftest import Kube
from tests.support.kube import present, wait_for
from tests.support.operator_kit import (
    REVS,
    create_namespace,
    create_secret,
    db_version,
    delete_namespace,
    read,
    unique_prefix,
)
from tests.support.projects import Rev

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

PREFIX = unique_prefix("helm")
REPO = Path(__file__).resolve().parents[2]
APP_CHART = REPO / "examples" / "app-chart"
HOOK_CHART = REPO / "charts" / "revisor-migration"
RELEASES_ANNOTATION = "revisor.dev/helm-release-revisions"
BROKEN = Rev(
    id="0004bad00000",
    down=REVS[2].id,
    message="fails halfway",
    upgrade="op.create_table('t4', sa.Column('id', sa.Integer))\nraise RuntimeError('boom in 0004')",
    downgrade="op.drop_table('t4')",
)
#: The same revision, as its author fixes it for the next release.
FIXED = Rev(
    id=BROKEN.id,
    down=BROKEN.down,
    message="fixed",
    upgrade="op.create_table('t4', sa.Column('id', sa.Integer))",
    downgrade="op.drop_table('t4')",
)
HOOK_POD_SELECTOR = "app.kubernetes.io/component=migration-hook"
#: What a release leaves of the hooks once it succeeded: the scripts ConfigMap alone.
CLEAN: dict[str, set[str]] = {
    "Job": set(),
    "ServiceAccount": set(),
    "Role": set(),
    "RoleBinding": set(),
    "ConfigMap": {"shop-migrations"},
}


@dataclass
class App:
    """One application release line: its chart copy, namespace and Helm environment."""

    kube: Kube
    namespace: str
    chart: Path
    env: dict[str, str]
    release: str = "shop"

    def ship(self, revs: Sequence[Rev]) -> None:
        """Make the chart's migrations/ hold exactly ``revs`` (the next release's files)."""
        versions = self.chart / "migrations"
        shutil.rmtree(versions)
        versions.mkdir()
        for rev in revs:
            (versions / f"{rev.id}_rev.py").write_text(rev.source())

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [helm(), *args, "--namespace", self.namespace, "--kubeconfig",
             str(self.kube.kubeconfig)],
            capture_output=True, text=True, env=self.env, timeout=240, check=False,
        )  # fmt: skip

    def install(self, command: str = "install") -> subprocess.CompletedProcess[str]:
        return self.helm(
            command, self.release, str(self.chart), "--timeout", "3m",
            "--set-json", 'web.command=["sleep", "3600"]',
            "--set", "revisor-migration.hook.timeout=2m",
        )  # fmt: skip

    def leftovers(self) -> dict[str, set[str]]:
        """What the chart's hooks left in the namespace, by kind.

        Not counted: what every namespace has (ServiceAccount default, ConfigMap
        kube-root-ca.crt) and the operator's own Jobs (labelled with their migration).
        """
        core = client.CoreV1Api(self.kube.api)
        rbac = client.RbacAuthorizationV1Api(self.kube.api)
        ns = self.namespace
        jobs = client.BatchV1Api(self.kube.api).list_namespaced_job(ns).items
        return {
            "Job": {
                present(present(j.metadata).name)
                for j in jobs
                if MIGRATION_LABEL not in (present(j.metadata).labels or {})
            },
            "ServiceAccount": names(core.list_namespaced_service_account(ns)) - {"default"},
            "Role": names(rbac.list_namespaced_role(ns)),
            "RoleBinding": names(rbac.list_namespaced_role_binding(ns)),
            "ConfigMap": names(core.list_namespaced_config_map(ns)) - {"kube-root-ca.crt"},
        }

    def hook_pods(self) -> set[str]:
        pods = client.CoreV1Api(self.kube.api).list_namespaced_pod(
            self.namespace, label_selector=HOOK_POD_SELECTOR
        )
        return names(pods)

    def records(self) -> dict[str, str]:
        annotations = read(self.kube, self.namespace, "shop")["metadata"].get("annotations") or {}
        recorded: dict[str, str] = json.loads(annotations.get(RELEASES_ANNOTATION, "{}"))
        return recorded


def names(listing: Any) -> set[str]:
    return {item.metadata.name for item in listing.items}


@pytest.fixture
def app(
    process_kubelet: Kube,
    operator: KopfRunner,
    pg_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[App]:
    """examples/app-chart copied, its dependency built from charts/revisor-migration."""
    namespace = create_namespace(process_kubelet, PREFIX, request.node.name)
    create_secret(process_kubelet, namespace, pg_url, name="shop-db")
    chart = tmp_path / "shop"
    shutil.copytree(APP_CHART, chart, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    manifest = chart / "Chart.yaml"
    manifest.write_text(
        manifest.read_text().replace(
            "file://../../charts/revisor-migration", f"file://{HOOK_CHART}"
        )
    )
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(tmp_path / var.lower())
    # The example ships no Chart.lock: `dependency update` resolves the file:// chart offline.
    built = subprocess.run(
        [helm(), "dependency", "update", str(chart)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    yield App(kube=process_kubelet, namespace=namespace, chart=chart, env=env)
    delete_namespace(process_kubelet, namespace)


def test_install_upgrade_and_rollback_move_the_database_with_the_release(
    app: App, pg_url: str
) -> None:
    """install -> r2, upgrade -> r3, rollback to release 1 -> back at r2 (the revision it had)."""
    app.ship(REVS[:2])
    done = app.install()
    assert done.returncode == 0, done.stdout + done.stderr
    assert db_version(pg_url) == {REVS[1].id}
    assert app.records() == {"1": REVS[1].id}

    app.ship(REVS)
    done = app.install("upgrade")
    assert done.returncode == 0, done.stdout + done.stderr
    assert db_version(pg_url) == {REVS[2].id}
    assert app.records() == {"1": REVS[1].id, "2": REVS[2].id}

    done = app.helm("rollback", app.release, "1", "--timeout", "3m")
    assert done.returncode == 0, done.stdout + done.stderr
    assert db_version(pg_url) == {REVS[1].id}
    status = read(app.kube, app.namespace, "shop")["status"]
    assert status["phase"] == "Succeeded"
    assert status["currentRevision"] == REVS[1].id
    assert status["lastRun"]["direction"] == "downgrade"
    # The history survived every release: one resource, not one per hook. Each release is
    # a run of its own (revisor.dev/release), so new scripts the operator saw before the
    # hook applied the release's annotation may leave one more run that had nothing to do.
    moved = [h["direction"] for h in status["history"] if h["direction"] != "none"]
    assert moved[:3] == ["downgrade", "upgrade", "upgrade"]
    assert all(h.get("exitCode") == 0 for h in status["history"])


def test_failed_upgrade_says_why_and_a_fixed_upgrade_then_leaves_no_hook_clutter(
    app: App, pg_url: str
) -> None:
    """A revision raises during helm upgrade: the upgrade fails, saying why; schema unchanged.

    Of the hooks only the failed Job (with its pod, for `kubectl logs`) and the scripts
    ConfigMap stay. The next upgrade, with the revision fixed, replaces them — no
    "already exists" — and afterwards only the scripts ConfigMap is left (docs/flows.md).
    """
    app.ship(REVS)
    done = app.install()
    assert done.returncode == 0, done.stdout + done.stderr
    assert db_version(pg_url) == {REVS[2].id}
    assert app.leftovers() == CLEAN

    app.ship([*REVS, BROKEN])
    done = app.install("upgrade")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "UPGRADE FAILED" in output
    assert "boom in 0004" in output
    assert "RolledBack" in output
    assert db_version(pg_url) == {REVS[2].id}
    # The application was not touched: the pre-upgrade hook stopped the release.
    assert app.records() == {"1": REVS[2].id}
    # Helm deletes the hooks that had succeeded (hook-succeeded), not the one that failed.
    assert app.leftovers() == {**CLEAN, "Job": {"shop-revisor-migrate"}}
    assert len(app.hook_pods()) == 1

    app.ship([*REVS, FIXED])
    done = app.install("upgrade")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "already exists" not in output
    assert db_version(pg_url) == {FIXED.id}
    assert app.records() == {"1": REVS[2].id, "3": FIXED.id}  # release 2 failed: no record
    assert app.leftovers() == CLEAN
    # The Jobs' pods go with them, by garbage collection (Helm deletes in the background).
    wait_for(app.hook_pods, lambda pods: not pods, timeout=60, what="the hook Jobs' pods to go")
