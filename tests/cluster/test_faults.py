"""Faults under the operator on the real control plane: each ends with the truth and a converged run.

The issue "Real histories, real faults" asks every fault to end the same way:
the database at a committed revision, no lock held, ``revisor_history``
telling the truth (an interrupted run marked so), the resource's status saying
what happened, and the next run converging. Here the engine runs in Jobs on
the process-kubelet (real processes, real signals) against PostgreSQL, and the
faults are real: the database server stopped under a Job, the Job's pod
deleted (SIGTERM, then SIGKILL after the grace period), the operator killed at
the points of a run tests/cluster/test_operator_restart.py does not cover, the
API server restarted while a Job runs, and two resources racing for one
database. docs/guarantees.md lists each fault with the test that proves it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
from kubernetes import client
from revisor_operator import GROUP, PLURAL, VERSION
from revisor_operator.adapters.kube import Kube as KubeClient
from revisor_operator.settings import Settings

from tests.cluster.conftest import Kube
from tests.support.kube import wait_for
from tests.support.operator_kit import (
    HEAD,
    REVS,
    create,
    create_config_map,
    create_namespace,
    create_secret,
    db_tables,
    db_version,
    delete_namespace,
    history_rows,
    install_crd,
    jobs_of,
    listed,
    migration,
    read,
    running_operator,
    settled,
    unique_prefix,
)
from tests.support.postgres import PostgresCluster, dedicated_postgres
from tests.support.projects import Rev
from tests.support.soak import advisory_locks

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.slow]

#: The ``ns`` fixture names namespaces after it; the module's ``operator`` watches them.
PREFIX = unique_prefix("faults")
FIRST, SECOND = REVS[0].id, REVS[1].id
RETRY_ANNOTATION = "revisor.dev/retry"


# -- revisions that hold the engine where a fault should hit it -----------------------------


def waiting_second(flag: Path, entered: Path, *, in_server: bool = False) -> list[Rev]:
    """The chain, its second revision held (after its DDL) while ``flag`` exists.

    It touches ``entered`` first, so a test knows the engine is inside it. It
    waits in Python (the engine between two statements of the revision), or,
    ``in_server``, in a ``pg_sleep`` (the engine waiting on the server).
    """
    second = REVS[1]
    hold = (
        f"if os.path.exists({str(flag)!r}):\n    op.execute('SELECT pg_sleep(600)')"
        if in_server
        else f"while os.path.exists({str(flag)!r}):\n    time.sleep(0.05)"
    )
    body = f"{second.upgrade}\nimport os, pathlib\npathlib.Path({str(entered)!r}).touch()\n{hold}"
    revs = list(REVS)
    revs[1] = Rev(id=second.id, down=second.down, message="held", upgrade=body,
                  downgrade=second.downgrade)  # fmt: skip
    return revs


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(flag, entered) for :func:`waiting_second`; the flag goes whatever happens."""
    flag, entered = tmp_path / "hold", tmp_path / "entered"
    flag.touch()
    yield flag, entered
    flag.unlink(missing_ok=True)


def wait_file(path: Path, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


# -- reading the cluster ---------------------------------------------------------------------


def the_job(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    [job] = wait_for(
        lambda: jobs_of(kube, ns, name),
        lambda jobs: len(jobs) == 1,
        timeout=60,
        what=f"{name}'s Job",
    )
    return job


def _engine_running(pod: dict[str, Any]) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return any("running" in (s.get("state") or {}) for s in statuses)


def running_pod(kube: Kube, ns: str, job: str) -> str:
    """The name of the Job's pod whose engine is running."""
    pods = wait_for(
        lambda: listed(kube, "pods", ns, f"job-name={job}"),
        lambda pods: any(_engine_running(p) for p in pods),
        timeout=60,
        what=f"a running pod of Job {job}",
    )
    return str(next(p["metadata"]["name"] for p in pods if _engine_running(p)))


def pod_log(kube: Kube, ns: str, pod: str) -> str:
    """The engine container's log, as ``kubectl logs`` shows it ("" if there is none yet)."""
    try:
        text: str = client.CoreV1Api(kube.api).read_namespaced_pod_log(pod, ns, container="revisor")
    except client.ApiException:
        return ""
    return text


def job_failures(kube: Kube, ns: str, job: str) -> int:
    found = client.BatchV1Api(kube.api).read_namespaced_job(job, ns)
    return int((found.status and found.status.failed) or 0)


def retry(kube: Kube, ns: str, name: str, value: str = "1") -> None:
    """Set ``revisor.dev/retry``: the documented way to run a failed resource again."""
    client.CustomObjectsApi(kube.api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, name, {"metadata": {"annotations": {RETRY_ANNOTATION: value}}}
    )


def ready_condition(obj: dict[str, Any]) -> dict[str, Any]:
    [found] = [c for c in obj["status"]["conditions"] if c["type"] == "Ready"]
    return dict(found)


def run_statuses(url: str) -> list[str]:
    return [str(r["status"]) for r in history_rows(url, "run")]


def steps_applied(url: str) -> list[tuple[str, str]]:
    return [(str(s["revision"]), str(s["direction"])) for s in history_rows(url, "step")]


# -- the database server stopped under a Job -------------------------------------------------


@pytest.fixture(scope="module")
def crashable() -> Iterator[PostgresCluster]:
    """A PostgreSQL server of this module's own, which its tests stop and start."""
    with dedicated_postgres(durable=True) as cluster:
        yield cluster


@pytest.fixture
def crashable_url(crashable: PostgresCluster) -> Iterator[str]:
    if not crashable.running():
        crashable.start()
    name = crashable.server.create_database("job")
    yield crashable.server.url(name)
    if not crashable.running():
        crashable.start()
    crashable.server.drop_database(name)


@pytest.mark.usefixtures("operator")
def test_database_stopped_under_the_job_reports_unreachable_then_converges_on_retry(
    kube: Kube, ns: str, crashable: PostgresCluster, crashable_url: str, hold: tuple[Path, Path]
) -> None:
    """``pg_ctl stop -m immediate`` while the Job's engine waits in revision 2's statement.

    With ``backoffLimit: 0`` the Job fails at once on the engine's exit 6, and
    the status says so: ``DatabaseUnreachable``, the lost connection, and where
    the database is (revision 1, also ``currentRevision``). Started again,
    the server has revision 1, no lock and the dead run ``running``; the
    documented retry (the ``revisor.dev/retry`` annotation) runs it again: the
    dead run marked interrupted, the rest applied, Succeeded.
    """
    url = crashable_url
    flag, entered = hold
    create_secret(kube, ns, url)
    create_config_map(kube, ns, waiting_second(flag, entered, in_server=True))
    create(kube, ns, migration("app", runner={"backoffLimit": 0}))
    wait_file(entered, "the engine inside revision 2")
    crashable.stop("immediate")
    flag.unlink()
    failed = settled(kube, ns, "app", timeout=120)
    crashable.start()

    status = failed["status"]
    assert status["phase"] == "Failed", status
    assert status["lastRun"]["reason"] == "DatabaseUnreachable"
    assert status["lastRun"]["exitCode"] == 6
    message = ready_condition(failed)["message"]
    assert f"lost the connection to the database during {SECOND}" in message
    assert f"the database is at {FIRST}" in message
    assert "revisor.dev/retry" in message, "the status says how to run it again"
    assert status["currentRevision"] == FIRST, "where the database is, from the engine"
    assert db_version(url) == {FIRST}
    assert "t2" not in db_tables(url)
    assert advisory_locks(url) == []
    assert run_statuses(url) == ["running"], "nobody could write it; the next run will"

    retry(kube, ns, "app")
    done = settled(kube, ns, "app", runs=2, timeout=120)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["currentRevision"] == HEAD
    assert done["status"]["lastRun"]["from"] == [FIRST]
    assert len(jobs_of(kube, ns, "app")) == 2
    assert run_statuses(url) == ["interrupted", "succeeded"]
    assert steps_applied(url) == [(r.id, "upgrade") for r in REVS]
    assert advisory_locks(url) == []


@pytest.mark.usefixtures("operator")
def test_database_back_within_the_jobs_retries_converges_by_itself(
    kube: Kube, ns: str, crashable: PostgresCluster, crashable_url: str, hold: tuple[Path, Path]
) -> None:
    """The same crash with the default ``backoffLimit`` (3): the Job's next pod converges.

    Exit 6 is not final: the Job retries it. The server is started again once
    the first pod has failed; the next pod (after the Job controller's
    back-off) marks the dead run interrupted and finishes. One Job,
    Succeeded, no lock.
    """
    url = crashable_url
    flag, entered = hold
    create_secret(kube, ns, url)
    create_config_map(kube, ns, waiting_second(flag, entered, in_server=True))
    create(kube, ns, migration("app"))
    wait_file(entered, "the engine inside revision 2")
    job = the_job(kube, ns, "app")["metadata"]["name"]
    crashable.stop("immediate")
    flag.unlink()
    wait_for(
        lambda: job_failures(kube, ns, job),
        lambda failures: failures == 1,
        timeout=90,
        what="the Job to count its first pod failed",
    )
    assert read(kube, ns, "app")["status"]["phase"] == "Running", "the Job is still retrying"
    crashable.start()
    done = settled(kube, ns, "app", timeout=150)

    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["currentRevision"] == HEAD
    assert done["status"]["lastRun"]["job"] == job
    assert done["status"]["lastRun"]["from"] == [FIRST]
    assert [j["metadata"]["name"] for j in jobs_of(kube, ns, "app")] == [job]
    # One failed pod, unless a loaded machine let the next one start before the server:
    # such a pod cannot connect, writes nothing, and is retried in turn.
    assert 1 <= job_failures(kube, ns, job) <= 3
    assert run_statuses(url) == ["interrupted", "succeeded"]
    assert steps_applied(url) == [(r.id, "upgrade") for r in REVS]
    assert advisory_locks(url) == []


# -- the engine's pod deleted mid-revision ------------------------------------------------------


def test_pod_deleted_within_its_grace_period_finishes_the_revision_and_stops(
    kube: Kube, operator: Any, ns: str, pg_url: str, hold: tuple[Path, Path]
) -> None:
    """Pod deleted (grace 60 s) inside revision 2: the revision commits, the run stops there.

    The process-kubelet forwards SIGTERM; the engine finishes revision 2 and
    stops before 3: exit 4, its run recorded ``interrupted`` by itself. Exit 4
    is final (podFailurePolicy), so the Job fails; the deleted pod takes the
    engine's result along, and the status says exactly that (JobFailed, exit
    code 4, no pod left to read the result from, how to run it again). The
    retry annotation runs it again from revision 2 to head.
    """
    flag, entered = hold
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, waiting_second(flag, entered))
    create(kube, ns, migration("app"))
    wait_file(entered, "the engine inside revision 2")
    job = the_job(kube, ns, "app")["metadata"]["name"]
    pod = running_pod(kube, ns, job)
    client.CoreV1Api(kube.api).delete_namespaced_pod(pod, ns, grace_period_seconds=60)
    wait_for(
        lambda: pod_log(kube, ns, pod),
        lambda text: "received SIGTERM" in text,
        timeout=60,
        what="the engine to hear SIGTERM",
    )
    flag.unlink()  # revision 2 ends well within the grace period
    failed = settled(kube, ns, "app", timeout=120)

    status = failed["status"]
    assert status["phase"] == "Failed", status
    assert status["lastRun"]["reason"] == "JobFailed"
    message = ready_condition(failed)["message"]
    assert "exit code 4" in message
    assert "no pod is left to read the engine's result from" in message
    assert "revisor.dev/retry" in message
    assert db_version(pg_url) == {SECOND}, "revision 2 finished and committed"
    [run] = history_rows(pg_url, "run")
    assert run["status"] == "interrupted"
    assert run["error"] == (
        f"asked to stop (SIGTERM) before {HEAD}: the run stopped between revisions, 2 of 3 applied"
    )
    assert run["runner"] == pod
    assert advisory_locks(pg_url) == []

    retry(kube, ns, "app")
    done = settled(kube, ns, "app", runs=2, timeout=120)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["currentRevision"] == HEAD
    assert done["status"]["lastRun"]["from"] == [SECOND]
    assert run_statuses(pg_url) == ["interrupted", "succeeded"]
    assert steps_applied(pg_url) == [(r.id, "upgrade") for r in REVS]
    assert advisory_locks(pg_url) == []


def test_pod_killed_after_its_grace_period_loses_the_revision_and_the_job_retries(
    kube: Kube, operator: Any, ns: str, pg_url: str, hold: tuple[Path, Path]
) -> None:
    """Pod deleted with a 2 s grace while revision 2 will not end: SIGTERM, then SIGKILL.

    The revision's transaction dies with the process (its table never
    commits); the run row stays ``running``, nothing could write it. Exit 137
    is not final, so the Job starts another pod, whose engine marks the dead
    run ``interrupted`` (by the next run, in its words, not the engine's own
    SIGTERM words) and runs revision 2 again, and the status ends Succeeded.
    """
    flag, entered = hold
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, waiting_second(flag, entered))
    create(kube, ns, migration("app"))
    wait_file(entered, "the engine inside revision 2")
    job = the_job(kube, ns, "app")["metadata"]["name"]
    pod = running_pod(kube, ns, job)
    entered.unlink()
    client.CoreV1Api(kube.api).delete_namespaced_pod(pod, ns, grace_period_seconds=2)
    # The Job's next pod is inside revision 2 again: the first one's is gone for good.
    wait_file(entered, "the Job's next pod inside revision 2", timeout=120)
    assert job_failures(kube, ns, job) == 1
    assert db_version(pg_url) == {FIRST}, "the killed revision never committed"
    runs = history_rows(pg_url, "run")
    assert [r["status"] for r in runs] == ["interrupted", "running"]
    assert runs[0]["error"] == "the runner stopped before the run finished"
    assert runs[0]["runner"] == pod
    flag.unlink()
    done = settled(kube, ns, "app", timeout=120)

    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["currentRevision"] == HEAD
    assert done["status"]["lastRun"]["from"] == [FIRST]
    assert [j["metadata"]["name"] for j in jobs_of(kube, ns, "app")] == [job]
    assert run_statuses(pg_url) == ["interrupted", "succeeded"]
    assert steps_applied(pg_url) == [(r.id, "upgrade") for r in REVS]
    assert advisory_locks(pg_url) == []


# -- the operator killed at the points test_operator_restart.py leaves out --------------------


class _Killed(BaseException):
    """The operator process ends here: a BaseException, which nothing on the way catches."""


class _DiesAt(KubeClient):
    """The operator's API client, for an operator killed on entering one call.

    Why this is a SIGKILL at that point: every effect an operator has outside
    itself goes through this client (import-linter: only the adapter talks
    to the API). A kill lets the calls that returned keep their effect and
    makes the next one never happen; raising a BaseException on entering that
    call does exactly that, and ``handlers.reconcile`` is called here without
    kopf, so no kopf state (progress annotations) is written either, as none
    would be by a handler killed before it returned. What survives is the same
    in both: the API's objects. The restarted operator sees only those.
    """

    def __init__(self, api: client.ApiClient, call: str) -> None:
        super().__init__(api)
        self._call = call

    def create_job(self, job: Any) -> bool:
        if self._call == "create_job":
            raise _Killed
        return super().create_job(job)

    def patch_migration_status(self, **kw: Any) -> Any:
        if self._call == "patch_migration_status":
            raise _Killed
        return super().patch_migration_status(**kw)


def reconcile_once(kube: Kube, ns: str, name: str, *, dies_at: str | None = None) -> list[str]:
    """One reconcile of ``name``, as the operator's handlers do it; the Events it posts.

    ``dies_at``: the operator is killed on entering that API call.
    """
    from revisor_operator import handlers

    api: KubeClient = KubeClient(kube.api) if dies_at is None else _DiesAt(kube.api, dies_at)
    runtime = handlers.Runtime(settings=Settings(runner_image="revisor:dev"), kube=api)
    posted: list[str] = []
    with pytest.MonkeyPatch.context() as patched:
        # Outside kopf there is no Event poster: record what it would post.
        patched.setattr(kopf, "event", lambda _body, **kw: posted.append(kw["reason"]))
        if dies_at is None:
            handlers.reconcile(runtime, namespace=ns, name=name)
        else:
            with pytest.raises(_Killed):
                handlers.reconcile(runtime, namespace=ns, name=name)
    return posted


@pytest.fixture
def unwatched(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace no operator watches (the module's watches ``PREFIX-*`` only)."""
    install_crd(kube)
    name = create_namespace(kube, "faultkill", request.node.name)
    yield name
    delete_namespace(kube, name)


def _holds(seconds: float, check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), what
        time.sleep(0.2)


def test_operator_killed_before_creating_the_job_creates_it_once_restarted(
    process_kubelet: Kube, unwatched: str, pg_url: str
) -> None:
    """Killed on the Job's create call: no Job, no status; the restarted operator runs it once."""
    kube, ns = process_kubelet, unwatched
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, REVS)
    create(kube, ns, migration("app"))
    posted = reconcile_once(kube, ns, "app", dies_at="create_job")
    assert posted == []
    assert jobs_of(kube, ns, "app") == []
    assert "status" not in read(kube, ns, "app")

    with running_operator(kube, ns):
        done = settled(kube, ns, "app")
        [job] = jobs_of(kube, ns, "app")
        _holds(2.0, lambda: len(jobs_of(kube, ns, "app")) == 1, "one Job, never a second")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["lastRun"]["job"] == job["metadata"]["name"]
    assert len(done["status"]["history"]) == 1
    assert run_statuses(pg_url) == ["succeeded"]
    assert db_version(pg_url) == {HEAD}


def test_operator_killed_after_the_job_finished_before_the_status_write_records_it_once(
    process_kubelet: Kube, unwatched: str, pg_url: str
) -> None:
    """The Job finished; the operator recording it is killed on the status write.

    Nothing is lost: the status still says Running, the Job and its pod's
    result are there, and the restarted operator records that run, once, with
    no second Job and no second run in the database.
    """
    kube, ns = process_kubelet, unwatched
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, REVS)
    create(kube, ns, migration("app"))
    assert reconcile_once(kube, ns, "app") == ["Running"]
    job = the_job(kube, ns, "app")
    wait_for(
        lambda: jobs_of(kube, ns, "app"),
        lambda jobs: any(
            c["type"] == "Complete" and c["status"] == "True"
            for c in jobs[0]["status"].get("conditions") or []
        ),
        timeout=90,
        what="the Job to complete with no operator running",
    )
    assert reconcile_once(kube, ns, "app", dies_at="patch_migration_status") == []
    assert read(kube, ns, "app")["status"]["phase"] == "Running", "the record was never written"

    with running_operator(kube, ns):
        done = settled(kube, ns, "app")
        _holds(2.0, lambda: len(jobs_of(kube, ns, "app")) == 1, "one Job, never a second")
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert status["currentRevision"] == HEAD
    assert status["lastRun"]["job"] == job["metadata"]["name"]
    assert len(status["history"]) == 1
    assert run_statuses(pg_url) == ["succeeded"]


# -- the API server restarted while a Job runs ---------------------------------------------------


def test_apiserver_restarted_while_the_job_runs_the_operator_reconnects_and_records(
    kube: Kube, operator: Any, ns: str, pg_url: str, hold: tuple[Path, Path]
) -> None:
    """kube-apiserver stops mid-run; the Job finishes while it is down; it comes back.

    Same port, certificates and etcd (``LocalCluster.restart_apiserver``'s two
    halves). The engine does not need the API: it finishes while the API is
    down. Once it is back, the kubelet reports the pod, the Job controller
    completes the Job, and the operator's watches reconnect: the run is
    recorded once, Succeeded, with one Job.
    """
    from localkube import LocalCluster

    cluster = LocalCluster.running_for(kube.kubeconfig)
    if cluster is None:
        pytest.skip("needs the local control plane this session started (restarts its API server)")
    flag, entered = hold
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, waiting_second(flag, entered))
    create(kube, ns, migration("app"))
    wait_file(entered, "the engine inside revision 2")
    job = the_job(kube, ns, "app")["metadata"]["name"]
    cluster.stop_apiserver()
    try:
        flag.unlink()
        deadline = time.monotonic() + 90
        while run_statuses(pg_url) != ["succeeded"]:
            assert time.monotonic() < deadline, "the engine did not finish while the API was down"
            time.sleep(0.1)
        assert db_version(pg_url) == {HEAD}
    finally:
        cluster.start_apiserver()
    done = settled(kube, ns, "app", timeout=180)

    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert status["currentRevision"] == HEAD
    assert status["lastRun"]["job"] == job
    assert len(status["history"]) == 1
    assert [j["metadata"]["name"] for j in jobs_of(kube, ns, "app")] == [job]
    assert run_statuses(pg_url) == ["succeeded"]
    assert advisory_locks(pg_url) == []


# -- two resources, one database ------------------------------------------------------------------


def test_two_resources_on_one_database_run_one_after_the_other_each_status_true(
    kube: Kube, operator: Any, ns: str, pg_url: str, hold: tuple[Path, Path]
) -> None:
    """``up`` (target head) and ``down`` (target revision 1) name the same database.

    ``up`` holds the lock inside revision 2 when ``down`` starts; ``down``'s
    engine waits for the lock (and says so in its log), then plans from where
    ``up`` left the database. Both succeed and each status says where the
    database was when its own run ended: ``up`` at head, ``down`` at revision 1,
    having come down from head. The database ends where the last run put it.
    Neither is run again: the operator does not fight over the database (see
    docs/guarantees.md: such resources are a configuration error it cannot see).
    """
    flag, entered = hold
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, waiting_second(flag, entered))
    create(kube, ns, migration("up"))
    wait_file(entered, "up's engine inside revision 2")
    create(kube, ns, migration("down", target=FIRST, lock={"timeoutSeconds": 300}))
    down_job = the_job(kube, ns, "down")["metadata"]["name"]
    down_pod = running_pod(kube, ns, down_job)
    wait_for(
        lambda: pod_log(kube, ns, down_pod),
        lambda text: "for the lock" in text,
        timeout=90,
        what="down's engine to wait for the lock",
    )
    flag.unlink()
    up = settled(kube, ns, "up", timeout=120)["status"]
    down = settled(kube, ns, "down", timeout=120)["status"]

    assert up["phase"] == "Succeeded", up
    assert up["currentRevision"] == HEAD
    assert (up["lastRun"]["from"], up["lastRun"]["to"]) == ([], [HEAD])
    assert down["phase"] == "Succeeded", down
    assert down["currentRevision"] == FIRST
    assert down["lastRun"]["direction"] == "downgrade"
    assert (down["lastRun"]["from"], down["lastRun"]["to"]) == ([HEAD], [FIRST])
    assert db_version(pg_url) == {FIRST}
    runs = history_rows(pg_url, "run")
    assert [(r["direction"], r["status"]) for r in runs] == [
        ("upgrade", "succeeded"),
        ("downgrade", "succeeded"),
    ]
    assert runs[0]["finished_at"] <= runs[1]["started_at"], "one after the other"
    assert advisory_locks(pg_url) == []
    assert len(jobs_of(kube, ns, "up")) == 1
    assert len(jobs_of(kube, ns, "down")) == 1


def test_pod_evicted_mid_revision_finishes_the_revision_and_the_job_goes_on(
    kube: Kube, operator: Any, ns: str, pg_url: str, hold: tuple[Path, Path]
) -> None:
    """A drain evicts the pod inside revision 2: the revision commits, the Job's next pod goes on.

    An eviction (the Eviction API, as ``kubectl drain`` calls it) marks the pod
    ``DisruptionTarget`` before deleting it. The engine stops between
    revisions exactly as for a delete (exit 4, interrupted), but this pod did
    not fail the migration: the Job's podFailurePolicy ignores it, and its next
    pod continues from revision 2 to head with no one's help. One Job,
    Succeeded; the history says interrupted (by the engine, at SIGTERM), then
    succeeded.
    """
    flag, entered = hold
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, waiting_second(flag, entered))
    create(kube, ns, migration("app"))
    wait_file(entered, "the engine inside revision 2")
    job = the_job(kube, ns, "app")["metadata"]["name"]
    pod = running_pod(kube, ns, job)
    eviction = client.V1Eviction.model_validate(
        {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod, "namespace": ns},
            "deleteOptions": {"gracePeriodSeconds": 60},
        }
    )
    client.CoreV1Api(kube.api).create_namespaced_pod_eviction(pod, ns, eviction)
    wait_for(
        lambda: pod_log(kube, ns, pod),
        lambda text: "received SIGTERM" in text,
        timeout=60,
        what="the engine to hear SIGTERM",
    )
    flag.unlink()
    done = settled(kube, ns, "app", timeout=150)

    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert status["currentRevision"] == HEAD
    assert status["lastRun"]["from"] == [SECOND]
    assert [j["metadata"]["name"] for j in jobs_of(kube, ns, "app")] == [job]
    assert job_failures(kube, ns, job) == 0, "an evicted pod does not count as a failure"
    runs = history_rows(pg_url, "run")
    assert [r["status"] for r in runs] == ["interrupted", "succeeded"]
    assert str(runs[0]["error"]).startswith(f"asked to stop (SIGTERM) before {HEAD}")
    assert steps_applied(pg_url) == [(r.id, "upgrade") for r in REVS]
    assert advisory_locks(pg_url) == []
