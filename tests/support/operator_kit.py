"""What the operator's cluster tests share (this module holds no tests).

A test states its objects the way a user would (a Secret with the URL, a
ConfigMap of revision files, a ``DatabaseMigration``), runs the operator
in-process with kopf's ``KopfRunner`` and reads the outcome from the
resource's status, the Jobs, the Events and the database itself.

The operator re-checks every resource each ``REVISOR_RESYNC_SECONDS`` (it is
how a Secret created later is noticed). kopf fixes a timer's interval when
the handlers module is imported, so the variable is set before the first
import here; :func:`running_operator` refuses to run with any other value
rather than let the tests wait 30 seconds for a tick.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kopf.testing import KopfRunner
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from revisor_operator import GROUP, PLURAL, VERSION
from revisor_operator.decisions.jobs import MIGRATION_LABEL, label_value

from tests.cluster.conftest import Kube
from tests.support import kube as support_kube
from tests.support.kube import apply, as_dict, wait_for
from tests.support.projects import Rev, chain

CRD = Path(__file__).parents[2] / "manifests" / "crd" / "revisor.dev_databasemigrations.yaml"
#: Short enough for a Secret created later to be noticed within a test, long enough that a
#: test can tell a reaction to an event from a reaction to the next tick.
RESYNC_SECONDS = 10.0
#: Phases after which nothing happens until someone changes something.
SETTLED = ("Succeeded", "Failed", "RolledBack", "AwaitingApproval", "Planned")
REVS = chain(3)
HEAD = REVS[-1].id


def install_crd(kube: Kube) -> None:
    apply(kube.api, CRD.read_text())


def migration(name: str, **spec: Any) -> dict[str, Any]:
    """A ``DatabaseMigration`` using Secret ``app-db`` and ConfigMap ``app-migrations``."""
    body: dict[str, Any] = {
        "database": {"urlSecretRef": {"name": "app-db"}},
        "source": {"configMap": {"name": "app-migrations"}},
    }
    body.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DatabaseMigration",
        "metadata": {"name": name},
        "spec": body,
    }


def create(kube: Kube, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
    api = client.CustomObjectsApi(kube.api)
    return as_dict(
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, dict(body))
    )


def read(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    api = client.CustomObjectsApi(kube.api)
    return as_dict(api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))


def window_closed(kube: Kube, namespace: str, name: str, *, timeout: float) -> dict[str, Any]:
    """The resource once its rollback window is no longer Watching (closed or acted on)."""
    return wait_for(
        lambda: read(kube, namespace, name),
        lambda obj: (obj["status"].get("rollout") or {}).get("state") != "Watching",
        timeout=timeout,
        interval=0.5,
        what=f"{namespace}/{name}'s rollback window to close",
    )


def gone(kube: Kube, namespace: str, name: str) -> bool:
    """True once the resource no longer exists (its finalizer released)."""
    try:
        read(kube, namespace, name)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def patch_spec(kube: Kube, namespace: str, name: str, spec: Mapping[str, Any]) -> int:
    """Merge ``spec`` into the resource's spec; returns the new generation."""
    api = client.CustomObjectsApi(kube.api)
    patched = as_dict(
        api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, {"spec": dict(spec)}
        )
    )
    return int(patched["metadata"]["generation"])


def create_secret(kube: Kube, namespace: str, url: str, name: str = "app-db") -> None:
    client.CoreV1Api(kube.api).create_namespaced_secret(namespace, client.V1Secret.model_validate({
        "metadata": {"name": name},
        "data": {"url": base64.b64encode(url.encode()).decode()},
    }))  # fmt: skip


def scripts(revs: Iterable[Rev]) -> dict[str, str]:
    """ConfigMap data: one key per revision file, as ``alembic revision`` would name it."""
    return {f"{rev.id}_rev.py": rev.source() for rev in revs}


def create_config_map(
    kube: Kube,
    namespace: str,
    revs: Iterable[Rev],
    name: str = "app-migrations",
    *,
    labelled: bool = True,
    extra: Mapping[str, str] | None = None,
) -> None:
    """The revision files as a ConfigMap; ``labelled`` as the docs say (watched at once).

    ``extra``: more keys beside the revisions (an ``env.py``).
    """
    labels = {"revisor.dev/scripts": "true"} if labelled else {}
    data = {**scripts(revs), **(extra or {})}
    client.CoreV1Api(kube.api).create_namespaced_config_map(
        namespace,
        client.V1ConfigMap.model_validate(
            {"metadata": {"name": name, "labels": labels}, "data": data}
        ),
    )


def replace_config_map(
    kube: Kube, namespace: str, revs: Iterable[Rev], name: str = "app-migrations"
) -> None:
    client.CoreV1Api(kube.api).patch_namespaced_config_map(name, namespace, {"data": scripts(revs)})


def settled(
    kube: Kube,
    namespace: str,
    name: str,
    *,
    generation: int = 1,
    runs: int = 1,
    timeout: float = 90,
) -> dict[str, Any]:
    """The resource once its ``runs``-th run (for ``generation``) is recorded and nothing runs."""

    def done(obj: Mapping[str, Any]) -> bool:
        status = obj.get("status") or {}
        last = status.get("lastRun") or {}
        return (
            status.get("phase") in SETTLED
            and status.get("observedGeneration") == generation
            and last.get("generation") == generation
            and len(status.get("history") or []) >= runs
        )

    return wait_for(
        lambda: read(kube, namespace, name),
        done,
        timeout=timeout,
        interval=0.3,
        what=f"{namespace}/{name} to settle at generation {generation} after {runs} run(s)",
    )


def ready(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The resource's Ready condition (fails the test when there is none)."""
    found = [c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"]
    assert found, obj.get("status")
    return dict(found[0])


def reason_is(reason: str) -> Any:
    return lambda obj: any(
        c.get("type") == "Ready" and c.get("reason") == reason
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def listed(kube: Kube, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    """Jobs, Pods or Events of a namespace as plain JSON dicts (what kubectl -o json shows)."""
    apis: dict[str, Any] = {
        "jobs": client.BatchV1Api(kube.api).list_namespaced_job,
        "pods": client.CoreV1Api(kube.api).list_namespaced_pod,
        "events": client.CoreV1Api(kube.api).list_namespaced_event,
    }
    found = apis[kind](namespace, label_selector=selector)
    items: list[dict[str, Any]] = kube.api.sanitize_for_serialization(found)["items"]
    return items


def events_with(
    kube: Kube,
    namespace: str,
    reasons: Iterable[str],
    *,
    warnings_only: bool = False,
    involving: str | None = None,
    timeout: float = 30,
) -> list[dict[str, Any]]:
    """The namespace's Events once every one of ``reasons`` is among them.

    kopf posts Events from a background task after the handler has written the
    status, so an Event may land a moment after the status a test waited for:
    poll for it rather than list once.
    """
    wanted = set(reasons)

    def fetch() -> list[dict[str, Any]]:
        events = listed(kube, "events", namespace)
        return [
            e
            for e in events
            if (not warnings_only or e["type"] == "Warning")
            and (involving is None or e["involvedObject"]["name"] == involving)
        ]

    return wait_for(
        fetch,
        lambda events: wanted <= {e["reason"] for e in events},
        timeout=timeout,
        interval=0.3,
        what=f"Events {sorted(wanted)} in {namespace}",
    )


def jobs_of(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    return listed(kube, "jobs", namespace, f"{MIGRATION_LABEL}={label_value(name)}")


def termination_message(kube: Kube, namespace: str, job: str) -> dict[str, Any]:
    """The engine's result document, as its pod's termination message holds it."""
    for pod in listed(kube, "pods", namespace, f"job-name={job}"):
        for status in pod["status"].get("containerStatuses") or []:
            message = status["state"].get("terminated", {}).get("message")
            if status["name"] == "revisor" and message:
                result: dict[str, Any] = json.loads(message)
                return result
    raise AssertionError(f"no termination message on the pods of Job {job}")


# -- the database, read directly ---------------------------------------------------------


def db_version(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return set()
            return {
                row[0] for row in conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            }
    finally:
        engine.dispose()


def db_tables(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def history_rows(url: str, kind: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT * FROM revisor_history WHERE kind = :k ORDER BY id"), {"k": kind}
            )
            return [dict(r._mapping) for r in rows]
    finally:
        engine.dispose()


def engine_upgrade(url: str, revs: Sequence[Rev], target: str, workdir: Path) -> None:
    """Bring the database to ``target`` with the engine itself, outside the cluster."""
    versions = workdir / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    for key, source in scripts(revs).items():
        (versions / key).write_text(source)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "revisor",
            "--scripts",
            str(versions),
            "--database-url",
            url,
            "upgrade",
            target,
        ],
        check=True,
        capture_output=True,
        text=True,
    )


def slow(rev: Rev, flag: Path) -> Rev:
    """``rev``, but its upgrade waits while ``flag`` exists (after doing its work)."""
    return Rev(
        id=rev.id,
        down=rev.down,
        message="slow one",
        upgrade=f"{rev.upgrade}\nimport os\nwhile os.path.exists({str(flag)!r}):\n    time.sleep(0.05)",
        downgrade=rev.downgrade,
    )


# -- the operator ---------------------------------------------------------------------------


def unique_prefix(what: str) -> str:
    """A namespace prefix that only one module's operator watches."""
    return f"{what}-{uuid.uuid4().hex[:5]}"


def create_namespace(kube: Kube, prefix: str, test: str) -> str:
    """A fresh namespace ``<prefix>-<test>-<random>`` with its default ServiceAccount."""
    return support_kube.create_namespace(kube.api, prefix, test)


def delete_namespace(kube: Kube, name: str) -> None:
    support_kube.delete_namespace(kube.api, name)


@contextlib.contextmanager
def running_operator(
    kube: Kube, *namespaces: str, all_namespaces: bool = False
) -> Iterator[KopfRunner]:
    """The operator, in this process, watching ``namespaces`` (globs allowed) or all of them.

    ``all_namespaces`` is ``--all-namespaces``, as the chart's cluster-wide Deployment runs
    it: cluster-scoped list/watch calls and no namespace listing, unlike a glob.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBECONFIG", str(kube.kubeconfig))
        # kubernetes.config reads $KUBECONFIG at import time; kopf's login uses that default.
        patch.setattr(
            "kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(kube.kubeconfig)
        )
        patch.setenv("REVISOR_RUNNER_IMAGE", "revisor:dev")
        patch.setenv("REVISOR_RESYNC_SECONDS", str(RESYNC_SECONDS))
        entry = importlib.import_module("revisor_operator.kopf_entry")
        if entry.SETTINGS.resync_seconds != RESYNC_SECONDS:
            pytest.fail(
                "revisor_operator.kopf_entry was imported before the cluster tests set "
                f"REVISOR_RESYNC_SECONDS={RESYNC_SECONDS} (its timer ticks every "
                f"{entry.SETTINGS.resync_seconds}s)"
            )
        scope = (
            ["--all-namespaces"]
            if all_namespaces
            else [arg for ns in namespaces for arg in ("--namespace", ns)]
        )
        args = ["run", "--standalone", *scope, "-m", "revisor_operator.kopf_entry"]
        with KopfRunner(args, timeout=60) as runner:
            yield runner
