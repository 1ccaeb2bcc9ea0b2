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

Schema drift, per resource with ``spec.drift``: ``revisor_schema_drifted``
(1 while the last check found drift not accepted, 0 otherwise; no series
while no check could tell) and ``revisor_schema_drift_differences`` (how
many differences it found, accepted ones included), set from
``status.drift`` on every pass (so a restarted operator shows them at its
first resync), gone with the resource; ``revisor_drift_checks_total{result}``
counts finished checks by their reason.

``revisor_reconcile_passes_total{trigger}`` counts the operator's passes over a
resource by what started them: ``change`` (created, its spec or admission
changed, or found at start), ``event`` (a Job's, a ConfigMap's or a drift
check's event, handled at once), ``wake`` (the same, through the work queue),
``resync``, ``retry``, and the polls ``rollout`` and ``progress``. A pass is
one read of the resource and its Jobs, and what it decides.

Per ``DatabaseMigrationSet``: ``revisor_fleet_targets{namespace,set,state}``
(state ``ready``, ``running``, ``failed``, ``pending``), ``revisor_fleet_wave``
(the current wave, from 1), ``revisor_fleet_rollout_generation`` and
``revisor_fleet_phase{phase}`` (1 for the set's phase, the others absent);
:func:`forget_set` drops them with the set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

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
DRIFTED = Gauge(
    "revisor_schema_drifted",
    "1 while the last drift check of a DatabaseMigration found drift that is not accepted",
    ["namespace", "migration"],
)
DIFFERENCES = Gauge(
    "revisor_schema_drift_differences",
    "Differences the last drift check of a DatabaseMigration found (accepted ones included)",
    ["namespace", "migration"],
)
CHECKS = Counter("revisor_drift_checks", "Finished drift checks, by result (reason)", ["result"])
FLEET_TARGETS = Gauge(
    "revisor_fleet_targets",
    "Targets of each DatabaseMigrationSet by state in its current rollout",
    ["namespace", "set", "state"],
)
FLEET_WAVE = Gauge(
    "revisor_fleet_wave", "The wave each DatabaseMigrationSet is at, from 1", ["namespace", "set"]
)
FLEET_ROLLOUT = Gauge(
    "revisor_fleet_rollout_generation",
    "The rollout generation of each DatabaseMigrationSet",
    ["namespace", "set"],
)
FLEET_PHASE = Gauge(
    "revisor_fleet_phase", "1 for each DatabaseMigrationSet's phase", ["namespace", "set", "phase"]
)
PASSES = Counter(
    "revisor_reconcile_passes",
    "Passes over a DatabaseMigration, by what started them",
    ["trigger"],
)
#: The ``trigger`` label's values (anything else counts as ``other``).
TRIGGERS = frozenset({"change", "event", "wake", "resync", "retry", "rollout", "progress"})
FLEET_STATES = ("ready", "running", "failed", "pending")
_fleet_phases: dict[tuple[str, str], str] = {}

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


def pass_started(*, trigger: str) -> None:
    PASSES.labels(trigger=trigger if trigger in TRIGGERS else "other").inc()


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
    for metric in (CURRENT, DRIFTED, DIFFERENCES):
        with contextlib.suppress(KeyError):
            metric.remove(namespace, name)


def drift_checked(*, reason: str) -> None:
    """A drift check was recorded, with this reason (NoDrift, Drifted, NoSnapshot, ...)."""
    CHECKS.labels(result=result_label(reason)).inc()


def drift_observed(*, namespace: str, migration: str, drift: Mapping[str, Any] | None) -> None:
    """The drift gauges from ``status.drift`` as it is now (None or unknown: no series)."""
    drifted = (drift or {}).get("drifted")
    if not isinstance(drifted, bool):
        for metric in (DRIFTED, DIFFERENCES):
            with contextlib.suppress(KeyError):
                metric.remove(namespace, migration)
        return
    accepted = (drift or {}).get("accepted") is True
    DRIFTED.labels(namespace=namespace, migration=migration).set(1 if drifted else 0)
    total = (drift or {}).get("differencesTotal")
    differences = total if isinstance(total, int) and (drifted or accepted) else 0
    DIFFERENCES.labels(namespace=namespace, migration=migration).set(differences)


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


def set_observed(
    *, namespace: str, name: str, counts: Mapping[str, int], wave: int, generation: int, phase: str
) -> None:
    """A set's pass: its counts by state, wave, rollout generation and phase."""
    for state in FLEET_STATES:
        FLEET_TARGETS.labels(namespace=namespace, set=name, state=state).set(counts.get(state, 0))
    FLEET_WAVE.labels(namespace=namespace, set=name).set(wave)
    FLEET_ROLLOUT.labels(namespace=namespace, set=name).set(generation)
    before = _fleet_phases.get((namespace, name))
    if before is not None and before != phase:
        with contextlib.suppress(KeyError):
            FLEET_PHASE.remove(namespace, name, before)
    FLEET_PHASE.labels(namespace=namespace, set=name, phase=phase).set(1)
    _fleet_phases[namespace, name] = phase


def forget_set(*, namespace: str, name: str) -> None:
    """Drop a deleted set's series."""
    for state in FLEET_STATES:
        with contextlib.suppress(KeyError):
            FLEET_TARGETS.remove(namespace, name, state)
    for gauge in (FLEET_WAVE, FLEET_ROLLOUT):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)
    phase = _fleet_phases.pop((namespace, name), None)
    if phase is not None:
        with contextlib.suppress(KeyError):
            FLEET_PHASE.remove(namespace, name, phase)
