"""Prometheus metrics: what an SRE graphs and alerts on.

``revisor_runs_total{result}`` counts finished runs by condition reason
(``Migrated``, ``MigrationFailed``, ...): only the reasons the engine
(:class:`revisor.contract.Reason`) and the operator
(:class:`..decisions.reasons.OperatorReason`) define, anything else as
``Other``, so that no value from outside can grow the series without bound;
``revisor_run_duration_seconds`` is the engine's wall time per run;
``revisor_current_revision_info`` carries each resource's revision as a
label; ``revisor_jobs_in_flight`` is the number of migration Jobs running now.
Runs are counted once: only after the status write that records the run
succeeded.

Jobs in flight are derived from the Jobs themselves, not from our own
bookkeeping of runs: every time the operator sees a Job (its watch, and the
listing of each reconcile) it reports whether that Job is active. A Job that
finishes, or is deleted with its resource before its run was ever recorded,
leaves the gauge then.

A deleted resource's ``revisor_current_revision_info`` series goes with it
(:func:`forget_migration`), or every resource ever created would stay on
``/metrics`` for the life of the process.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram, Info, start_http_server
from revisor.contract import Reason

from ..decisions.observe import Run
from ..decisions.reasons import OperatorReason

#: The ``result`` label's values: the reasons a run can end with, and ``Other``.
RESULTS: frozenset[str] = frozenset(str(reason) for reason in (*Reason, *OperatorReason))
OTHER = "Other"

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


def serve(port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - the pod's own IP
    """Expose ``/metrics`` on ``address``:``port`` (port 0 disables)."""
    if port:
        start_http_server(port, addr=address)


def result_label(reason: str) -> str:
    """``reason`` if it is one of :data:`RESULTS`, else ``Other``."""
    return reason if reason in RESULTS else OTHER


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
    RUNS.labels(result=result_label(reason)).inc()
    seconds = _seconds(run)
    if seconds is not None:
        DURATION.observe(seconds)
    if revision is not None:
        CURRENT.labels(namespace=namespace, migration=migration).info({"revision": revision})


def forget_migration(*, namespace: str, name: str) -> None:
    """Drop a deleted resource's series, so that they do not outlive it."""
    with contextlib.suppress(KeyError):
        CURRENT.remove(namespace, name)


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
