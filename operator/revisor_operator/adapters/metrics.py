"""Prometheus metrics: what an SRE graphs and alerts on.

``revisor_runs_total{result}`` counts finished runs by condition reason
(``Migrated``, ``MigrationFailed``, ...); ``revisor_run_duration_seconds``
is the engine's wall time per run; ``revisor_current_revision_info`` carries
each resource's revision as a label; ``revisor_jobs_in_flight`` is the
number of migration Jobs running now. Runs are counted once: only after the
status write that records the run succeeded.

Jobs in flight are derived from the Jobs themselves, not from our own
bookkeeping of runs: every time the operator sees a Job (its watch, and the
listing of each reconcile) it reports whether that Job is active. A Job that
finishes, or is deleted with its resource before its run was ever recorded,
leaves the gauge then.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram, Info, start_http_server

from ..decisions.observe import Run

RUNS = Counter("revisor_runs", "Finished migration runs, by result (condition reason)", ["result"])
DURATION = Histogram(
    "revisor_run_duration_seconds",
    "Wall time of one migration run, from the engine's start to its end",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
CURRENT = Info(
    "revisor_current_revision",
    "The revision each DatabaseMigration's database is at",
    ["namespace", "migration"],
)
IN_FLIGHT = Gauge("revisor_jobs_in_flight", "Migration Jobs running now")

_in_flight: set[tuple[str, str]] = set()


def serve(port: int) -> None:
    """Expose ``/metrics`` on ``port`` (0 disables)."""
    if port:
        start_http_server(port)


def job_seen(*, namespace: str, job: str, active: bool) -> None:
    """A Job as the operator saw it: running (``active``), or finished or deleted."""
    if active:
        _in_flight.add((namespace, job))
    else:
        _in_flight.discard((namespace, job))
    IN_FLIGHT.set(len(_in_flight))


def run_recorded(
    *, namespace: str, migration: str, run: Run, reason: str, revision: str | None
) -> None:
    job_seen(namespace=namespace, job=run.job, active=False)
    RUNS.labels(result=reason).inc()
    seconds = _seconds(run)
    if seconds is not None:
        DURATION.observe(seconds)
    if revision is not None:
        CURRENT.labels(namespace=namespace, migration=migration).info({"revision": revision})


def _seconds(run: Run) -> float | None:
    result = run.result
    start = (result.started_at if result else None) or run.started_at
    end = (result.finished_at if result else None) or run.completed_at
    if not start or not end:
        return None
    try:
        delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    except ValueError:
        return None
    return max(delta.total_seconds(), 0.0)
