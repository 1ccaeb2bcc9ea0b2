"""Day two on the real control plane: drift, app pods that wait, live progress, adoption.

One operator (in-process) serves the module, with the progress timer at 1 s
(tests/cluster/conftest.py). Each test has its own namespace and PostgreSQL
database; the Jobs run the real engine, and the schema is changed by hand
with SQL, as a person with psql would.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from prometheus_client import REGISTRY

from tests.cluster.conftest import Kube
from tests.cluster.test_operator_secrets import canary_url  # noqa: F401 - a fixture
from tests.support.kube import apply, wait_for
from tests.support.operator_kit import (
    HEAD,
    REVS,
    create,
    create_config_map,
    create_secret,
    db_version,
    events_with,
    history_rows,
    jobs_of,
    migration,
    patch_spec,
    read,
    ready,
    reason_is,
    settled,
    slow,
    unique_prefix,
)
from tests.support.projects import Rev, chain
from tests.support.sql import execute

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.usefixtures("operator")]

PREFIX = unique_prefix("daytwo")


def annotate(kube: Kube, ns: str, name: str, **annotations: str) -> None:
    client.CustomObjectsApi(kube.api).patch_namespaced_custom_object(
        "revisor.dev", "v1alpha1", ns, "databasemigrations", name,
        {"metadata": {"annotations": annotations}},
    )  # fmt: skip


def checked(kube: Kube, ns: str, name: str, **drift: Any) -> dict[str, Any]:
    """The resource once ``status.drift`` has these values (a check was recorded)."""
    return wait_for(
        lambda: read(kube, ns, name),
        lambda obj: all(
            ((obj.get("status") or {}).get("drift") or {}).get(k) == v for k, v in drift.items()
        ),
        timeout=60,
        interval=0.3,
        what=f"{ns}/{name}'s drift check to say {drift}",
    )


def condition(obj: Mapping[str, Any], kind: str) -> dict[str, Any]:
    [found] = [c for c in obj["status"]["conditions"] if c["type"] == kind]
    return dict(found)


def drifted_gauge(ns: str, name: str) -> float | None:
    return REGISTRY.get_sample_value("revisor_schema_drifted", {"namespace": ns, "migration": name})


def migration_jobs(kube: Kube, ns: str, name: str) -> list[str]:
    return sorted(
        j["metadata"]["name"]
        for j in jobs_of(kube, ns, name)
        if j["metadata"]["annotations"].get("revisor.dev/purpose") != "drift"
    )


# -- drift -------------------------------------------------------------------------------------


def test_a_change_by_hand_is_reported_as_drift_with_an_event_until_it_is_undone(
    kube: Kube, ns: str, pg_url: str
) -> None:
    """Report: a check after the run finds nothing; ALTER TABLE by hand, a check on request
    finds it (condition, Event, metric); undone by hand, the next check says it is gone."""
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, REVS)
    create(kube, ns, migration("app", drift={"policy": "Report"}))
    assert settled(kube, ns, "app")["status"]["phase"] == "Succeeded"
    after_run = checked(kube, ns, "app", result="NoDrift")
    assert condition(after_run, "Drifted")["status"] == "False"
    assert after_run["status"]["drift"]["afterRun"] == after_run["status"]["lastRun"]["job"]

    execute(pg_url, "ALTER TABLE t1 ADD COLUMN note text", "CREATE INDEX ix_t2_id ON t2 (id)")
    annotate(kube, ns, "app", **{"revisor.dev/drift-check": "1"})
    found = checked(kube, ns, "app", request="1")
    drifted = condition(found, "Drifted")
    assert (drifted["status"], drifted["reason"]) == ("True", "Drifted"), drifted
    assert drifted["message"].startswith(f"Schema drift at {HEAD}: 2 difference(s)"), drifted
    assert "t1.note" in drifted["message"] and "ix_t2_id" in drifted["message"]
    live = found["status"]["drift"]["hash"]
    assert f"set spec.drift.acceptedHash to {live}" in drifted["message"]
    assert ready(found)["status"] == "True", "the database is at its target all the same"
    warning = [
        e for e in events_with(kube, ns, {"Drifted"}, involving="app") if e["reason"] == "Drifted"
    ]
    assert warning[0]["type"] == "Warning" and "t1.note" in warning[0]["message"]
    assert drifted_gauge(ns, "app") == 1

    execute(pg_url, "ALTER TABLE t1 DROP COLUMN note", "DROP INDEX ix_t2_id")
    annotate(kube, ns, "app", **{"revisor.dev/drift-check": "2"})
    gone = checked(kube, ns, "app", request="2")
    assert (condition(gone, "Drifted")["status"], gone["status"]["drift"]["result"]) == (
        "False",
        "NoDrift",
    )
    events = events_with(kube, ns, {"Drifted", "NoDrift"}, involving="app")
    assert [e["type"] for e in events if e["reason"] == "NoDrift"][-1] == "Normal"
    assert drifted_gauge(ns, "app") == 0
    assert migration_jobs(kube, ns, "app") == [after_run["status"]["lastRun"]["job"]]


def test_block_refuses_the_apply_over_drift_and_its_accepted_hash_lets_it_go(
    kube: Kube, ns: str, pg_url: str, tmp_path: Path
) -> None:
    """A database stamped without a snapshot (NoSnapshot: Unknown, not drift, the run goes);
    then an index by hand and a new target: refused, reason Drifted, no migration Job; the
    hash accepted in the spec: the run goes."""
    stamp(pg_url, REVS[0].id, tmp_path)
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, REVS)
    create(kube, ns, migration("app", target=REVS[1].id, drift={"policy": "Block"}))
    first = settled(kube, ns, "app")
    assert first["status"]["phase"] == "Succeeded", first["status"]
    unknown = [e for e in events_with(kube, ns, {"NoSnapshot"}) if e["reason"] == "NoSnapshot"]
    assert unknown[0]["message"].startswith(
        f"Not drift: no schema snapshot is recorded for {REVS[0].id}"
    )
    checked(kube, ns, "app", result="NoDrift", afterRun=first["status"]["lastRun"]["job"])

    execute(pg_url, "CREATE INDEX ix_by_hand ON t2 (id)")
    patch_spec(kube, ns, "app", {"target": "head"})
    refused = wait_for(
        lambda: read(kube, ns, "app"),
        reason_is("Drifted"),
        timeout=60,
        interval=0.3,
        what="the apply to be refused over drift",
    )
    assert refused["status"]["phase"] == "Pending"
    message = ready(refused)["message"]
    assert message.startswith(f"Not migrating to head: the schema at {REVS[1].id} has drifted"), (
        message
    )
    assert "+ index ix_by_hand on t2(id)" in message
    live = refused["status"]["drift"]["hash"]
    assert migration_jobs(kube, ns, "app") == [first["status"]["lastRun"]["job"]], "no new run"
    assert db_version(pg_url) == {REVS[1].id}

    generation = patch_spec(kube, ns, "app", {"drift": {"policy": "Block", "acceptedHash": live}})
    done = settled(kube, ns, "app", generation=generation, runs=2)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert db_version(pg_url) == {HEAD}
    reasons = {e["reason"] for e in events_with(kube, ns, {"DriftAccepted"}, involving="app")}
    assert {"NoSnapshot", "NoDrift", "Drifted", "DriftAccepted"} <= reasons


def stamp(url: str, revision: str, workdir: Path) -> None:
    """``revisor stamp``: the version table says ``revision``; no schema was recorded."""
    import subprocess
    import sys

    versions = workdir / "versions"
    versions.mkdir()
    for rev in REVS:
        (versions / f"{rev.id}_rev.py").write_text(rev.source())
    execute(url, "CREATE TABLE t1 (id integer PRIMARY KEY)")
    subprocess.run(
        [sys.executable, "-m", "revisor", "--scripts", str(versions), "--database-url", url,
         "stamp", revision],
        check=True, capture_output=True, text=True,
    )  # fmt: skip


# -- app pods that wait, and the progress they wait through --------------------------------------


def web_waiting_for_schema() -> dict[str, Any]:
    """The application: its pod's init container waits for the scripts it ships, no token."""
    labels = {"app": "web"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 1,
                    "initContainers": [
                        {
                            "name": "wait-for-schema",
                            "image": "web:2",
                            "command": [
                                "revisor",
                                "--scripts",
                                "/app/migrations",
                                "wait-for",
                                "--timeout",
                                "5m",
                            ],
                            "env": [
                                {
                                    "name": "REVISOR_DATABASE_URL",
                                    "valueFrom": {"secretKeyRef": {"name": "app-db", "key": "url"}},
                                }
                            ],
                            "volumeMounts": [
                                {"name": "migrations", "mountPath": "/app/migrations"}
                            ],
                        }
                    ],
                    "containers": [{"name": "web", "image": "web:2", "command": ["sleep", "3600"]}],
                    "volumes": [{"name": "migrations", "configMap": {"name": "app-migrations"}}],
                },
            },
        },
    }


def web_pod(kube: Kube, ns: str) -> dict[str, Any] | None:
    pods = client.CoreV1Api(kube.api).list_namespaced_pod(ns, label_selector="app=web").items
    if not pods:
        return None
    found: dict[str, Any] = kube.api.sanitize_for_serialization(pods[0])
    return found


def in_init(pod: Mapping[str, Any] | None) -> bool:
    """The pod's init container is running (waiting for the schema) and the app is not."""
    if pod is None:
        return False
    status = pod.get("status") or {}
    inits = status.get("initContainerStatuses") or []
    apps = status.get("containerStatuses") or []
    return (
        status.get("phase") == "Pending"
        and bool(inits)
        and "running" in (inits[0].get("state") or {})
        and not any("running" in (c.get("state") or {}) for c in apps)
    )


class ProgressWatch:
    """Every ``status.progress`` a watch on one resource delivers, in order."""

    def __init__(self, kube: Kube, ns: str, name: str) -> None:
        self.seen: list[dict[str, Any]] = []
        self.messages: list[str] = []
        self._changed = threading.Condition()
        self._stopped = threading.Event()
        self._watch = watch.Watch()
        api = client.CustomObjectsApi(kube.api)
        self._thread = threading.Thread(
            target=self._run, args=(api, ns, name), name="progress-watch", daemon=True
        )
        self._thread.start()

    def _run(self, api: client.CustomObjectsApi, ns: str, name: str) -> None:
        try:
            self._follow(api, ns, name)
        except Exception:
            if not self._stopped.is_set():  # stopping it ends its connection mid-read
                raise

    def _follow(self, api: client.CustomObjectsApi, ns: str, name: str) -> None:
        for event in self._watch.stream(
            api.list_namespaced_custom_object, "revisor.dev", "v1alpha1", ns,
            "databasemigrations", field_selector=f"metadata.name={name}", timeout_seconds=120,
        ):  # fmt: skip
            status = event["object"].get("status") or {}
            with self._changed:
                progress = status.get("progress")
                if progress and (not self.seen or self.seen[-1] != progress):
                    self.seen.append(progress)
                    ready_ = [c for c in status.get("conditions") or [] if c["type"] == "Ready"]
                    self.messages.append(ready_[0]["message"] if ready_ else "")
                self._changed.notify_all()

    def until(self, predicate: Callable[[dict[str, Any]], bool], *, what: str) -> dict[str, Any]:
        with self._changed:
            ok = self._changed.wait_for(lambda: any(predicate(p) for p in self.seen), timeout=90)
            assert ok, f"the watch never delivered {what}; it saw {self.seen}"
            return next(p for p in self.seen if predicate(p))

    def stop(self) -> None:
        self._stopped.set()
        self._watch.stop()


@pytest.fixture
def progress_watch(kube: Kube, ns: str) -> Iterator[Callable[[str], ProgressWatch]]:
    made: list[ProgressWatch] = []

    def start(name: str) -> ProgressWatch:
        made.append(ProgressWatch(kube, ns, name))
        return made[-1]

    yield start
    for each in made:
        each.stop()


def test_app_pods_wait_in_init_while_the_watch_shows_the_migration_progress(
    kube: Kube,
    ns: str,
    pg_url: str,
    tmp_path: Path,
    progress_watch: Callable[[str], ProgressWatch],
) -> None:
    """The app's Deployment is rolled out first: its pod stays in Init, its init container
    (revisor wait-for, no token) polling; the migration's two slow revisions show in
    status.progress as a watch delivers it; once the run is done, the pod starts."""
    tmp_path.chmod(0o777)
    first, second = tmp_path / "hold-2", tmp_path / "hold-4"
    first.touch()
    second.touch()
    base = chain(4)
    revs = [base[0], slow(base[1], first), base[2], slow(base[3], second)]
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, revs)
    apply(kube.api, web_waiting_for_schema(), namespace=ns)
    waiting = wait_for(
        lambda: web_pod(kube, ns), in_init, timeout=60, interval=0.3, what="the app pod in Init"
    )
    assert waiting is not None and waiting["spec"]["automountServiceAccountToken"] is False

    watched = progress_watch("app")
    create(kube, ns, migration("app"))
    at_two = watched.until(
        lambda p: p["step"] == 2 and p["state"] == "running", what="step 2 running"
    )
    assert (at_two["steps"], at_two["revision"], at_two["description"]) == (
        4,
        base[1].id,
        "slow one",
    )
    assert at_two["since"].endswith("Z") and at_two["job"].startswith("app-g1-")
    assert in_init(web_pod(kube, ns)), "the database is at revision 1: the app waits"
    first.unlink()

    watched.until(lambda p: p["step"] == 4 and p["state"] == "running", what="step 4 running")
    shown = [m for m in watched.messages if m.startswith(f"[4/4] {base[3].id} slow one … ")]
    assert shown and shown[0].endswith(f"; Job {at_two['job']} is migrating to head"), (
        watched.messages
    )
    assert in_init(web_pod(kube, ns)), "revision 3 is not the scripts' head: the app waits"
    second.unlink()

    done = settled(kube, ns, "app")
    assert done["status"]["phase"] == "Succeeded" and "progress" not in done["status"]
    started = wait_for(
        lambda: web_pod(kube, ns),
        lambda pod: pod is not None and pod["status"].get("phase") == "Running",
        timeout=60,
        interval=0.3,
        what="the app pod to start once the schema is there",
    )
    assert started is not None
    [init] = started["status"]["initContainerStatuses"]
    assert init["state"]["terminated"]["exitCode"] == 0
    assert len(watched.seen) >= 2


# -- a failed run's last words -------------------------------------------------------------------


def test_a_failed_runs_last_log_lines_stay_in_status_without_the_password(
    kube: Kube,
    ns: str,
    canary_url: tuple[str, str],  # noqa: F811 - the fixture
) -> None:
    """A revision prints its connection URL and a password= line, then fails: the lines are
    in status.lastRun.logTail, masked, and stay after the Job is deleted."""
    password, url = canary_url
    loud = Rev(
        id=REVS[1].id,
        down=REVS[0].id,
        message="loud and broken",
        upgrade=(
            "import os\nprint('connecting to', os.environ['REVISOR_DATABASE_URL'])\n"
            f"print('password={password}')\nraise RuntimeError('the revision broke')"
        ),
    )
    create_secret(kube, ns, url)
    create_config_map(kube, ns, [REVS[0], loud])
    create(kube, ns, migration("app", onFailure="Stop"))
    failed = settled(kube, ns, "app")
    last = failed["status"]["lastRun"]
    assert failed["status"]["phase"] == "Failed", failed["status"]
    tail = last["logTail"]
    assert any(
        line.startswith("connecting to postgresql+psycopg://") and "***" in line for line in tail
    ), tail
    assert "password=***" in tail
    assert any("… FAILED: " in line and "the revision broke" in line for line in tail), tail
    [job] = migration_jobs(kube, ns, "app")
    client.BatchV1Api(kube.api).delete_namespaced_job(job, ns, propagation_policy="Background")
    wait_for(
        lambda: migration_jobs(kube, ns, "app"), lambda jobs: not jobs, timeout=30,
        what="the Job to be gone",
    )  # fmt: skip
    kept = read(kube, ns, "app")
    assert kept["status"]["lastRun"]["logTail"] == tail
    events = client.CoreV1Api(kube.api).list_namespaced_event(ns)
    assert password not in json.dumps(kept) + json.dumps(
        kube.api.sanitize_for_serialization(events)
    )


# -- adopting a database create_all() built --------------------------------------------------------


def test_spec_baseline_adopts_a_database_built_without_alembic(
    kube: Kube, ns: str, pg_url: str
) -> None:
    """The tables of revisions 1 and 2, no version table: refused (NeedsBaseline, which says
    to set spec.baseline); with spec.baseline at revision 2, stamped there, then migrated on."""
    execute(
        pg_url,
        "CREATE TABLE t1 (id integer PRIMARY KEY)",
        "CREATE TABLE t2 (id integer PRIMARY KEY)",
    )
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, REVS)
    create(kube, ns, migration("app"))
    refused = settled(kube, ns, "app")
    assert ready(refused)["reason"] == "NeedsBaseline", refused["status"]
    assert (
        "Set spec.baseline to the revision the existing schema matches" in ready(refused)["message"]
    )
    assert db_version(pg_url) == set()

    generation = patch_spec(kube, ns, "app", {"baseline": REVS[1].id})
    adopted = settled(kube, ns, "app", generation=generation, runs=2)
    assert adopted["status"]["phase"] == "Succeeded", adopted["status"]
    assert ready(adopted)["message"].endswith(
        f"the database had no version table and was stamped at spec.baseline {REVS[1].id} first"
    )
    assert [s["revision"] for s in adopted["status"]["lastRun"]["applied"]] == [HEAD]
    assert db_version(pg_url) == {HEAD}
    assert [r["direction"] for r in history_rows(pg_url, "run")] == ["stamp", "upgrade"]
