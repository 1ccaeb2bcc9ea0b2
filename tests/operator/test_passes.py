"""What one pass reads, and what the operator keeps between passes.

A pass reads only what its decision needs: the body kopf handed over (else the
resource), the Jobs from an index of kopf's watch, the pods of a run not yet
recorded, and the Secret and ConfigMap only when no run is going on. The
resync and the polls are the work queue's, with the settings' intervals.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import kopf
import pytest
from hypothesis import given
from hypothesis import strategies as st
from revisor_operator import handlers
from revisor_operator.adapters.kube import POOL_SIZE, Conflict
from revisor_operator.adapters.workqueue import WorkQueue
from revisor_operator.decisions.bodies import Job, JsonDict, Migration
from revisor_operator.decisions.jobs import MIGRATION_LABEL
from revisor_operator.decisions.observe import engine_may_run, observe_run, owned_pods, slim_job
from revisor_operator.decisions.reconcile import UNREAD
from revisor_operator.decisions.references import ConfigMapCheck, SecretCheck
from revisor_operator.handlers import (
    Changes,
    JobCache,
    LeanDiffBase,
    ReferenceChecks,
    Runtime,
    change_of,
    migration_jobs,
    on_loop,
    reconcile,
    schedule,
    track,
)
from revisor_operator.settings import Settings

from .factories import NAMESPACE, UID, decide_on, job_for, migration, pod, result
from .fake_kube import FakeKube, runtime
from .test_reconcile import OK_REFS

JOB = "shop-g1-abcdef"


@pytest.fixture(autouse=True)
def _no_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kopf, "event", lambda *_, **__: None)
    monkeypatch.setattr(handlers, "_progress_reads", handlers._Throttle())


def no_reference_reads(kube: FakeKube) -> FakeKube:
    kube.failures["check_secret"] = AssertionError("the Secret was read")
    kube.failures["check_config_map"] = AssertionError("the ConfigMap was read")
    return kube


def running() -> Job:
    job = job_for(state="active", name=JOB)
    job["metadata"]["uid"] = ""  # as the tests' Jobs: every pod given is its own
    return job


# -- the Secret and ConfigMap: only when a rule needs them --------------------------------


def test_decide_asks_for_the_references_only_when_no_run_goes_on() -> None:
    assert decide_on(migration(), references=UNREAD).action == "read"  # type: ignore[arg-type]
    run = observe_run(job=running(), pods=[pod(job=JOB, waiting=("ContainerCreating", ""))])
    waiting = decide_on(migration(), runs=[run], references=UNREAD)  # type: ignore[arg-type]
    assert waiting.action == "wait"
    assert waiting == decide_on(migration(), runs=[run], references=OK_REFS)
    invalid = migration(spec={"target": "head"})
    assert decide_on(invalid, references=None).action == "report"


def test_a_pass_while_a_job_runs_reads_no_secret_or_config_map() -> None:
    kube = no_reference_reads(FakeKube(migration(), jobs=[running()], pods={JOB: [pod(job=JOB)]}))
    decision = reconcile(runtime(kube), namespace=NAMESPACE, name="shop")
    assert decision is not None and decision.action == "wait"


def test_a_new_resource_reads_them_and_creates_its_job() -> None:
    kube = FakeKube(migration())
    decision = reconcile(runtime(kube), namespace=NAMESPACE, name="shop")
    assert decision is not None and decision.action == "create"
    assert len(kube.created) == 1


# -- the resource: the body kopf handed over -----------------------------------------------


def test_a_pass_handed_the_body_does_not_read_it_again() -> None:
    kube = FakeKube(migration())
    reconcile(runtime(kube), namespace=NAMESPACE, name="shop", body=migration())
    assert kube.gets == 0 and len(kube.created) == 1


class ConflictOnce(FakeKube):
    """The first status write finds the resource changed since the body was read."""

    conflicted = False

    def patch_migration_status(
        self, *, namespace: str, name: str, status: JsonDict, resource_version: str | None
    ) -> Migration:
        if not self.conflicted:
            self.conflicted = True
            raise Conflict("the object has been modified", status=409, reason="Conflict")
        return super().patch_migration_status(
            namespace=namespace, name=name, status=status, resource_version=resource_version
        )


def test_a_stale_body_is_read_once_more_and_the_pass_goes_again() -> None:
    kube = ConflictOnce(migration())
    work = runtime(kube)
    decision = reconcile(work, namespace=NAMESPACE, name="shop", body=migration())
    assert kube.gets == 1
    assert decision is not None and decision.action == "wait"  # its Job exists now
    assert len(kube.created) == 1 and kube.adopted == []
    assert kube.migrations[NAMESPACE, "shop"]["status"]["phase"] == "Running"


def test_a_conflict_on_a_body_it_read_itself_goes_to_the_caller() -> None:
    kube = ConflictOnce(migration())
    with pytest.raises(Conflict):
        reconcile(runtime(kube), namespace=NAMESPACE, name="shop")


def test_passes_are_counted_by_trigger() -> None:
    from prometheus_client import REGISTRY

    def count() -> float:
        value = REGISTRY.get_sample_value("revisor_reconcile_passes_total", {"trigger": "progress"})
        return value or 0.0

    before = count()
    reconcile(runtime(FakeKube(migration())), namespace=NAMESPACE, name="shop", trigger="progress")
    assert count() == before + 1


# -- the Jobs: an index of kopf's watch, and the ones just created -------------------------


def indexed(*jobs: Job) -> dict[tuple[str, str], list[Job]]:
    return {(NAMESPACE, "shop"): [slim_job(j) for j in jobs]}


def cached_runtime(kube: FakeKube, index: dict[tuple[str, str], list[Job]]) -> Runtime:
    kube.failures["list_jobs"] = AssertionError("the Jobs were listed")
    return Runtime(settings=runtime(kube).settings, kube=kube, jobs=JobCache(index))


def test_a_pass_takes_the_jobs_from_the_index() -> None:
    kube = no_reference_reads(FakeKube(migration(), pods={JOB: [pod(job=JOB)]}))
    decision = reconcile(cached_runtime(kube, indexed(running())), namespace=NAMESPACE, name="shop")
    assert decision is not None and decision.action == "wait"


def test_a_job_just_created_counts_until_the_index_shows_it() -> None:
    index: dict[tuple[str, str], list[Job]] = {}
    now = [0.0]
    cache = JobCache(index, clock=lambda: now[0])
    job = running()
    cache.created(job)
    assert cache.jobs(NAMESPACE, "shop") == [job]
    index[NAMESPACE, "shop"] = [slim_job(job)]
    assert cache.jobs(NAMESPACE, "shop") == [slim_job(job)]  # the watch's, once only
    cache.created(job)
    now[0] = handlers.CREATED_JOB_SECONDS + 1
    index.clear()
    assert cache.jobs(NAMESPACE, "shop") == [], "not seen for a minute: gone after all"


def test_a_pass_after_a_create_sees_the_job_before_the_watch_does() -> None:
    kube = FakeKube(migration())
    work = cached_runtime(kube, {})
    reconcile(work, namespace=NAMESPACE, name="shop")
    decision = reconcile(work, namespace=NAMESPACE, name="shop")
    assert decision is not None and decision.action == "wait"
    assert len(kube.created) == 1 and kube.adopted == []


def test_the_index_keeps_a_jobs_owner_and_label_alike_only() -> None:
    job = job_for(state="active", name=JOB)

    def index(body: Job) -> Any:
        labels = body["metadata"].get("labels") or {}
        return migration_jobs(namespace=NAMESPACE, body=kopf.Body(body), labels=labels)  # type: ignore[arg-type]

    assert index(job) == {(NAMESPACE, "shop"): slim_job(job)}
    relabelled = copy.deepcopy(job)
    relabelled["metadata"]["labels"][MIGRATION_LABEL] = "other"
    assert index(relabelled) is None
    orphan = copy.deepcopy(job)
    orphan["metadata"]["ownerReferences"] = []
    assert index(orphan) is None


@pytest.mark.parametrize("state", ["active", "complete", "failed"])
def test_a_slim_job_reads_as_the_whole_job(state: str) -> None:
    job = job_for(state=state, name=JOB)
    job["metadata"]["uid"] = "job-uid"
    meta: dict[str, Any] = job["metadata"]  # type: ignore[assignment]
    meta["managedFields"] = [{"manager": "kube-controller-manager"}]
    mine = pod(job=JOB, exit_code=0, message=result())
    mine_meta: dict[str, Any] = mine["metadata"]  # type: ignore[assignment]
    mine_meta["ownerReferences"] = [{"uid": "job-uid", "kind": "Job", "controller": True}]
    mine["spec"] = copy.deepcopy(job["spec"]["template"]["spec"])
    forged = copy.deepcopy(mine)
    forged["spec"]["containers"][0]["image"] = "evil:latest"
    slim = slim_job(job)
    assert "managedFields" not in slim["metadata"]
    assert "env" not in str(slim["spec"])
    assert observe_run(job=slim, pods=[mine, forged]) == observe_run(job=job, pods=[mine, forged])
    assert owned_pods(slim, [mine, forged]) == [mine]


@pytest.mark.parametrize(
    ("status", "may"),
    [
        ({"active": 1, "ready": 1}, True),
        ({"active": 1, "ready": 0}, False),
        ({"active": 1}, True),  # a cluster that does not count ready pods
        ({}, False),  # no pod yet
        ({"active": 1, "ready": 1, "conditions": [{"type": "Complete", "status": "True"}]}, False),
    ],
)
def test_an_engine_may_run_only_in_a_ready_pod(status: dict[str, Any], may: bool) -> None:
    job = job_for(name=JOB)
    job["status"] = status
    assert engine_may_run(job) is may


# -- polls -----------------------------------------------------------------------------------


def test_a_progress_poll_while_no_engine_runs_reads_nothing() -> None:
    job = running()
    job["status"]["ready"] = 0
    kube = FakeKube(migration())
    kube.failures["get_migration"] = AssertionError("the resource was read")
    work = cached_runtime(kube, indexed(job))
    outcome = handlers._scheduled_pass(
        work, namespace=NAMESPACE, name="shop", trigger=handlers.PROGRESS_POLL
    )
    assert outcome == "skipped"
    job["status"]["ready"] = 1
    del kube.failures["get_migration"]
    work = cached_runtime(kube, indexed(job))
    outcome = handlers._scheduled_pass(
        work, namespace=NAMESPACE, name="shop", trigger=handlers.PROGRESS_POLL
    )
    assert outcome == "done" and kube.gets == 1


def test_a_pod_not_started_has_no_log_to_read() -> None:
    unscheduled = pod(job=JOB)
    unscheduled["status"] = {"phase": "Pending"}
    kube = FakeKube(migration(), jobs=[running()], pods={JOB: [unscheduled]})
    kube.logs[f"{JOB}-x7k2p"] = "never read"
    reconcile(runtime(kube), namespace=NAMESPACE, name="shop")
    assert kube.log_reads == []


def test_the_schedule_follows_the_settings_and_the_status() -> None:
    settings = Settings(resync_seconds=7, rollout_poll_seconds=2, progress_poll_seconds=3)
    assert schedule(settings, labels={}, status={}) == (7, None)
    assert schedule(settings, labels={}, status={"phase": "Running"}) == (7, (3, "progress"))
    assert schedule(settings, labels={}, status={"phase": "Planning"}) == (7, (3, "progress"))
    watching = {"phase": "Succeeded", "rollout": {"state": "Watching"}}
    assert schedule(settings, labels={}, status=watching) == (7, (2, "rollout"))
    child = schedule(settings, labels={"revisor.dev/set": "fleet"}, status={})
    assert child == (settings.fleet_child_resync_seconds, None)


def test_each_event_says_when_the_next_passes_are_due_and_a_change_wakes_one() -> None:
    import asyncio

    queue = WorkQueue(lambda *_: "done", lambda *_: None)
    changes = Changes()
    memo = {"runtime": runtime(FakeKube()), "passes": queue, "changes": changes}

    def event(type_: str | None, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        asyncio.run(
            track(
                type=type_,
                namespace=NAMESPACE,
                name="shop",
                body=kopf.Body(body),  # type: ignore[arg-type]
                meta=meta,
                labels=meta.get("labels") or {},
                status=body.get("status") or {},
                memo=memo,
            )
        )

    body: dict[str, Any] = copy.deepcopy(dict(migration()))
    event(None, body)
    assert queue.tracked() == 1
    assert queue.pending() == 0, "not before kopf has put its finalizer on it"
    body["metadata"].update(finalizers=[handlers.FINALIZER])
    event("MODIFIED", body)
    assert queue.pending() == 1
    handed = changes.take((NAMESPACE, "shop"))
    assert handed is not None
    assert dict(handed["metadata"]).get("finalizers") == [handlers.FINALIZER]

    fresh = WorkQueue(lambda *_: "done", lambda *_: None)
    memo["passes"] = fresh
    body["status"] = {"phase": "Running"}
    event("MODIFIED", body)  # its status: the operator's own write
    assert fresh.pending() == 0 and changes.take((NAMESPACE, "shop")) is None
    body["metadata"]["generation"] = 2
    event("MODIFIED", body)  # its spec
    assert fresh.pending() == 1
    event("DELETED", body)
    assert fresh.tracked() == 0 and changes.take((NAMESPACE, "shop")) is None


def test_what_calls_for_a_pass_is_the_spec_labels_annotations_finalizer_or_deletion() -> None:
    meta: dict[str, Any] = {
        "generation": 1,
        "resourceVersion": "1",
        "finalizers": [handlers.FINALIZER],
        "annotations": {"revisor.dev/last-handled-configuration": "{}"},
    }
    before = change_of(meta)
    assert change_of({**meta, "resourceVersion": "2"}) == before
    kopfs = {"revisor.dev/last-handled-configuration": '{"spec": {}}'}
    assert change_of({**meta, "annotations": kopfs}) == before
    changes: list[dict[str, Any]] = [
        {"generation": 2},
        {"labels": {"revisor.dev/set": "fleet"}},
        {"annotations": {"revisor.dev/retry": "1"}},
        {"finalizers": []},
        {"deletionTimestamp": "2025-01-02T03:04:05Z"},
    ]
    for changed in changes:
        assert change_of({**meta, **changed}) != before, changed


# -- the Secret and ConfigMap checks, shared for a second ----------------------------------


class CountingKube(FakeKube):
    def __init__(self) -> None:
        super().__init__(migration())
        self.secret_reads = 0
        self.config_map_reads = 0

    def check_secret(self, *, namespace: str, name: str) -> SecretCheck:
        self.secret_reads += 1
        return super().check_secret(namespace=namespace, name=name)

    def check_config_map(self, *, namespace: str, name: str) -> ConfigMapCheck:
        self.config_map_reads += 1
        return super().check_config_map(namespace=namespace, name=name)


def test_a_check_serves_every_pass_for_a_second_then_is_read_again() -> None:
    kube = CountingKube()
    now = [0.0]
    checks = ReferenceChecks(kube, seconds=1.0, clock=lambda: now[0])
    for _ in range(3):
        checks.check_secret(namespace=NAMESPACE, name="shop-db")
        checks.check_config_map(namespace=NAMESPACE, name="shop-migrations")
    assert (kube.secret_reads, kube.config_map_reads) == (1, 1)
    checks.forget_config_map(namespace=NAMESPACE, name="shop-migrations")
    checks.check_config_map(namespace=NAMESPACE, name="shop-migrations")
    assert kube.config_map_reads == 2, "a labelled ConfigMap's change is read at once"
    now[0] = 1.5
    checks.check_secret(namespace=NAMESPACE, name="shop-db")
    assert kube.secret_reads == 2


def test_threads_wanting_one_check_read_it_once() -> None:
    import threading

    class Slow(CountingKube):
        def check_secret(self, *, namespace: str, name: str) -> SecretCheck:
            time.sleep(0.1)
            return super().check_secret(namespace=namespace, name=name)

    kube = Slow()
    checks = ReferenceChecks(kube)
    threads = [
        threading.Thread(target=checks.check_secret, kwargs={"namespace": "a", "name": "b"})
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert kube.secret_reads == 1


# -- kopf's side -----------------------------------------------------------------------------


def dbm_body(annotations: dict[str, str], *, status: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = copy.deepcopy(dict(migration()))
    body["metadata"].update(
        annotations=annotations,
        labels={"app": "shop"},
        managedFields=[{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        ownerReferences=[{"kind": "DatabaseMigrationSet", "name": "fleet", "uid": UID}],
        finalizers=["revisor.dev/finalizer"],
    )
    if status:
        body["status"] = {"phase": "Running", "conditions": [{"type": "Ready"}]}
    return body


@given(
    annotations=st.dictionaries(
        st.sampled_from(
            [
                "revisor.dev/last-handled-configuration",
                "revisor.dev/retry",
                "revisor.dev/drift-check",
                "kopf.zalando.org/last-handled-configuration",
                "kubectl.kubernetes.io/last-applied-configuration",
                "example.com/note",
            ]
        ),
        st.text(max_size=5),
    ),
    status=st.booleans(),
    extra=st.sampled_from([[], [("spec",)], [("metadata", "annotations")], [("status", "phase")]]),
)
def test_the_lean_diff_base_is_kopfs_essence(
    annotations: dict[str, str], status: bool, extra: list[tuple[str, ...]]
) -> None:
    body = kopf.Body(dbm_body(annotations, status=status))  # type: ignore[arg-type]
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix="revisor.dev", key="last-handled-configuration")
    lean = LeanDiffBase(
        kinds=["DatabaseMigration"], prefix="revisor.dev", key="last-handled-configuration"
    )
    assert lean.build(body=body, extra_fields=extra) == kopfs.build(body=body, extra_fields=extra)


def test_a_kind_without_change_handlers_has_no_essence_to_build() -> None:
    """kopf builds one for every event of every Job, and compares it with nothing."""
    lean = LeanDiffBase(
        kinds=["DatabaseMigration"], prefix="revisor.dev", key="last-handled-configuration"
    )
    job = kopf.Body(job_for(name=JOB))  # type: ignore[arg-type]
    assert lean.build(body=job, extra_fields=[("spec",)]) == {}


def test_handlers_that_only_wake_run_on_kopfs_event_loop() -> None:
    import asyncio
    import inspect
    import threading

    from kopf._core.actions.invocation import is_async_fn
    from kopf._core.intents.registries import get_callable_id

    seen: list[str] = []

    def handler(**_: Any) -> str:
        seen.append(threading.current_thread().name)
        return "done"

    wrapped = on_loop(handler)
    assert is_async_fn(wrapped) and inspect.iscoroutinefunction(wrapped)
    assert get_callable_id(wrapped) == "handler"
    queue = WorkQueue(lambda *_: "done", lambda *_: None)
    assert asyncio.run(wrapped(memo={"passes": queue})) == "done"
    assert seen == ["MainThread"]
    assert asyncio.run(wrapped(memo={})) == "done"  # no work queue: it may reconcile, a thread
    assert seen[-1] != "MainThread"


def test_the_client_keeps_a_connection_for_every_thread_that_calls_it() -> None:
    threads = handlers.EXECUTOR_THREADS + handlers.PASS_THREADS + handlers.FLEET_THREADS
    assert threads <= POOL_SIZE
