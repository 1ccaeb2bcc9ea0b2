"""Prometheus metrics: a recorded run shows up on /metrics, by result, duration and revision."""

from __future__ import annotations

import urllib.request

from prometheus_client import REGISTRY
from revisor.contract import ExitCode
from revisor_operator import metrics
from revisor_operator.observe import observe_run

from tests.operator.factories import job_for, pod, result
from tests.support.postgres import free_port


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_a_recorded_run_counts_by_result_and_sets_revision_and_in_flight() -> None:
    """job_running raises the in-flight gauge; run_recorded lowers it and counts the result."""
    job = job_for(state="complete", name="shop-g7-metric")
    run = observe_run(job=job, pods=[pod(job="shop-g7-metric", exit_code=0, message=result())])
    before = sample("revisor_runs_total", result="Migrated")
    durations = sample("revisor_run_duration_seconds_count")
    metrics.job_running(namespace="shop", job="shop-g7-metric")
    assert sample("revisor_jobs_in_flight") >= 1
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
    assert sample("revisor_jobs_in_flight") == 0


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
