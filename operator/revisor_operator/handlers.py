"""kopf wiring: Kubernetes events in, ``decisions.reconcile.decide`` in the middle, API calls out.

Every handler ends in :func:`reconcile`, one pass that flows one way:
*gather* (read the resource, parse its spec once, read its Jobs, pods and
the references that spec needs through :mod:`.adapters.kube`), *decide*
(the pure :func:`.decisions.reconcile.decide`), *act* (create the Job,
write status, post the Event). That single path is why the handlers can
overlap safely (a timer tick and a Job event at once): Job creation is
idempotent (deterministic name, 409 means "already there") and status
writes carry the ``resourceVersion`` they were computed from, so a stale
write fails instead of recording a run twice.

Triggers (registered by :func:`register`, with the intervals of the
:class:`~.settings.Settings` the process was started with):

* create / update / resume of a ``DatabaseMigration`` (resume is what adopts
  running Jobs after an operator restart);
* a timer per resource (``REVISOR_RESYNC_SECONDS``): picks up Secrets and
  ConfigMaps created later and ConfigMap content changes, and repairs
  anything a missed event left behind;
* any change of a Job labelled ``app.kubernetes.io/managed-by: revisor``;
* any change of a ConfigMap labelled ``revisor.dev/scripts`` that some
  ``DatabaseMigration`` refers to (an index maps ConfigMaps to the resources
  using them); the API filters that watch, so unlabelled ConfigMaps never
  reach the operator's memory and are read on resync instead;
* deletion: the finalizer ``revisor.dev/finalizer`` is held while a Job
  runs, so deleting a resource never kills a migration halfway;
* while a rollback window is open (``status.rollout.state`` Watching), a
  second timer (``REVISOR_ROLLOUT_POLL_SECONDS``, 5 s) reads the Deployment
  named by ``spec.rollback.deploymentRef`` and judges its rollout;
* while a Job runs (phase Running or Planning), a third timer
  (``REVISOR_PROGRESS_POLL_SECONDS``, 5 s) reconciles, and the pass reads the
  last lines of the Job's pod log for its progress (:mod:`.decisions.progress`):
  a few KiB, at most once per interval per Job, whatever else wakes the pass;
* a value of the annotation ``revisor.dev/drift-check`` that no drift check has
  answered yet (a drift check now).

Following a rollout by polling one Deployment, rather than watching all of
them, is deliberate: it costs nothing while no window is open, needs only
``get`` on Deployments (not a cluster-wide watch of every Deployment), and
a few seconds of latency are nothing against a progress deadline of minutes.

When a reconcile fails
----------------------
kopf retries any exception but :class:`kopf.PermanentError` forever, with one
backoff for all. We decide instead, in :func:`after_failure` (pure), from what
failed:

* the resource changed meanwhile (409 Conflict): re-read at once;
* the API is unreachable, overloaded or failing (no answer, 401, 404, 408,
  429, 5xx): retry with a growing delay, never giving up — it is not ours to fix;
* 403 Forbidden: retry every minute — a human grants the RBAC, then it resumes;
* anything else — the API rejecting what we sent (400, 422), or an exception
  from our own code — is a bug or a spec the API will never accept: a few
  retries with a growing backoff, then give up with a Warning Event
  (``ReconcileError``) that says so. Giving up ends only this handler's
  retries; the resync timer tries again every ``REVISOR_RESYNC_SECONDS``.

kopf's own ``retries=`` is not used: it counts :class:`kopf.TemporaryError`
too, so an API outage would exhaust it. No condition is written for an
operator failure: conditions describe the migration (only ``decide``
writes them), and nothing would clear one once the failure is gone.

``on_delete`` never gives up, whatever fails (``errors=TEMPORARY`` and no
retry limit): once a deletion handler gives up, kopf removes the finalizer,
and a migration halfway would lose the resource that reports on it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

import kopf
import structlog

from . import API_VERSION, GROUP, PLURAL, SET_KIND, SET_PLURAL, VERSION
from .adapters.kopf_namespace_race import serve_namespaces_listed_at_watch_start
from .adapters.kube import Conflict, FleetAPI, Forbidden, Kube, KubeAPI, KubeError
from .adapters.metrics import (
    drift_checked,
    drift_observed,
    forget_migration,
    forget_set,
    job_seen,
    run_recorded,
)
from .decisions.admission import SET_LABEL, set_of
from .decisions.bodies import Job, Migration
from .decisions.drift import DRIFT_CHECK_ANNOTATION
from .decisions.fleet.words import PURPOSE_LABEL, SCHEMAS_PURPOSE
from .decisions.jobs import CONTAINER, MANAGED_BY, MANAGER, MIGRATION_LABEL, migration_of
from .decisions.observe import Run, job_finished, newest, observe_run
from .decisions.progress import (
    PROGRESS_LIMIT_BYTES,
    PROGRESS_TAIL_LINES,
    TAIL_LIMIT_BYTES,
    TAIL_LINES,
    Progress,
    latest_progress,
)
from .decisions.reasons import OperatorReason, Phase, WindowState
from .decisions.reconcile import Decision, decide
from .decisions.redaction import redact, shorten
from .decisions.references import ConfigMapCheck, References, needed
from .decisions.rollout import DeploymentStatus, deployment_status, parse_time
from .decisions.spec import ConfigMapSource, InvalidSpec, MigrationSpec, parse_spec
from .decisions.status import Event
from .fleet import Child, FleetWorker, reconcile_set, summarize_child
from .settings import Settings

log = structlog.get_logger("revisor_operator")

FINALIZER = f"{GROUP}/finalizer"
#: ConfigMaps with this label are watched: a change of their revision files is
#: acted on at once. Others are read on each resync (REVISOR_RESYNC_SECONDS).
SCRIPTS_LABEL = f"{GROUP}/scripts"
#: The "From" of every Event the operator posts (kubectl describe).
REPORTING_COMPONENT = "revisor-operator"
DELETE_POLL_SECONDS = 10.0
#: Passes of one reconcile: record a finished run, then start what was queued behind it.
MAX_PASSES = 3
#: Failures of a handler from a bug (or a request the API refuses) before it gives up.
MAX_BUG_ATTEMPTS = 5
BUG_BACKOFF_SECONDS = 5.0
API_RETRY_SECONDS = 10.0
API_RETRY_MAX_SECONDS = 60.0
FORBIDDEN_RETRY_SECONDS = 60.0
#: API statuses that say "try again later", not "this request is wrong".
_TRANSIENT_STATUSES = frozenset({0, 401, 404, 408, 429})


@dataclass(frozen=True)
class Runtime:
    """What the handlers share: settings and the API client. Kept in kopf's ``memo``."""

    settings: Settings
    kube: KubeAPI
    #: The calls of DatabaseMigrationSets (default: ``kube``, when it is the real client).
    fleet: FleetAPI | None = None

    @property
    def fleet_api(self) -> FleetAPI:
        if self.fleet is not None:
            return self.fleet
        if isinstance(self.kube, Kube):
            return self.kube
        raise kopf.PermanentError("the operator's runtime has no client for DatabaseMigrationSets")


def runtime_of(memo: Any) -> Runtime:
    runtime = memo.get("runtime")
    if not isinstance(runtime, Runtime):
        raise kopf.PermanentError("the operator's runtime was not configured at startup")
    return runtime


def register(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    """Register every handler with ``registry``, timers at ``settings``' intervals.

    kopf fixes a timer's interval when it is registered, so registration
    waits for the settings instead of happening when this module is imported.
    """
    serve_namespaces_listed_at_watch_start()
    if registry is not kopf.get_default_registry():
        # kopf puts its own login handlers in its default registry only.
        kopf.on.login(registry=registry)(kopf.login_via_client)

    @kopf.on.startup(registry=registry)
    def configure(*, settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
        """Our own storage prefix and finalizer; our own Events instead of kopf's chatter."""
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        settings.persistence.finalizer = FINALIZER
        # Events come from reconcile(); kopf posts only its warnings and errors,
        # and all of them say they are from the operator, not from "kopf".
        settings.posting.level = logging.WARNING
        settings.posting.reporting_component = REPORTING_COMPONENT
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        # The API filters the watches: only our Jobs, and only ConfigMaps labelled as
        # scripts (not every ConfigMap of every watched namespace, into memory).
        settings.watching.label_selectors["batch", "v1", "jobs"] = f"{MANAGED_BY}={MANAGER}"
        settings.watching.label_selectors["", "v1", "configmaps"] = SCRIPTS_LABEL
        if "runtime" not in memo:
            try:
                kube = Kube.from_environment()
            except KubeError as exc:
                raise kopf.PermanentError(str(exc)) from exc
            memo["runtime"] = Runtime(settings=settings_, kube=kube)

    settings_ = settings
    kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)(on_change)
    kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)(on_change)
    kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)(on_change)
    kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        interval=settings.resync_seconds,
        initial_delay=settings.resync_seconds,
        labels={SET_LABEL: kopf.ABSENT},
        registry=registry,
    )(resync)
    kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        interval=settings.rollout_poll_seconds,
        when=_watching_rollout,
        registry=registry,
    )(follow_rollout)
    kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        interval=settings.progress_poll_seconds,
        when=_job_running,
        registry=registry,
    )(follow_progress)
    # An event handler, not an update handler: kopf leaves annotations with its storage's
    # prefix (revisor.dev/) out of the diffs update handlers see.
    kopf.on.event(
        GROUP,
        VERSION,
        PLURAL,
        annotations={DRIFT_CHECK_ANNOTATION: kopf.PRESENT},
        when=_drift_check_unanswered,
        registry=registry,
    )(on_drift_check_asked)
    # Never a retry limit here: a deletion handler that gives up releases the finalizer.
    kopf.on.delete(
        GROUP,
        VERSION,
        PLURAL,
        errors=kopf.ErrorsMode.TEMPORARY,
        backoff=DELETE_POLL_SECONDS,
        registry=registry,
    )(on_delete)
    kopf.index(GROUP, VERSION, PLURAL, registry=registry)(config_map_users)
    kopf.on.event(
        "batch",
        "v1",
        "jobs",
        labels={MANAGED_BY: MANAGER, MIGRATION_LABEL: kopf.PRESENT},
        registry=registry,
    )(on_job_event)
    kopf.on.event("", "v1", "configmaps", labels={SCRIPTS_LABEL: kopf.PRESENT}, registry=registry)(
        on_config_map_event
    )
    _register_fleet(registry, settings)


# -- the DatabaseMigration -----------------------------------------------------------


def on_change(*, body: kopf.Body, retry: int, memo: Any, **_: Any) -> None:
    _reconcile_or_retry(runtime_of(memo), body=body, retry=retry)


def resync(*, body: kopf.Body, memo: Any, retry: int = 0, **_: Any) -> None:
    _reconcile_or_retry(runtime_of(memo), body=body, retry=retry)


def _watching_rollout(*, status: Mapping[str, Any], **_: Any) -> bool:
    return bool((status.get("rollout") or {}).get("state") == WindowState.WATCHING)


def follow_rollout(*, body: kopf.Body, memo: Any, retry: int = 0, **_: Any) -> None:
    """Judge the Deployment's rollout while the rollback window is open."""
    _reconcile_or_retry(runtime_of(memo), body=body, retry=retry)


def _job_running(*, status: Mapping[str, Any], **_: Any) -> bool:
    return status.get("phase") in (Phase.RUNNING, Phase.PLANNING)


def follow_progress(*, body: kopf.Body, memo: Any, **_: Any) -> None:
    """While a Job runs: its progress, read from its pod's log (see :func:`_progress`).

    A tick that conflicts with another pass is not retried: the next tick comes soon.
    """
    meta = body.metadata
    _reconcile_quietly(runtime_of(memo), namespace=meta.namespace or "", name=meta.name or "")


def _drift_check_unanswered(
    *, annotations: Mapping[str, str], status: Mapping[str, Any], **_: Any
) -> bool:
    asked = annotations.get(DRIFT_CHECK_ANNOTATION)
    return bool(asked) and asked != (status.get("drift") or {}).get("request")


def on_drift_check_asked(*, type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    """``revisor.dev/drift-check`` has a value no check answered yet: one is due now.

    Until its check is recorded, each event of the resource comes here; the pass is
    idempotent (the check's Job has one name), and event handlers are not retried: the
    resync timer catches up on a failure.
    """
    if type == "DELETED":
        return
    meta = body.metadata
    _reconcile_quietly(runtime_of(memo), namespace=meta.namespace or "", name=meta.name or "")


def on_delete(
    *,
    namespace: str | None,
    name: str,
    uid: str,
    body: kopf.Body,
    memo: Any,
    **_: Any,
) -> None:
    """Hold the finalizer while a Job of this resource runs, for a bounded time.

    A migration halfway should not lose the resource that reports on it; but
    a Job that runs for hours must not block the namespace's deletion for
    hours either. After ``delete_wait_seconds`` the finalizer goes (with a
    Warning Event saying so); the Job is then garbage-collected with the
    resource, and its engine, sent SIGTERM, stops between two revisions.
    """
    runtime = runtime_of(memo)
    namespace = namespace or ""
    forget_migration(namespace=namespace, name=name)
    try:
        jobs = _owned_jobs(runtime.kube, namespace=namespace, name=name, uid=uid)
    except KubeError as exc:
        raise kopf.TemporaryError(f"cannot list Jobs: {exc}", delay=DELETE_POLL_SECONDS) from exc
    running = [j for j in jobs if not job_finished(j)]
    if not running:
        return
    names = ", ".join(j.get("metadata", {}).get("name", "") for j in running)
    since = parse_time(body.metadata.get("deletionTimestamp"))
    waited = (datetime.now(UTC) - since).total_seconds() if since else 0.0
    limit = runtime.settings.delete_wait_seconds
    if waited < limit:
        raise kopf.TemporaryError(
            f"waiting for Job {names} to finish before deleting (at most {limit:g}s)",
            delay=DELETE_POLL_SECONDS,
        )
    kopf.event(
        body,
        type="Warning",
        reason=OperatorReason.DELETE_TIMEOUT,
        message=f"Gave up waiting {limit:g}s for Job {names} to finish: the resource goes "
        "now, and the Job with it; its engine stops between two revisions, and the next "
        "run against this database marks the run interrupted",
    )


def config_map_users(
    *,
    namespace: str | None,
    name: str,
    spec: Mapping[str, Any],
    labels: Mapping[str, str] | None = None,
    **_: Any,
) -> dict[tuple[str | None, str], str] | None:
    """ConfigMap (namespace, name) -> the DatabaseMigrations whose scripts it holds.

    Not a set's children: their set decides when they run new scripts.
    """
    if SET_LABEL in (labels or {}):
        return None
    try:
        source = parse_spec(spec).source
    except InvalidSpec:
        return None
    if isinstance(source, ConfigMapSource):
        return {(namespace, source.name): name}
    return None


# -- what the DatabaseMigration depends on ---------------------------------------------


def on_job_event(
    *,
    type: str | None,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    labels: Mapping[str, str],
    memo: Any,
    **_: Any,
) -> None:
    # Also for Jobs whose resource is gone (deleted with it, never recorded): see metrics.
    job_seen(
        namespace=namespace or "",
        job=name,
        active=type != "DELETED" and not job_finished(cast(Job, body)),
    )
    owner = migration_of(cast(Job, body))
    finished = job_finished(cast(Job, body))
    quiet = (type == "MODIFIED" and not finished) or (type == "DELETED" and finished)
    if SET_LABEL in labels and quiet:
        # A set's child's Job still running (its creation was seen, its end will be, its
        # progress is polled by follow_progress), or finished and deleted (its set prunes
        # Jobs whose runs are recorded): passes that would decide nothing, for a fleet's
        # children by the thousand.
        return
    if owner is not None:
        _reconcile_quietly(runtime_of(memo), namespace=namespace or "", name=owner)


def on_config_map_event(
    *,
    namespace: str | None,
    name: str,
    memo: Any,
    config_map_users: kopf.Index[tuple[str | None, str], str] | None = None,
    set_config_maps: kopf.Index[tuple[str | None, str], str] | None = None,
    **_: Any,
) -> None:
    users: list[str] = list(config_map_users.get((namespace, name), [])) if config_map_users else []
    for migration in users:
        _reconcile_quietly(runtime_of(memo), namespace=namespace or "", name=migration)
    sets: list[str] = list(set_config_maps.get((namespace, name), [])) if set_config_maps else []
    for set_name in sets:
        _fleet(memo).wake(namespace or "", set_name)


# -- DatabaseMigrationSets -------------------------------------------------------------
#
# A set's passes run on the FleetWorker's threads (see .fleet): these handlers only wake
# it. Its children are ordinary DatabaseMigrations (the handlers above), except that
# they also wake their set, react to the set's admission (an annotation), and are
# re-checked by their own timer only every fleet_child_resync_seconds.


@dataclass
class Fleet:
    """The fleet's worker and its view of the children index, kept in kopf's ``memo``."""

    worker: FleetWorker
    children: kopf.Index[tuple[str, str], Child] | None = None

    def wake(
        self,
        namespace: str,
        name: str,
        *,
        delay: float = 0.0,
        index: Any = None,
        full: bool = False,
    ) -> None:
        if index is not None:
            self.children = index
        self.worker.wake(namespace, name, delay=delay, full=full)


def _fleet(memo: Any) -> Fleet:
    fleet = memo.get("fleet")
    if not isinstance(fleet, Fleet):
        raise kopf.PermanentError("the operator's fleet worker was not started")
    return fleet


def _register_fleet(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    kopf.on.startup(registry=registry)(start_fleet)
    kopf.on.cleanup(registry=registry)(stop_fleet)
    kopf.index(GROUP, VERSION, PLURAL, labels={SET_LABEL: kopf.PRESENT}, registry=registry)(
        fleet_children
    )
    kopf.index(GROUP, VERSION, SET_PLURAL, registry=registry)(set_config_maps)
    kopf.on.resume(GROUP, VERSION, SET_PLURAL, registry=registry)(wake_set)
    kopf.on.create(GROUP, VERSION, SET_PLURAL, registry=registry)(wake_set)
    kopf.on.update(GROUP, VERSION, SET_PLURAL, field="spec", registry=registry)(wake_set)
    kopf.timer(
        GROUP,
        VERSION,
        SET_PLURAL,
        interval=settings.resync_seconds,
        initial_delay=settings.resync_seconds,
        registry=registry,
    )(resync_set)
    # Optional: no finalizer on sets; their children go with them (owner references).
    kopf.on.delete(GROUP, VERSION, SET_PLURAL, optional=True, registry=registry)(set_deleted)
    kopf.on.event(GROUP, VERSION, PLURAL, labels={SET_LABEL: kopf.PRESENT}, registry=registry)(
        on_child_event
    )
    # Admitted to a new rollout with the same spec: only its fleet.revisor.dev annotations
    # change (kopf ignores every revisor.dev/ annotation: its own storage lives there).
    kopf.on.update(
        GROUP,
        VERSION,
        PLURAL,
        field="metadata.annotations",
        labels={SET_LABEL: kopf.PRESENT},
        registry=registry,
    )(on_admitted)
    kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        interval=settings.fleet_child_resync_seconds,
        initial_delay=settings.fleet_child_resync_seconds,
        labels={SET_LABEL: kopf.PRESENT},
        registry=registry,
    )(resync_child)
    kopf.on.event(
        "batch",
        "v1",
        "jobs",
        labels={MANAGED_BY: MANAGER, PURPOSE_LABEL: SCHEMAS_PURPOSE},
        registry=registry,
    )(on_query_job_event)


def start_fleet(*, memo: Any, **_: Any) -> None:
    """Start the worker that runs sets' passes (after ``configure`` made the runtime)."""
    runtime = runtime_of(memo)

    def run(namespace: str, name: str, full: bool) -> bool:
        fleet = _fleet(memo)

        def children() -> list[Child]:
            index = fleet.children
            return list(index.get((namespace, name), [])) if index is not None else []

        decision = reconcile_set(
            runtime.fleet_api,
            runtime.settings,
            namespace=namespace,
            name=name,
            children=children,
            recheck=recheck if full else None,
        )
        return decision is not None

    def recheck(namespace: str, child: str) -> None:
        _reconcile_quietly(runtime, namespace=namespace, name=child)

    def on_error(namespace: str, name: str, exc: Exception, failures: int) -> float | None:
        then = after_failure(
            exc, retry=failures - 1, resync_seconds=runtime.settings.resync_seconds
        )
        if then.bug:
            log.error("set pass failed", namespace=namespace, set=name, error=then.message)
        else:
            log.info("set pass failed", namespace=namespace, set=name, error=then.message)
        if then.delay is None:
            with contextlib.suppress(KubeError):
                runtime.fleet_api.post_event(
                    involved={
                        "apiVersion": API_VERSION,
                        "kind": SET_KIND,
                        "name": name,
                        "namespace": namespace,
                    },
                    type="Warning",
                    reason=OperatorReason.RECONCILE_ERROR,
                    message=then.message,
                    component=REPORTING_COMPONENT,
                )
        return then.delay

    worker = FleetWorker(run, on_error, spacing=runtime.settings.fleet_pass_seconds)
    worker.start()
    memo["fleet"] = Fleet(worker=worker)


def stop_fleet(*, memo: Any, **_: Any) -> None:
    fleet = memo.get("fleet")
    if isinstance(fleet, Fleet):
        fleet.worker.stop()


def fleet_children(
    *, namespace: str | None, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], Child] | None:
    """(namespace, set) -> what the set needs of each child (never the child's whole body)."""
    child = summarize_child(body)
    owner = set_of(cast(Migration, body))
    if child is None or owner is None:
        return None
    return {(namespace or "", owner): child}


def set_config_maps(
    *, namespace: str | None, name: str, spec: Mapping[str, Any], **_: Any
) -> dict[tuple[str | None, str], str] | None:
    """ConfigMap (namespace, name) -> the sets whose template's scripts it holds."""
    source = (((spec.get("template") or {}).get("source")) or {}).get("configMap") or {}
    return {(namespace, str(source["name"])): name} if source.get("name") else None


def wake_set(
    *, namespace: str | None, name: str, memo: Any, fleet_children: Any = None, **_: Any
) -> None:
    _fleet(memo).wake(namespace or "", name, index=fleet_children)


def resync_set(
    *, namespace: str | None, name: str, memo: Any, fleet_children: Any = None, **_: Any
) -> None:
    _fleet(memo).wake(namespace or "", name, index=fleet_children, full=True)


def set_deleted(*, namespace: str | None, name: str, **_: Any) -> None:
    forget_set(namespace=namespace or "", name=name)


def on_child_event(
    *, namespace: str | None, body: kopf.Body, memo: Any, fleet_children: Any = None, **_: Any
) -> None:
    """A child changed: its set's next pass is due (bursts of them make one pass).

    A child whose failed run is to run again (its annotation revisor.dev/retry
    changed: kopf compares no revisor.dev/ annotation) is reconciled at once.
    """
    owner = set_of(cast(Migration, body))
    summary = summarize_child(body)
    if summary is not None and summary.stale:
        _reconcile_quietly(
            runtime_of(memo), namespace=namespace or "", name=body.metadata.name or ""
        )
    if owner is not None:
        fleet = _fleet(memo)
        delay = runtime_of(memo).settings.fleet_pass_seconds
        fleet.wake(namespace or "", owner, delay=delay, index=fleet_children)


def on_admitted(*, body: kopf.Body, retry: int, memo: Any, **_: Any) -> None:
    """The set admitted this child to a rollout: run it now."""
    _reconcile_or_retry(runtime_of(memo), body=body, retry=retry)


def resync_child(*, body: kopf.Body, memo: Any, retry: int = 0, **_: Any) -> None:
    _reconcile_or_retry(runtime_of(memo), body=body, retry=retry)


def on_query_job_event(
    *, namespace: str | None, body: kopf.Body, memo: Any, fleet_children: Any = None, **_: Any
) -> None:
    """A page of a set's schemas query moved on."""
    for ref in body.metadata.get("ownerReferences") or []:
        if ref.get("kind") == SET_KIND and ref.get("controller"):
            _fleet(memo).wake(namespace or "", str(ref.get("name")), index=fleet_children)


# -- the one path ---------------------------------------------------------------------


def reconcile(runtime: Runtime, *, namespace: str, name: str) -> Decision | None:
    """Gather, decide, act. Returns the last decision (None if the resource is gone).

    Recording a finished run is followed at once by another pass: what was
    queued behind that run (a spec changed while it ran, scripts edited
    meanwhile) starts now rather than at the next resync tick, since no
    other event is due to wake us (status writes do not trigger handlers).
    """
    decision = None
    for _ in range(MAX_PASSES):
        decision = _reconcile_once(runtime, namespace=namespace, name=name)
        if decision is None or decision.action not in ("record", "drift"):
            break
    return decision


def _reconcile_once(runtime: Runtime, *, namespace: str, name: str) -> Decision | None:
    kube = runtime.kube
    migration = kube.get_migration(namespace=namespace, name=name)
    if migration is None:
        return None
    spec = _spec(migration)
    runs = _runs(kube, migration)
    decision = decide(
        migration=migration,
        spec=spec,
        runs=runs,
        references=_references(kube, spec, namespace=namespace),
        defaults=runtime.settings.job_defaults,
        now=datetime.now(UTC),
        deployment=_deployment(kube, spec, namespace=namespace),
        policy=runtime.settings.policy,
        progress=_progress(
            kube, namespace=namespace, runs=runs, every=runtime.settings.progress_poll_seconds
        ),
    )
    _act(kube, migration=migration, decision=decision)
    status = {**(migration.get("status") or {}), **(decision.status or {})}
    checked = isinstance(spec, MigrationSpec) and spec.drift is not None
    drift_observed(
        namespace=namespace, migration=name, drift=status.get("drift") if checked else None
    )
    return decision


def _spec(migration: Migration) -> MigrationSpec | InvalidSpec:
    """The spec, parsed once per pass; its problems are data for decide()."""
    try:
        return parse_spec(migration.get("spec") or {})
    except InvalidSpec as invalid:
        return invalid


def _runs(kube: KubeAPI, migration: Migration) -> list[Run]:
    meta = migration.get("metadata", {})
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    status = migration.get("status") or {}
    recorded = {h.get("job") for h in status.get("history") or []}
    recorded.add((status.get("lastRun") or {}).get("job"))
    runs: list[Run] = []
    for job in _owned_jobs(kube, namespace=namespace, name=name, uid=meta.get("uid", "")):
        job_name = job.get("metadata", {}).get("name", "")
        # Pods matter only for runs not yet recorded; old ones are summarised already.
        needs_pods = job_name not in recorded or not job_finished(job)
        pods = kube.list_pods(namespace=namespace, job=job) if needs_pods else []
        run = observe_run(job=job, pods=pods)
        job_seen(namespace=namespace, job=job_name, active=run.active)
        if needs_pods and run.finished and not run.succeeded and not run.is_drift_check:
            # A failed run's last words, kept in status.lastRun.logTail when it is recorded.
            log = _read_log(kube, namespace, run, lines=TAIL_LINES, limit=TAIL_LIMIT_BYTES)
            run = replace(run, log=log)
        runs.append(run)
    return runs


class _Throttle:
    """At most one read per key every ``every`` seconds (the operator's threads share it)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def allow(self, key: tuple[str, str], *, every: float) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -every) < every * 0.9:
                return False
            self._last = {k: t for k, t in self._last.items() if now - t < 3600}
            self._last[key] = now
            return True


_progress_reads = _Throttle()
_warned_log_forbidden = threading.Event()


def _progress(
    kube: KubeAPI, *, namespace: str, runs: Sequence[Run], every: float
) -> Progress | None:
    """How far the running migration Job is, from the last lines of its pod's log.

    None when nothing runs, its engine has not started, or it was read less
    than ``every`` seconds ago (the decision then shows ``status.progress``).
    """
    run = newest([r for r in runs if r.active and not r.is_drift_check])
    state = run.container if run is not None else None
    if run is None or state is None or not state.pod or state.waiting_reason:
        return None
    if not _progress_reads.allow((namespace, run.job), every=every):
        return None
    log = _read_log(kube, namespace, run, lines=PROGRESS_TAIL_LINES, limit=PROGRESS_LIMIT_BYTES)
    return latest_progress(log, job=run.job) if log else None


def _read_log(kube: KubeAPI, namespace: str, run: Run, *, lines: int, limit: int) -> str:
    """The last lines of the engine container's log ("" when they cannot be read).

    Progress and a failed run's log tail are extras: a log that cannot be read
    (the pod gone, its container not started, RBAC without ``pods/log``) never
    stops a reconcile.
    """
    pod = run.container.pod if run.container is not None else ""
    if not pod:
        return ""
    try:
        return kube.read_pod_log(
            namespace=namespace, pod=pod, container=CONTAINER, tail_lines=lines, limit_bytes=limit
        )
    except Forbidden as exc:
        if not _warned_log_forbidden.is_set():
            _warned_log_forbidden.set()
            log.warning(
                "cannot read Job pods' logs: no progress and no log tail of failed runs; "
                "grant get on pods/log",
                namespace=namespace,
                error=str(exc),
            )
    except KubeError as exc:
        log.debug("pod log not readable", namespace=namespace, pod=pod, error=str(exc))
    return ""


def _references(
    kube: KubeAPI, spec: MigrationSpec | InvalidSpec, *, namespace: str
) -> References | None:
    """The Secret and ConfigMap the spec names, as they are now (None for an invalid spec)."""
    if isinstance(spec, InvalidSpec):
        return None
    wanted = needed(spec)
    config_map: ConfigMapCheck | None = None
    if wanted.config_map:
        config_map = kube.check_config_map(namespace=namespace, name=wanted.config_map)
    return References(
        secret=kube.check_secret(namespace=namespace, name=wanted.secret), config_map=config_map
    )


def _deployment(
    kube: KubeAPI, spec: MigrationSpec | InvalidSpec, *, namespace: str
) -> DeploymentStatus | None:
    """The Deployment of ``spec.rollback.deploymentRef`` (None: no such ref, or no such object).

    Without RBAC to read it the window cannot be judged: say so in the log, and
    treat it as absent, so a window expires rather than rolling back blindly.
    """
    name = spec.rollback.deployment if isinstance(spec, MigrationSpec) else None
    if name is None:
        return None
    try:
        body = kube.get_deployment(namespace=namespace, name=name)
    except Forbidden as exc:
        log.warning(
            "cannot read the Deployment of spec.rollback.deploymentRef; grant get on "
            "deployments.apps",
            namespace=namespace,
            deployment=name,
            error=str(exc),
        )
        return None
    return deployment_status(body) if body is not None else None


def _act(kube: KubeAPI, *, migration: Migration, decision: Decision) -> None:
    meta = migration.get("metadata", {})
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    logger = log.bind(namespace=namespace, migration=name, action=decision.action)
    if decision.action in ("create", "check") and decision.job is not None:
        job_name = decision.job.get("metadata", {}).get("name", "")
        created = kube.create_job(decision.job)
        logger.info("job created" if created else "job already exists; adopted", job=job_name)
        job_seen(namespace=namespace, job=job_name, active=True)
        # The Event tells of the Job's creation, a fact once the create
        # succeeded: posted now, it survives a status write that conflicts
        # (the retry finds the Job running and has no creation to announce).
        if created and decision.event is not None:
            _post_event(migration, decision.event)
    if decision.status is not None:
        kube.patch_migration_status(
            namespace=namespace,
            name=name,
            status=decision.status,
            resource_version=meta.get("resourceVersion"),
        )
        if decision.verdict is not None:
            logger.info(
                "status updated",
                phase=str(decision.verdict.phase),
                reason=str(decision.verdict.reason),
                message=decision.verdict.message,
            )
    if decision.action == "record" and decision.run is not None and decision.verdict:
        revision = (decision.status or {}).get("currentRevision")
        run_recorded(
            namespace=namespace,
            migration=name,
            run=decision.run,
            reason=decision.verdict.reason,
            revision=revision,
        )
    if decision.action == "drift" and decision.run is not None:
        result = (decision.status or {}).get("drift", {}).get("result", "")
        drift_checked(reason=str(result))
        logger.info("drift check recorded", job=decision.run.job, result=result)
    if (
        decision.event is not None
        and decision.status is not None
        and decision.action not in ("create", "check")
    ):
        _post_event(migration, decision.event)


def _post_event(migration: Migration, event: Event) -> None:
    kopf.event(
        kopf.Body(cast(kopf.RawBody, migration)),
        type=event.type,
        reason=str(event.reason),
        message=event.message,
    )


@dataclass(frozen=True)
class Retry:
    """What a handler does after a failed reconcile (see "When a reconcile fails")."""

    message: str
    #: Seconds until the next attempt; None: give up (the resync timer still comes by).
    delay: float | None
    #: The failure is ours (or our request's): log it with its traceback.
    bug: bool = False


def after_failure(exc: Exception, *, retry: int, resync_seconds: float) -> Retry:
    """How to go on after ``exc``, on the ``retry``-th retry (0: the first attempt failed)."""
    if isinstance(exc, Conflict):
        return Retry("the resource changed meanwhile; re-reading", delay=1.0)
    if isinstance(exc, Forbidden):
        return Retry(
            f"the operator is not allowed this call; grant it in its RBAC: {exc}",
            delay=FORBIDDEN_RETRY_SECONDS,
        )
    if isinstance(exc, KubeError) and (exc.status in _TRANSIENT_STATUSES or exc.status >= 500):
        delay = min(API_RETRY_SECONDS * 2 ** min(retry, 8), API_RETRY_MAX_SECONDS)
        return Retry(f"Kubernetes API: {exc}", delay=delay)
    if isinstance(exc, KubeError):
        what = f"the Kubernetes API refused a request ({exc.status} {exc.reason}): {exc}"
    else:
        what = f"{type(exc).__name__}: {exc}"
    what = shorten(redact(what), limit=512)
    attempts = retry + 1
    if attempts >= MAX_BUG_ATTEMPTS:
        return Retry(
            f"gave up after {attempts} attempts: {what}. The resource is checked again every "
            f"{resync_seconds:g}s; if this persists, it is a bug in revisor-operator: "
            "report it with the operator's log",
            delay=None,
            bug=True,
        )
    delay = BUG_BACKOFF_SECONDS * 2**retry
    return Retry(f"attempt {attempts} of {MAX_BUG_ATTEMPTS} failed: {what}", delay=delay, bug=True)


def _reconcile_or_retry(runtime: Runtime, *, body: kopf.Body, retry: int) -> None:
    """Reconcile; on failure, tell kopf when to try again (:func:`after_failure`)."""
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    try:
        reconcile(runtime, namespace=namespace, name=name)
    except Exception as exc:
        then = after_failure(exc, retry=retry, resync_seconds=runtime.settings.resync_seconds)
        if then.bug:
            log.exception("reconcile failed", namespace=namespace, migration=name)
        if then.delay is not None:
            raise kopf.TemporaryError(then.message, delay=then.delay) from exc
        kopf.event(
            body, type="Warning", reason=OperatorReason.RECONCILE_ERROR, message=then.message
        )
        raise kopf.PermanentError(then.message) from exc


def _reconcile_quietly(runtime: Runtime, *, namespace: str, name: str) -> None:
    """For event handlers, which kopf does not retry: the timer catches up on failure."""
    try:
        reconcile(runtime, namespace=namespace, name=name)
    except Conflict:
        log.debug(
            "status changed meanwhile; the next event or tick retries",
            namespace=namespace,
            migration=name,
        )
    except KubeError as exc:
        log.warning("reconcile failed", namespace=namespace, migration=name, error=str(exc))


def _owned_jobs(kube: KubeAPI, *, namespace: str, name: str, uid: str) -> list[Job]:
    jobs = kube.list_jobs(namespace=namespace, migration=name)
    return [
        j
        for j in jobs
        if any(o.get("uid") == uid for o in j.get("metadata", {}).get("ownerReferences") or [])
    ]
