"""Prometheus metrics: a recorded run shows up on /metrics, by result, duration and revision.

Jobs in flight follow the Jobs the operator sees, not the runs it records: a
Job deleted with its resource before its run was recorded leaves the count.
The ``result`` label takes only the reasons Revisor defines (anything else is
``Other``), a deleted resource's revision series goes with it, and /metrics
binds to the address it is given.
"""

from __future__ import annotations

import socket
import urllib.request

import kopf
import pytest
from prometheus_client import REGISTRY
from revisor.contract import ExitCode, Reason
from revisor_operator.adapters import metrics
from revisor_operator.decisions.bodies import Job
from revisor_operator.decisions.observe import observe_run
from revisor_operator.decisions.reasons import OperatorReason
from revisor_operator.handlers import on_job_event, reconcile
from revisor_operator.settings import Settings

from tests.operator.factories import job_for, migration, pod, result
from tests.operator.fake_kube import FakeKube, memo, runtime
from tests.support.postgres import free_port


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_a_recorded_run_counts_by_result_and_sets_revision_and_in_flight() -> None:
    """A running Job raises the in-flight gauge; run_recorded lowers it and counts the result."""
    job = job_for(state="complete", name="shop-g7-metric")
    run = observe_run(job=job, pods=[pod(job="shop-g7-metric", exit_code=0, message=result())])
    before = sample("revisor_runs_total", result="Migrated")
    durations = sample("revisor_run_duration_seconds_count")
    in_flight = sample("revisor_jobs_in_flight")
    metrics.job_seen(namespace="shop", job="shop-g7-metric", active=True)
    assert sample("revisor_jobs_in_flight") == in_flight + 1
    metrics.run_recorded(
        namespace="shop", migration="shop", run=run, reason="Migrated", revision="3c9a1f0b2e44"
    )
    assert sample("revisor_runs_total", result="Migrated") == before + 1
    assert sample("revisor_run_duration_seconds_count") == durations + 1
    assert (
        sample(
            "revisor_current_revision_info",
            namespace="shop",
            migration="shop",
            revision="3c9a1f0b2e44",
        )
        == 1
    )
    assert sample("revisor_jobs_in_flight") == in_flight


def test_failures_are_counted_under_their_reason() -> None:
    job = job_for(state="failed", name="shop-g8-metric")
    message = result(ExitCode.LOCK_TIMEOUT, error="held", applied=())
    run = observe_run(job=job, pods=[pod(job="shop-g8-metric", exit_code=3, message=message)])
    before = sample("revisor_runs_total", result="LockTimeout")
    metrics.run_recorded(
        namespace="shop", migration="shop", run=run, reason="LockTimeout", revision=None
    )
    assert sample("revisor_runs_total", result="LockTimeout") == before + 1


def test_metrics_are_served_over_http() -> None:
    port = free_port()
    metrics.serve(port)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "revisor_runs_total" in body and "revisor_jobs_in_flight" in body


def test_metrics_bind_only_to_the_address_they_are_given() -> None:
    """serve(port, "127.0.0.1") answers on 127.0.0.1 and not on another loopback address.

    Bound to every interface (0.0.0.0), 127.0.0.2 would answer too, and the port
    could not be bound there again.
    """
    port = free_port()
    metrics.serve(port, "127.0.0.1")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "revisor_runs_total" in body
    with socket.socket() as probe:
        probe.settimeout(5)
        assert probe.connect_ex(("127.0.0.2", port)) != 0, "/metrics answered on 127.0.0.2"
    with socket.socket() as other:
        other.bind(("127.0.0.2", port))  # free there: the server holds 127.0.0.1 only


def test_the_bind_address_comes_from_the_environment() -> None:
    """REVISOR_METRICS_ADDRESS, as the chart's metrics.bindAddress sets it; 0.0.0.0 by default."""
    assert Settings.from_env({}).metrics_address == "0.0.0.0"
    assert Settings.from_env({"REVISOR_METRICS_ADDRESS": "127.0.0.1"}).metrics_address == (
        "127.0.0.1"
    )
    assert Settings.from_env({"REVISOR_METRICS_ADDRESS": ""}).metrics_address == "0.0.0.0"


def test_the_result_label_takes_only_revisors_reasons() -> None:
    """Every engine and operator reason is its own label value; anything else is Other."""
    for reason in (*Reason, *OperatorReason):
        assert metrics.result_label(str(reason)) == str(reason)
    assert metrics.result_label("Migrated") == "Migrated"
    for foreign in ("", "migrated", "Anything a status could say", "Migrated\n", "x" * 500):
        assert metrics.result_label(foreign) == "Other"


def test_an_unknown_reason_is_counted_as_other() -> None:
    """A run recorded with a reason Revisor does not define adds no series of its own."""
    job = job_for(state="failed", name="shop-g11-metric")
    run = observe_run(job=job, pods=[pod(job="shop-g11-metric", exit_code=1, message=None)])
    other = sample("revisor_runs_total", result="Other")
    metrics.run_recorded(
        namespace="shop", migration="shop", run=run, reason="SomethingNew", revision=None
    )
    assert sample("revisor_runs_total", result="Other") == other + 1
    assert REGISTRY.get_sample_value("revisor_runs_total", {"result": "SomethingNew"}) is None


def test_forgetting_a_migration_removes_its_revision_series_only() -> None:
    """forget_migration drops the deleted resource's series; the others stay."""
    job = job_for(state="complete", name="shop-g12-metric")
    run = observe_run(job=job, pods=[pod(job="shop-g12-metric", exit_code=0, message=result())])
    for name in ("gone", "kept"):
        metrics.run_recorded(
            namespace="forget", migration=name, run=run, reason="Migrated", revision="3c9a1f0b2e44"
        )
    labels = {"namespace": "forget", "revision": "3c9a1f0b2e44"}
    assert sample("revisor_current_revision_info", migration="gone", **labels) == 1
    metrics.forget_migration(namespace="forget", name="gone")
    assert (
        REGISTRY.get_sample_value("revisor_current_revision_info", {"migration": "gone", **labels})
        is None
    )
    assert sample("revisor_current_revision_info", migration="kept", **labels) == 1
    metrics.forget_migration(namespace="forget", name="gone")  # twice, or never recorded: fine
    metrics.forget_migration(namespace="forget", name="never-recorded")


def _job_event(kube: FakeKube, job: Job, type_: str | None) -> None:
    """What kopf calls for one watch event of a migration Job."""
    meta = job["metadata"]
    on_job_event(
        type=type_,
        body=kopf.Body(job),  # type: ignore[arg-type]
        namespace=meta["namespace"],
        name=meta["name"],
        labels=meta["labels"],
        memo=memo(kube),
    )


def test_a_job_deleted_with_its_resource_before_it_was_recorded_leaves_in_flight() -> None:
    """The resource is deleted, its running Job garbage-collected: no run is ever recorded."""
    job = job_for(state="active", name="shop-g9-gone")
    gone = FakeKube(migration=None)  # the DatabaseMigration no longer exists
    in_flight = sample("revisor_jobs_in_flight")
    _job_event(gone, job, None)  # the watch's initial listing: running
    assert sample("revisor_jobs_in_flight") == in_flight + 1
    _job_event(gone, job, "MODIFIED")  # seen again: counted once
    assert sample("revisor_jobs_in_flight") == in_flight + 1
    _job_event(gone, job, "DELETED")
    assert sample("revisor_jobs_in_flight") == in_flight


def test_a_job_seen_finished_leaves_in_flight_even_before_it_is_recorded() -> None:
    in_flight = sample("revisor_jobs_in_flight")
    running = job_for(state="active", name="shop-g10-done")
    _job_event(FakeKube(migration=None), running, "ADDED")
    assert sample("revisor_jobs_in_flight") == in_flight + 1
    _job_event(FakeKube(migration=None), job_for(state="failed", name="shop-g10-done"), "MODIFIED")
    assert sample("revisor_jobs_in_flight") == in_flight


def test_a_reconcile_counts_the_jobs_it_lists_whatever_events_were_missed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Job a reconcile lists as running counts; listed finished (and recorded), it does not."""
    monkeypatch.setattr(kopf, "event", lambda *_, **__: None)
    in_flight = sample("revisor_jobs_in_flight")
    created = FakeKube(migration())
    reconcile(runtime(created), namespace="shop", name="shop")
    [job] = created.created
    name = job["metadata"]["name"]
    metrics.job_seen(namespace="shop", job=name, active=False)  # as if it was never counted

    listed = FakeKube(migration(), jobs=[job])
    decision = reconcile(runtime(listed), namespace="shop", name="shop")
    assert decision is not None and decision.action == "wait"
    assert sample("revisor_jobs_in_flight") == in_flight + 1

    job["status"] = job_for(state="complete")["status"]
    recorded = migration(status={"lastRun": {"job": name, "phase": "Succeeded"}})
    decision = reconcile(runtime(FakeKube(recorded, jobs=[job])), namespace="shop", name="shop")
    assert decision is not None and decision.action == "nothing"
    assert sample("revisor_jobs_in_flight") == in_flight
