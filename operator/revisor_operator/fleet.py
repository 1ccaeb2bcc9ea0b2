"""DatabaseMigrationSets, wired: gather, :func:`.decisions.fleet.rollout.decide_set`, act.

One pass of a set (:func:`reconcile_set`) reads the set afresh, its scripts'
fingerprint, its targets (the Secrets its selector matches, as metadata only;
its schemas query's Jobs) and its Jobs, takes its children's summaries from
an in-memory index (kopf's, filled from its watch of DatabaseMigrations and
complete before any handler runs), decides, and acts: the status first (with
the resourceVersion it read: a stale pass fails instead of admitting twice),
then the children, the query's Job, the removals, the Events, the metrics.

Passes of one set never overlap, and a burst of its children's events makes
one pass, not one each: the :class:`FleetWorker` runs passes on its own
threads, per set one at a time, at most one every ``fleet_pass_seconds``
after the last, whoever woke it. A set's rollout therefore costs API calls
in proportion to its children's progress, not to their events, and a
restarted operator's first pass of a set starts from what its status says
(``status.active``), so it admits no target twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import structlog

from . import API_VERSION, SET_KIND
from .adapters.kube import FleetAPI
from .adapters.metrics import forget_set, set_observed
from .decisions.bodies import Job, JsonDict, Migration
from .decisions.fleet.children import Child, SetRef, summarize
from .decisions.fleet.naming import label_safe, query_job_name
from .decisions.fleet.query import QueryStep
from .decisions.fleet.rollout import SetDecision, SetInputs, decide_set, job_info
from .decisions.fleet.spec import (
    SchemaTargets,
    SecretSelectorTargets,
    SetSpec,
    parse_set_spec,
)
from .decisions.fleet.targets import Resolved, resolve
from .decisions.fleet.words import FIELD_MANAGER, PURPOSE_LABEL, SCHEMAS_PURPOSE
from .decisions.observe import Run, job_finished, observe_run
from .decisions.references import scripts_fingerprint
from .decisions.spec import ConfigMapSource, InvalidSpec
from .settings import Settings

log = structlog.get_logger("revisor_operator.fleet")

#: The "From" of the Events the operator posts on sets.
COMPONENT = "revisor-operator"

__all__ = ["Child", "FleetWorker", "reconcile_set", "summarize_child"]


def summarize_child(body: Mapping[str, Any]) -> Child | None:
    """What a set keeps in memory of one of its children (None: not a set's child)."""
    return summarize(cast(Migration, body))


def reconcile_set(
    kube: FleetAPI,
    settings: Settings,
    *,
    namespace: str,
    name: str,
    children: Callable[[], Sequence[Child]],
    now: datetime | None = None,
    recheck: Callable[[str, str], None] | None = None,
) -> SetDecision | None:
    """One pass: gather, decide, act. None when the set is gone.

    ``recheck(namespace, child)``, on a full pass, reconciles each failed child:
    a child's own timer is slow, and one whose Secret was fixed runs again then.
    """
    body = kube.get_set(namespace=namespace, name=name)
    if body is None:
        forget_set(namespace=namespace, name=name)
        return None
    moment = now or datetime.now(UTC)
    inputs = _gather(kube, settings, body=body, children=children(), now=moment)
    decision = decide_set(inputs)
    _act(kube, body=body, decision=decision)
    if recheck is not None:
        for child in decision.recheck:
            recheck(namespace, child)
    return decision


# -- gather -----------------------------------------------------------------------------


def _gather(
    kube: FleetAPI,
    settings: Settings,
    *,
    body: JsonDict,
    children: Sequence[Child],
    now: datetime,
) -> SetInputs:
    meta = body.get("metadata") or {}
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    spec: SetSpec | InvalidSpec
    try:
        spec = parse_set_spec(body.get("spec") or {})
    except InvalidSpec as invalid:
        spec = invalid
    common = {
        "body": body,
        "spec": spec,
        "children": children,
        "now": now,
        "defaults": settings.job_defaults,
        "policy": settings.policy,
    }
    if isinstance(spec, InvalidSpec):
        return SetInputs(scripts=None, resolved=Resolved(()), **common)  # type: ignore[arg-type]
    scripts, problem = _scripts(kube, spec, namespace=namespace)
    jobs = kube.list_set_jobs(namespace=namespace, set_label=label_safe(name))
    query: QueryStep | None = None
    targets = spec.targets
    if isinstance(targets, SchemaTargets) and targets.query is not None:
        from .decisions.fleet.schemas import step_query  # TEMPORARY-FLEET-LAZY

        owner = SetRef(name=name, namespace=namespace, uid=meta.get("uid", ""))
        runs = _query_runs(kube, body, jobs)
        query = step_query(
            owner=owner,
            spec=spec,
            status=body.get("status") or {},
            runs=runs,
            now=now,
            defaults=settings.job_defaults,
        )
    secrets = None
    if isinstance(targets, SecretSelectorTargets):
        secrets = kube.secret_names(namespace=namespace, selector=targets.selector.query())
    selected = {
        index: frozenset(kube.secret_names(namespace=namespace, selector=selector.query()))
        for index, selector in spec.selector_waves.items()
    }
    resolved = resolve(spec, secrets=secrets, schemas=query.names if query else None)
    return SetInputs(
        scripts=scripts,
        scripts_problem=problem,
        resolved=resolved,
        selected=selected,
        jobs=[job_info(j) for j in jobs],
        query=query,
        **common,  # type: ignore[arg-type]
    )


def _scripts(kube: FleetAPI, spec: SetSpec, *, namespace: str) -> tuple[str | None, str]:
    source = spec.migration.source
    if not isinstance(source, ConfigMapSource):
        return scripts_fingerprint(spec.migration, None), ""
    check = kube.check_config_map(namespace=namespace, name=source.name)
    fingerprint = scripts_fingerprint(spec.migration, check)
    if fingerprint is None:
        return None, (
            f"ConfigMap {namespace}/{source.name} not found: create it from the revision "
            f"files (kubectl -n {namespace} create configmap {source.name} "
            "--from-file=versions/) or fix spec.template.source.configMap.name"
        )
    return fingerprint, ""


def _query_runs(kube: FleetAPI, body: JsonDict, jobs: Sequence[Job]) -> dict[str, Run]:
    """The set's query Jobs as runs; pods are read only for the page being waited on."""
    progress = (body.get("status") or {}).get("schemaQuery") or {}
    waited = None
    if progress:
        waited = query_job_name(
            set_name=(body.get("metadata") or {}).get("name", ""),
            round_=int(progress.get("round") or 1),
            page=int(progress.get("page") or 1),
        )
    runs: dict[str, Run] = {}
    for job in jobs:
        if _labels(job).get(PURPOSE_LABEL) != SCHEMAS_PURPOSE:
            continue
        job_name = job.get("metadata", {}).get("name", "")
        pods = []
        if job_name == waited and job_finished(job):
            pods = kube.list_pods(namespace=job.get("metadata", {}).get("namespace", ""), job=job)
        runs[job_name] = observe_run(job=job, pods=pods)
    return runs


def _labels(job: Job) -> Mapping[str, str]:
    return job.get("metadata", {}).get("labels") or {}


# -- act --------------------------------------------------------------------------------


def _act(kube: FleetAPI, *, body: JsonDict, decision: SetDecision) -> None:
    meta = body.get("metadata") or {}
    namespace, name, uid = meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", "")
    logger = log.bind(namespace=namespace, set=name)
    if decision.status is not None:
        # First: the targets it admits are in status.active before their children exist.
        kube.patch_set_status(
            namespace=namespace,
            name=name,
            status=decision.status,
            resource_version=meta.get("resourceVersion"),
        )
    involved = {
        "apiVersion": API_VERSION,
        "kind": SET_KIND,
        "name": name,
        "namespace": namespace,
        "uid": uid,
    }
    for child in decision.apply:
        child_name = child["metadata"]["name"]
        outcome = kube.ensure_child(child, owner_uid=uid, field_manager=FIELD_MANAGER)
        logger.info(f"child {outcome}", child=child_name)
        if outcome == "conflict":
            _post(
                kube,
                involved,
                "Warning",
                "TargetConflict",
                f"DatabaseMigration {child_name} exists and is not this set's: its target "
                f"{child['metadata']['annotations'].get('fleet.revisor.dev/target')!r} cannot "
                "roll out until it is renamed or deleted",
            )
    for job in decision.create_jobs:
        created = kube.create_job(job)
        logger.info(
            "query job created" if created else "query job exists", job=job["metadata"]["name"]
        )
    for child_name in decision.delete_children:
        kube.delete_migration(namespace=namespace, name=child_name)
        logger.info("child removed: its target left the set", child=child_name)
    for job_name in decision.delete_jobs:
        kube.delete_job(namespace=namespace, name=job_name)
    for event in decision.events:
        _post(kube, involved, event.type, str(event.reason), event.message)
    counts = decision.counts
    set_observed(
        namespace=namespace,
        name=name,
        counts={
            "ready": counts.ready,
            "running": counts.running,
            "failed": counts.failed,
            "pending": counts.pending,
        },
        wave=decision.wave,
        generation=decision.rollout_generation,
        phase=str(decision.phase),
    )
    if decision.status is not None:
        logger.info(
            "set status updated",
            phase=str(decision.phase),
            ready=counts.ready,
            running=counts.running,
            failed=counts.failed,
            total=counts.total,
            admitted=len(decision.apply),
        )


def _post(kube: FleetAPI, involved: JsonDict, type_: str, reason: str, message: str) -> None:
    """Post an Event; one that cannot be posted is logged, never a failed pass."""
    try:
        kube.post_event(
            involved=involved, type=type_, reason=reason, message=message, component=COMPONENT
        )
    except Exception as exc:  # an Event is a courtesy: the status has the facts
        log.warning("event not posted", reason=reason, error=str(exc))


# -- the worker -------------------------------------------------------------------------


Key = tuple[str, str]


@dataclass
class _State:
    dirty: bool = False
    running: bool = False
    due: float = 0.0
    failures: int = 0
    #: The next pass is a full one (the set's timer): it also re-checks failed children.
    full: bool = False


class FleetWorker:
    """Runs sets' passes on its own threads: one at a time per set, bursts coalesced.

    ``run(namespace, name, full)`` is a pass (``full``: one the set's timer asked for);
    it returns False when the set is gone.
    ``on_error(namespace, name, exc, failures)`` says when to try again (seconds),
    or None to wait for the next wake.
    """

    def __init__(
        self,
        run: Callable[[str, str, bool], bool],
        on_error: Callable[[str, str, Exception, int], float | None],
        *,
        threads: int = 2,
        spacing: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._run = run
        self._on_error = on_error
        self._threads_wanted = threads
        self._spacing = spacing
        self._clock = clock
        self._states: dict[Key, _State] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self._threads_wanted):
            thread = threading.Thread(target=self._loop, name=f"revisor-fleet-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = self._clock() + timeout
        for thread in self._threads:
            thread.join(max(deadline - self._clock(), 0.0))
        self._threads.clear()

    def wake(self, namespace: str, name: str, *, delay: float = 0.0, full: bool = False) -> None:
        """A pass of the set is due in ``delay`` seconds (or at the time already due)."""
        with self._cond:
            state = self._states.setdefault((namespace, name), _State())
            state.full = state.full or full
            due = self._clock() + delay
            state.due = min(state.due, due) if state.dirty else max(state.due, due)
            state.dirty = True
            self._cond.notify_all()

    def pending(self) -> int:
        """Sets waiting for a pass (for tests and the log)."""
        with self._cond:
            return sum(1 for s in self._states.values() if s.dirty or s.running)

    def _next(self) -> tuple[Key, bool] | None:
        """The set whose pass is due first (and whether it is full), marked running."""
        with self._cond:
            while not self._stopping:
                now = self._clock()
                ready = [(s.due, k) for k, s in self._states.items() if s.dirty and not s.running]
                due = [(d, k) for d, k in ready if d <= now]
                if due:
                    _, key = min(due)
                    state = self._states[key]
                    full, state.full = state.full, False
                    state.dirty, state.running = False, True
                    return key, full
                timeout = min((d for d, _ in ready), default=now + 60.0) - now
                self._cond.wait(timeout=max(timeout, 0.01))
            return None

    def _loop(self) -> None:
        while True:
            picked = self._next()
            if picked is None:
                return
            key, full = picked
            namespace, name = key
            retry: float | None = None
            gone = False
            try:
                gone = not self._run(namespace, name, full)
                failures = 0
            except Exception as exc:
                with self._cond:
                    failures = self._states[key].failures + 1
                retry = self._on_error(namespace, name, exc, failures)
            with self._cond:
                state = self._states[key]
                state.running = False
                state.failures = failures
                now = self._clock()
                if gone and not state.dirty:
                    del self._states[key]
                elif retry is not None:
                    state.dirty = True
                    state.due = now + retry
                elif state.dirty:
                    state.due = max(state.due, now + self._spacing)
                self._cond.notify_all()
