"""The operator stopped while its Job runs, then started again: it adopts, never duplicates.

A migration that must not run twice is kept running (its second revision
waits while a flag file exists) while the operator that created its Job is
stopped and a new one started. The new operator finds the Job by its
deterministic name, creates no other, and records the result once the Job
finishes. The operator is stopped gracefully (kopf's runner, in this
process) or killed: ``revisor-operator``, the console script, in a process of
its own, ends with SIGKILL.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
import pytest
from kubernetes import client, config, watch
from prometheus_client.parser import text_string_to_metric_families
from revisor_operator import GROUP, PLURAL, VERSION
from revisor_operator.adapters.kube import Kube as KubeClient
from revisor_operator.settings import Settings

from tests.cluster.conftest import Kube
from tests.support.kube import wait_for
from tests.support.operator_kit import (
    HEAD,
    RESYNC_SECONDS,
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
    settled,
    slow,
)
from tests.support.postgres import PostgresServer, free_port

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

ADOPTION_WINDOW_SECONDS = 3.0


#: The ``ns`` fixture (tests/cluster/conftest.py) names namespaces after it.
PREFIX = "restart"


def _finished(job: dict[str, Any]) -> bool:
    conditions = job["status"].get("conditions") or []
    return any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions)


def _holds_for(seconds: float, check: Callable[[], bool], what: str) -> None:
    """``check`` stays true for ``seconds`` (an observation window, polled)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), what
        time.sleep(0.2)


@pytest.mark.parametrize("finish_while_down", [False, True], ids=["runs-on", "finished-meanwhile"])
def test_restarted_operator_adopts_the_running_job(
    kube: Kube, ns: str, pg_url: str, tmp_path: Path, finish_while_down: bool
) -> None:
    """Stop the operator mid-run, start another: one Job for the generation, then Succeeded.

    Whether the Job still runs when the new operator starts or finished
    while no operator ran, its result is recorded and no second Job made.
    """
    flag = tmp_path / "hold"
    flag.touch()
    revs = [REVS[0], slow(REVS[1], flag), REVS[2]]
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, revs)
    try:
        with running_operator(kube, ns):
            create(kube, ns, migration("app"))
            # The engine committed the first revision and sits inside the second.
            wait_for(lambda: db_version(pg_url), lambda v: v == {REVS[0].id}, timeout=60)
            wait_for(
                lambda: read(kube, ns, "app"),
                lambda obj: (obj.get("status") or {}).get("phase") == "Running",
                what="status Running",
            )
        [job] = jobs_of(kube, ns, "app")
        assert not _finished(job), "the Job must still run while no operator does"
        if finish_while_down:
            flag.unlink()
            wait_for(
                lambda: jobs_of(kube, ns, "app"),
                lambda jobs: all(_finished(j) for j in jobs),
                timeout=60,
                what="the Job to finish with no operator running",
            )

        with running_operator(kube, ns):
            # Its resume handler sees the Job (running or finished) within this window.
            _holds_for(
                ADOPTION_WINDOW_SECONDS,
                lambda: (
                    [j["metadata"]["uid"] for j in jobs_of(kube, ns, "app")]
                    == [job["metadata"]["uid"]]
                ),
                "the restarted operator must not create a second Job",
            )
            flag.unlink(missing_ok=True)
            done = settled(kube, ns, "app")
    finally:
        flag.unlink(missing_ok=True)

    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert status["currentRevision"] == HEAD
    assert status["lastRun"]["job"] == job["metadata"]["name"]
    assert [s["revision"] for s in status["lastRun"]["applied"]] == [r.id for r in revs]
    assert len(status["history"]) == 1
    jobs = jobs_of(kube, ns, "app")
    assert [j["metadata"]["uid"] for j in jobs] == [job["metadata"]["uid"]]
    assert jobs[0]["metadata"]["annotations"]["revisor.dev/generation"] == "1"
    assert len(history_rows(pg_url, "run")) == 1


# -- the real entry point, killed --------------------------------------------------------


class _Killed(BaseException):
    """The operator process ends here (a BaseException: nothing on the way catches it)."""


class _DiesBeforeTheStatusWrite(KubeClient):
    """The operator's API client, for an operator that dies right after creating the Job."""

    def patch_migration_status(self, **_: Any) -> Any:
        raise _Killed


@dataclass(frozen=True)
class OperatorProcess:
    """``revisor-operator`` (the console script) in a process of its own."""

    process: subprocess.Popen[bytes]
    liveness: str
    metrics: str
    log: Path

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=30) == -signal.SIGKILL


@contextlib.contextmanager
def operator_process(kube: Kube, namespace: str, log: Path) -> Iterator[OperatorProcess]:
    """The entry point as a Deployment runs it: one namespace, liveness and metrics on."""
    command = Path(sys.executable).with_name("revisor-operator")
    assert command.exists(), f"{command}: install the project (pip install -e .[operator])"
    liveness_port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kube.kubeconfig),
        "REVISOR_RESYNC_SECONDS": str(RESYNC_SECONDS),
        "REVISOR_LOG_FORMAT": "json",
    }
    env.pop("REVISOR_NAMESPACES", None)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                str(command),
                "--namespace",
                namespace,
                "--runner-image",
                "revisor:dev",
                "--liveness",
                f"http://127.0.0.1:{liveness_port}/healthz",
                "--metrics-port",
                str(metrics_port),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = OperatorProcess(
        process=process,
        liveness=f"http://127.0.0.1:{liveness_port}/healthz",
        metrics=f"http://127.0.0.1:{metrics_port}/metrics",
        log=log,
    )
    try:
        yield running
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _http_get(url: str) -> tuple[int, str]:
    """Status and body; 0 while nothing listens yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")
    except (OSError, http.client.HTTPException):
        return 0, ""


def _alive(operator: OperatorProcess) -> tuple[int, str]:
    """The liveness endpoint's answer, once it gives one (the operator has started)."""

    def probe() -> tuple[int, str]:
        assert operator.process.poll() is None, operator.log.read_text()
        return _http_get(operator.liveness)

    return wait_for(probe, lambda answer: answer[0] != 0, timeout=60, what="the liveness endpoint")


def _metric(text: str, name: str, **labels: str) -> float | None:
    """One sample from a Prometheus text exposition."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return None


class _Watched:
    """Every version of the namespace's DatabaseMigrations, as a watch delivers them.

    The API server ends watches now and then; the watch resumes from the last
    version it saw, so no version in between is missed.
    """

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.seen: list[dict[str, Any]] = []
        self._namespace = namespace
        self._api = config.new_client_from_config(config_file=str(kube.kubeconfig))
        self._watch = watch.Watch()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._record, daemon=True)
        self._thread.start()

    def _record(self) -> None:
        custom = client.CustomObjectsApi(self._api)
        version: str | None = None
        while not self._stopped.is_set():
            try:
                for event in self._watch.stream(
                    custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self._namespace,
                    PLURAL,
                    resource_version=version,
                    timeout_seconds=300,
                ):
                    self.seen.append(event["object"])
                    version = event["object"]["metadata"]["resourceVersion"]
            except Exception:
                time.sleep(0.2)  # ended by the server (or by stop()): resume from `version`

    def of(self, name: str) -> list[dict[str, Any]]:
        return [obj for obj in list(self.seen) if obj["metadata"]["name"] == name]

    def stop(self) -> None:
        self._stopped.set()
        self._watch.stop()
        self._api.close()


def _conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions") or []}


def test_killed_entry_point_restarted_adopts_jobs_and_converges(
    kube: Kube, ns: str, pg_url: str, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """SIGKILL ``revisor-operator`` mid-run, start another: no second Job, both converge.

    Two resources cover the two moments a kill can land: ``app``'s Job runs
    when the operator is killed; ``window``'s Job was created by an operator
    that died before writing any status (the reconcile stopped at its status
    write). The same two processes show the runtime: liveness answers,
    /metrics has the revisor_* metrics, and kopf keeps its state (the deletion
    handler's progress) in ``revisor.dev`` annotations with Revisor's own finalizer.
    """
    from revisor_operator import handlers  # after conftest set REVISOR_RESYNC_SECONDS

    other_db = postgres_server.create_database()
    other_url = postgres_server.url(other_db)
    flag = tmp_path / "hold"
    flag.touch()
    revs = [REVS[0], slow(REVS[1], flag), REVS[2]]
    create_secret(kube, ns, pg_url)
    create_secret(kube, ns, other_url, name="other-db")
    create_config_map(kube, ns, revs)
    watched = _Watched(kube, ns)
    log = tmp_path / "operator.log"
    try:
        with operator_process(kube, ns, log) as first:
            assert _alive(first)[0] == 200
            create(kube, ns, migration("app"))
            [job] = wait_for(
                lambda: jobs_of(kube, ns, "app"),
                lambda jobs: len(jobs) == 1,
                timeout=60,
                interval=0.05,
                what="the first operator's Job",
            )
            first.kill()
        assert not _finished(jobs_of(kube, ns, "app")[0]), "the Job outlives its operator"

        # An operator that dies between creating the Job and writing the status.
        window_body = migration("window", database={"urlSecretRef": {"name": "other-db"}})
        create(kube, ns, window_body)
        dying = handlers.Runtime(
            settings=Settings(runner_image="revisor:dev"), kube=_DiesBeforeTheStatusWrite(kube.api)
        )
        # Outside kopf there is no Event poster: record what it would have posted.
        posted: list[str] = []
        with pytest.MonkeyPatch.context() as patched:
            patched.setattr(kopf, "event", lambda body, **kw: posted.append(kw["reason"]))
            with pytest.raises(_Killed):
                handlers.reconcile(dying, namespace=ns, name="window")
        assert posted == ["Running"], "the Job was created: its Event must not wait for status"
        [window_job] = jobs_of(kube, ns, "window")
        assert "status" not in read(kube, ns, "window")

        with operator_process(kube, ns, log) as second:
            assert _alive(second)[0] == 200
            adopted = wait_for(
                lambda: read(kube, ns, "window"),
                lambda obj: (obj.get("status") or {}).get("phase") == "Running",
                what="the restarted operator to report window's Job as Running",
            )
            assert _conditions(adopted["status"]) == {
                "Ready": ("False", "Running"),
                "Progressing": ("True", "Running"),
                "Failed": ("False", "Running"),
            }
            assert window_job["metadata"]["name"] in adopted["status"]["conditions"][0]["message"]
            _holds_for(
                ADOPTION_WINDOW_SECONDS,
                lambda: (
                    [j["metadata"]["uid"] for j in jobs_of(kube, ns, "app")]
                    == [job["metadata"]["uid"]]
                    and [j["metadata"]["uid"] for j in jobs_of(kube, ns, "window")]
                    == [window_job["metadata"]["uid"]]
                ),
                "the restarted operator must not create a second Job",
            )
            in_flight = wait_for(
                lambda: _http_get(second.metrics),
                lambda answer: _metric(answer[1], "revisor_jobs_in_flight") == 2.0,
                what="both adopted Jobs in flight on /metrics",
            )[1]
            families = {f.name for f in text_string_to_metric_families(in_flight)}
            assert {
                "revisor_runs",
                "revisor_run_duration_seconds",
                "revisor_current_revision_info",
                "revisor_jobs_in_flight",
            } <= families, families

            # Deleting window while its Job runs: the finalizer holds it, kopf records progress.
            client.CustomObjectsApi(kube.api).delete_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, "window"
            )
            wait_for(
                lambda: read(kube, ns, "window")["metadata"].get("annotations") or {},
                lambda notes: any(k.startswith("revisor.dev/on_delete") for k in notes),
                what="kopf's progress annotation for the waiting deletion handler",
            )

            flag.unlink()
            done = settled(kube, ns, "app")
            wait_for(lambda: gone(kube, ns, "window"), bool, timeout=60, what="window deleted")
            served = _http_get(second.metrics)[1]
            assert _http_get(second.liveness)[0] == 200
            second.process.terminate()
            assert second.process.wait(timeout=30) == 0, log.read_text()
    finally:
        flag.unlink(missing_ok=True)
        watched.stop()
        print(log.read_text() if log.exists() else "(no operator log)")
        postgres_server.drop_database(other_db)

    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert status["currentRevision"] == HEAD
    assert status["lastRun"]["job"] == job["metadata"]["name"]
    assert len(status["history"]) == 1
    assert _conditions(status) == {
        "Ready": ("True", "Migrated"),
        "Progressing": ("False", "Migrated"),
        "Failed": ("False", "Migrated"),
    }
    assert [j["metadata"]["uid"] for j in jobs_of(kube, ns, "app")] == [job["metadata"]["uid"]]
    assert len(history_rows(pg_url, "run")) == 1

    window_versions = watched.of("window")
    recorded = [
        v["status"] for v in window_versions if (v.get("status") or {}).get("phase") == "Succeeded"
    ]
    assert recorded, "window's run was recorded before the resource went"
    assert recorded[-1]["lastRun"]["job"] == window_job["metadata"]["name"]
    assert recorded[-1]["currentRevision"] == HEAD

    assert _metric(served, "revisor_jobs_in_flight") == 0.0
    assert _metric(served, "revisor_runs_total", result="Migrated") == 2.0
    revision = _metric(
        served, "revisor_current_revision_info", namespace=ns, migration="app", revision=HEAD
    )
    assert revision == 1.0

    versions = watched.of("app") + window_versions
    assert versions, "the watch saw the resources"
    annotations = {key for v in versions for key in (v["metadata"].get("annotations") or {})}
    assert not [k for k in annotations if k.startswith("kopf.zalando.org")], annotations
    # No record of the last handled spec: the operator's work queue tracks changes itself.
    assert "revisor.dev/last-handled-configuration" not in annotations
    assert any(k.startswith("revisor.dev/on_delete") for k in annotations), annotations
    finalizers = {f for v in versions for f in v["metadata"].get("finalizers") or []}
    assert finalizers == {"revisor.dev/finalizer"}
