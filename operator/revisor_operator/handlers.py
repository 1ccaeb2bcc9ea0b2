"""kopf wiring: Kubernetes events in, ``decisions.reconcile.decide`` in the middle, API calls out.

Every handler ends in :func:`reconcile`, one pass that flows one way:
*gather* (the resource: the body kopf handed over, else read; its spec, parsed
once; its Jobs, from an index of kopf's watch of them; their pods; and, only
if a rule needs them, the Secret and ConfigMap the spec names, through
:mod:`.adapters.kube`), *decide* (the pure :func:`.decisions.reconcile.decide`),
*act* (create the Job, write status, post the Event). That single path is
why the handlers can overlap safely (a resync and a Job event at once): Job
creation is idempotent (deterministic name, 409 means "already there") and
status writes carry the ``resourceVersion`` they were computed from, so a
stale write fails instead of recording a run twice; a pass that was handed a
body that turns out stale reads the resource once more and goes again.

Triggers (registered by :func:`register`, with the intervals of the
:class:`~.settings.Settings` the process was started with). Every pass runs on
the operator's own :class:`~.adapters.workqueue.WorkQueue`, which coalesces a
burst of events of one resource into one pass and keeps per resource only when
its next pass is due and a fingerprint of what it last saw change (no
per-resource timer: kopf would keep each resource's body in memory for it; no
kopf change handler: kopf would write its record of each change into the
resource, one more write and one more event each time). kopf watches, holds
the finalizer and runs the deletion handler:

* a ``DatabaseMigration`` seen for the first time (created, or found when the
  operator starts: that is what adopts running Jobs after a restart), or whose
  generation (its spec), labels, annotations or deletion changed
  (:func:`change_of`); not before kopf has put the finalizer on it;
* a resync of each resource every ``REVISOR_RESYNC_SECONDS`` after its last
  pass: picks up Secrets and ConfigMaps created later and ConfigMap content
  changes, and repairs anything a missed event left behind;
* any change of a Job labelled ``app.kubernetes.io/managed-by: revisor``
  (the changes of one Job within ``JOB_EVENTS_SECONDS`` make one pass);
* any change of a ConfigMap labelled ``revisor.dev/scripts`` that some
  ``DatabaseMigration`` refers to (an index maps ConfigMaps to the resources
  using them); the API filters that watch, so unlabelled ConfigMaps never
  reach the operator's memory and are read on resync instead;
* deletion: the finalizer ``revisor.dev/finalizer`` is held while a Job
  runs, so deleting a resource never kills a migration halfway;
* while a rollback window is open (``status.rollout.state`` Watching), a
  pass every ``REVISOR_ROLLOUT_POLL_SECONDS`` (5 s) reads the Deployment
  named by ``spec.rollback.deploymentRef`` and judges its rollout;
* while a Job runs (phase Running or Planning) and its engine does (its pod
  is ready), a pass every ``REVISOR_PROGRESS_POLL_SECONDS`` (5 s) reads the
  last lines of the Job's pod log for its progress (:mod:`.decisions.progress`):
  a few KiB, at most once per interval per Job, whatever else wakes the pass.
  A Job whose pod waits (unscheduled, pulling, failing to start) has no log:
  its resync and its Job's events tell;
* a value of the annotation ``revisor.dev/drift-check`` that no drift check has
  answered yet (a drift check now).

Following a rollout by polling one Deployment, rather than watching all of
them, is deliberate: it costs nothing while no window is open, needs only
``get`` on Deployments (not a cluster-wide watch of every Deployment), and
a few seconds of latency are nothing against a progress deadline of minutes.

When a reconcile fails
----------------------
A failed pass is retried by the work queue when :func:`after_failure` (pure)
says, from what failed (kopf would retry any exception but
:class:`kopf.PermanentError` forever, with one backoff for all):

* the resource changed meanwhile (409 Conflict): re-read at once;
* the API is unreachable, overloaded or failing (no answer, 401, 404, 408,
  429, 5xx): retry with a growing delay, never giving up — it is not ours to fix;
* 403 Forbidden: retry every minute — a human grants the RBAC, then it resumes;
* anything else — the API rejecting what we sent (400, 422), or an exception
  from our own code — is a bug or a spec the API will never accept: a few
  retries with a growing backoff, then give up with a Warning Event
  (``ReconcileError``) that says so. Giving up ends only these retries; the
  resync tries again every ``REVISOR_RESYNC_SECONDS``.

No condition is written for an operator failure: conditions describe the
migration (only ``decide`` writes them), and nothing would clear one once the
failure is gone.

``on_delete``, kopf's, never gives up, whatever fails (``errors=TEMPORARY`` and
no retry limit: kopf's ``retries=`` counts :class:`kopf.TemporaryError` too): once
a deletion handler gives up, kopf removes the finalizer, and a migration halfway
would lose the resource that reports on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, cast

import kopf
import structlog

from . import API_VERSION, GROUP, KIND, PLURAL, SET_KIND, SET_PLURAL, VERSION
from .adapters.kopf_namespace_race import serve_namespaces_listed_at_watch_start
from .adapters.kube import Conflict, FleetAPI, Forbidden, Kube, KubeAPI, KubeError
from .adapters.metrics import (
    drift_checked,
    drift_observed,
    forget_migration,
    forget_set,
    job_seen,
    pass_started,
    run_recorded,
)
from .adapters.workqueue import Outcome, Trigger, WorkQueue
from .decisions.admission import SET_LABEL, set_of
from .decisions.bodies import Job, Migration
from .decisions.drift import DRIFT_CHECK_ANNOTATION
from .decisions.fleet.words import PURPOSE_LABEL, SCHEMAS_PURPOSE
from .decisions.jobs import (
    CONTAINER,
    MANAGED_BY,
    MANAGER,
    MIGRATION_LABEL,
    label_value,
    migration_of,
)
from .decisions.observe import (
    Run,
    engine_may_run,
    job_finished,
    newest,
    observe_run,
    slim_job,
)
from .decisions.progress import (
    PROGRESS_LIMIT_BYTES,
    PROGRESS_TAIL_LINES,
    TAIL_LIMIT_BYTES,
    TAIL_LINES,
    Progress,
    latest_progress,
)
from .decisions.reasons import OperatorReason, Phase, WindowState
from .decisions.reconcile import UNREAD, Decision, decide
from .decisions.redaction import redact, shorten
from .decisions.references import ConfigMapCheck, References, SecretCheck, needed
from .decisions.rollout import DeploymentStatus, deployment_status, parse_time
from .decisions.spec import ConfigMapSource, InvalidSpec, MigrationSpec, parse_spec
from .decisions.status import Event
from .fleet import Child, FleetWorker, reconcile_set, summarize_child
from .settings import Settings

log = structlog.get_logger("revisor_operator")

FINALIZER = f"{GROUP}/finalizer"
#: Where kopf kept its record of the last handled spec (older versions of the operator).
DIFFBASE_ANNOTATION = f"{GROUP}/last-handled-configuration"
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
#: Threads of kopf's executor: the deletion handler and the sets' handlers.
EXECUTOR_THREADS = 4
#: Threads of the work queue's passes: a burst of new resources runs side by side (the
#: passes wait on the API, not on the CPU; the client's pool holds as many connections).
PASS_THREADS = 24
#: The fleet's worker's threads (see .fleet.FleetWorker).
FLEET_THREADS = 2
#: Events of one Job within this many seconds make one pass of its resource (a new
#: Job's are three in a row: created, its pod made, its pod's state counted).
JOB_EVENTS_SECONDS = 0.5
#: The least time between two passes of one resource that events woke.
PASS_SPACING_SECONDS = 0.5
#: How long a Job this process created is taken as existing before its watch shows it.
CREATED_JOB_SECONDS = 60.0
#: How long a check of a Secret or ConfigMap serves the passes of every resource naming it.
REFERENCE_CHECK_SECONDS = 1.0
#: The work queue's polls (its triggers, beside resync, wake and retry).
ROLLOUT_POLL = "rollout"
PROGRESS_POLL = "progress"


class JobCache:
    """The Jobs of each DatabaseMigration: kopf's index of its watch of them, and ours.

    The index (:func:`migration_jobs`) holds what a pass reads of each Job
    (:func:`.decisions.observe.slim_job`), as the watch last delivered it, so a
    pass lists no Jobs. A Job this process has just created is added here until
    the watch shows it (at most ``CREATED_JOB_SECONDS``): a pass right after the
    create sees it, as a listing would.
    """

    def __init__(
        self,
        index: Mapping[tuple[str, str], Any],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._index = index
        self._clock = clock
        self._created: dict[tuple[str, str], dict[str, tuple[float, Job]]] = {}
        self._lock = threading.Lock()

    def jobs(self, namespace: str, migration: str) -> list[Job]:
        """The Jobs labelled and owned as ``migration``'s (ownership is checked by the caller)."""
        key = (namespace, migration)
        indexed = self._indexed(key)
        with self._lock:
            created = self._created.get(key)
            if not created:
                return indexed
            now = self._clock()
            seen = {j.get("metadata", {}).get("name") for j in indexed}
            for name, (at, _) in list(created.items()):
                if name in seen or now - at > CREATED_JOB_SECONDS:
                    del created[name]
            if not created:
                del self._created[key]
            return indexed + [job for _, job in created.values()]

    def created(self, job: Job) -> None:
        """``job`` was just created by this process."""
        meta = job.get("metadata", {})
        owner = migration_of(job)
        if owner is None:
            return
        key = (meta.get("namespace", ""), owner)
        with self._lock:
            self._created.setdefault(key, {})[meta.get("name", "")] = (self._clock(), job)

    def _indexed(self, key: tuple[str, str]) -> list[Job]:
        # kopf updates the index on its event loop while a pass reads it on another thread:
        # a copy that raced an update is taken again.
        for _ in range(5):
            try:
                return list(self._index.get(key, ()))
            except RuntimeError:
                time.sleep(0)
        return list(self._index.get(key, ()))


class ReferenceChecks:
    """Checks of Secrets and ConfigMaps, each shared for ``REFERENCE_CHECK_SECONDS``.

    A burst of resources that name one Secret and one ConfigMap reads each of them
    once, not once per resource. A check that old is as good as a pass that ran
    that much earlier; a resource that needs a newer one (a Secret fixed since)
    is resynced. A labelled ConfigMap's change, which is acted on at once, drops
    its check first (:meth:`forget_config_map`). One thread reads a check while
    others wanting it wait for it.
    """

    def __init__(
        self,
        kube: KubeAPI,
        *,
        seconds: float = REFERENCE_CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kube = kube
        self._seconds = seconds
        self._clock = clock
        self._checks: dict[tuple[str, str, str], tuple[float, Any]] = {}
        self._reading: dict[tuple[str, str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def check_secret(self, *, namespace: str, name: str) -> SecretCheck:
        return cast(
            SecretCheck,
            self._check(
                ("secret", namespace, name),
                lambda: self._kube.check_secret(namespace=namespace, name=name),
            ),
        )

    def check_config_map(self, *, namespace: str, name: str) -> ConfigMapCheck:
        return cast(
            ConfigMapCheck,
            self._check(
                ("configmap", namespace, name),
                lambda: self._kube.check_config_map(namespace=namespace, name=name),
            ),
        )

    def forget_config_map(self, *, namespace: str, name: str) -> None:
        with self._lock:
            self._checks.pop(("configmap", namespace, name), None)

    def _fresh(self, key: tuple[str, str, str]) -> tuple[bool, Any]:
        with self._lock:
            hit = self._checks.get(key)
        if hit is not None and self._clock() - hit[0] < self._seconds:
            return True, hit[1]
        return False, None

    def _check(self, key: tuple[str, str, str], read: Callable[[], Any]) -> Any:
        fresh, value = self._fresh(key)
        if fresh:
            return value
        with self._lock:
            gate = self._reading.setdefault(key, threading.Lock())
        with gate:
            fresh, value = self._fresh(key)
            if fresh:
                return value
            started = self._clock()
            value = read()
            with self._lock:
                if len(self._checks) > 256:
                    self._checks = {
                        k: v for k, v in self._checks.items() if started - v[0] < self._seconds
                    }
                self._checks[key] = (started, value)
            return value


@dataclass(frozen=True)
class Runtime:
    """What the handlers share: settings and the API client. Kept in kopf's ``memo``."""

    settings: Settings
    kube: KubeAPI
    #: The calls of DatabaseMigrationSets (default: ``kube``, when it is the real client).
    fleet: FleetAPI | None = None
    #: The Jobs of each resource, from kopf's watch (None: a pass lists them, as in tests).
    jobs: JobCache | None = field(default=None, compare=False)
    #: Checks of Secrets and ConfigMaps shared by passes (None: each pass reads, as in tests).
    checks: ReferenceChecks | None = field(default=None, compare=False)

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


class LeanDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's record of the last handled spec, only for the ``kinds`` it handles changes of.

    For every event of every object it watches, kopf builds the object's "essence" —
    its spec, labels and annotations — to compare with the one it last handled (kept
    in an annotation), and, for a kind with change handlers, writes it there after
    them. For the ``kinds`` it handles changes of (a DatabaseMigrationSet's), this is
    kopf's own storage, building the same essence without deep-copying the whole
    body, status and ``managedFields`` included, only to delete all but those. For
    every other kind, the essence is empty and never stored: a DatabaseMigration's
    changes are the work queue's (:func:`track`), and kopf, seeing none, writes
    nothing; a Job's or a ConfigMap's would never be compared with anything.
    """

    def __init__(self, *, kinds: Iterable[str], prefix: str, key: str) -> None:
        super().__init__(prefix=prefix, key=key)
        self.kinds = frozenset(kinds)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        if body.get("kind") not in self.kinds:
            return cast(kopf.BodyEssence, {})
        return super().fetch(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        if body.get("kind") in self.kinds:
            super().store(body=body, patch=patch, essence=essence)

    def build(
        self,
        *,
        body: kopf.Body,
        extra_fields: Iterable[Any] | None = None,
    ) -> kopf.BodyEssence:
        if body.get("kind") not in self.kinds:
            return cast(kopf.BodyEssence, {})
        fields = list(extra_fields or [])
        if any(not _kept_in_lean(field) for field in fields):
            return super().build(body=body, extra_fields=fields)
        meta = body.get("metadata") or {}
        lean = {key: value for key, value in body.items() if key not in ("metadata", "status")}
        lean["metadata"] = {
            key: meta[key] for key in ("labels", "annotations", "ownerReferences") if key in meta
        }
        return super().build(body=kopf.Body(cast(kopf.RawBody, lean)), extra_fields=fields)


def _kept_in_lean(field: Any) -> bool:
    path = tuple(field.split(".")) if isinstance(field, str) else tuple(field)
    if not path or path[0] == "status":
        return False
    return path[0] != "metadata" or (len(path) > 1 and path[1] in ("labels", "annotations"))


def on_loop(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``fn``, as kopf calls it on its event loop rather than on one of its executor's threads.

    For the handlers that only read the body they are given or wake a work queue: kopf
    hands each call of a synchronous handler to a thread, which costs its event loop
    more than the call itself, and there is a call for every event of every Job and
    resource. Without a work queue to wake (tests), ``fn`` may reconcile: a thread then.
    """

    async def called_on_loop(**kwargs: Any) -> Any:
        memo = kwargs.get("memo")
        queue = memo.get("passes") if memo is not None else None
        if not isinstance(queue, WorkQueue):
            return await asyncio.to_thread(fn, **kwargs)
        _lend_context(queue)
        return fn(**kwargs)

    called_on_loop.__name__ = called_on_loop.__qualname__ = fn.__name__
    return called_on_loop


def _lend_context(queue: WorkQueue) -> None:
    """The work queue's passes post Events with ``kopf.event``, which needs kopf's context:
    its settings and its event queue, which kopf sets where it handles events (here)."""
    if queue.wants_context():
        queue.use_context(contextvars.copy_context())


class _QuietTrack(logging.Filter):
    """kopf logs every call of a handler at INFO: :func:`track`'s, on every event, say nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Handler 'track' succeeded."


QUIET_TRACK = _QuietTrack()


def register(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    """Register every handler with ``registry``, with ``settings``' intervals.

    The settings are those the process was started with: registration waits
    for them instead of happening when this module is imported.
    """
    serve_namespaces_listed_at_watch_start()
    logging.getLogger("kopf.objects").addFilter(QUIET_TRACK)
    if registry is not kopf.get_default_registry():
        # kopf puts its own login handlers in its default registry only.
        kopf.on.login(registry=registry)(kopf.login_via_client)

    @kopf.on.startup(registry=registry)
    def configure(
        *,
        settings: kopf.OperatorSettings,
        memo: Any,
        migration_jobs: kopf.Index[tuple[str, str], Job] | None = None,
        **_: Any,
    ) -> None:
        """Our own storage prefix and finalizer; our own Events instead of kopf's chatter."""
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = LeanDiffBase(
            kinds=(SET_KIND,), prefix=GROUP, key="last-handled-configuration"
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
        settings.execution.max_workers = EXECUTOR_THREADS
        if "runtime" not in memo:
            try:
                kube = Kube.from_environment()
            except KubeError as exc:
                raise kopf.PermanentError(str(exc)) from exc
            memo["runtime"] = Runtime(settings=settings_, kube=kube)
        runtime = runtime_of(memo)
        memo["runtime"] = replace(
            runtime,
            jobs=JobCache(migration_jobs) if migration_jobs is not None else None,
            checks=ReferenceChecks(runtime.kube),
        )

    settings_ = settings
    kopf.index(
        "batch",
        "v1",
        "jobs",
        labels={MANAGED_BY: MANAGER, MIGRATION_LABEL: kopf.PRESENT},
        id="migration_jobs",
        registry=registry,
    )(on_loop(migration_jobs))
    kopf.on.startup(registry=registry)(start_passes)
    kopf.on.cleanup(registry=registry)(stop_passes)
    # Every event of every resource: a pass now if it changed; when its next ones are due.
    kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)(track)
    # An event handler, not an update handler: kopf leaves annotations with its storage's
    # prefix (revisor.dev/) out of the diffs update handlers see.
    kopf.on.event(
        GROUP,
        VERSION,
        PLURAL,
        annotations={DRIFT_CHECK_ANNOTATION: kopf.PRESENT},
        when=_drift_check_unanswered,
        id="on_drift_check_asked",
        registry=registry,
    )(on_loop(on_drift_check_asked))
    # Never a retry limit here: a deletion handler that gives up releases the finalizer.
    kopf.on.delete(
        GROUP,
        VERSION,
        PLURAL,
        errors=kopf.ErrorsMode.TEMPORARY,
        backoff=DELETE_POLL_SECONDS,
        registry=registry,
    )(on_delete)
    kopf.index(GROUP, VERSION, PLURAL, id="config_map_users", registry=registry)(
        on_loop(config_map_users)
    )
    kopf.on.event(
        "batch",
        "v1",
        "jobs",
        labels={MANAGED_BY: MANAGER, MIGRATION_LABEL: kopf.PRESENT},
        id="on_job_event",
        registry=registry,
    )(on_loop(on_job_event))
    kopf.on.event(
        "",
        "v1",
        "configmaps",
        labels={SCRIPTS_LABEL: kopf.PRESENT},
        id="on_config_map_event",
        registry=registry,
    )(on_loop(on_config_map_event))
    _register_fleet(registry, settings)


# -- the DatabaseMigration -----------------------------------------------------------


def schedule(
    settings: Settings, *, labels: Mapping[str, str], status: Mapping[str, Any]
) -> tuple[float, tuple[float, str] | None]:
    """A resource's resync interval, and its poll (interval, name) if one is due meanwhile.

    A set's child is resynced every ``fleet_child_resync_seconds`` (its Jobs and its
    set wake it); an open rollback window is followed every ``rollout_poll_seconds``;
    a running Job's progress is read every ``progress_poll_seconds``.
    """
    every = settings.fleet_child_resync_seconds if SET_LABEL in labels else settings.resync_seconds
    if (status.get("rollout") or {}).get("state") == WindowState.WATCHING:
        return every, (settings.rollout_poll_seconds, ROLLOUT_POLL)
    if status.get("phase") in (Phase.RUNNING, Phase.PLANNING):
        return every, (settings.progress_poll_seconds, PROGRESS_POLL)
    return every, None


def change_of(meta: Mapping[str, Any]) -> int:
    """What of a resource, changed, calls for a pass at once: a fingerprint of it.

    Its generation (the API server counts its spec's changes), labels and annotations
    (a retry or a release asked for; a set's admission), whether it is being deleted,
    and whether it has the finalizer (no Job is started before it has: deleting the
    resource must not then take a migration halfway with it). Not its status: the
    operator writes that itself. Not kopf's record of the last handled spec, which
    older versions of the operator left in the annotations.
    """
    annotations = meta.get("annotations") or {}
    return hash(
        (
            meta.get("generation"),
            FINALIZER in (meta.get("finalizers") or ()),
            bool(meta.get("deletionTimestamp")),
            tuple(sorted(kv for kv in annotations.items() if kv[0] != DIFFBASE_ANNOTATION)),
            tuple(sorted((meta.get("labels") or {}).items())),
        )
    )


class Changes:
    """Per resource, the fingerprint of what it last changed (:func:`change_of`), and the
    body a pass due for that change is to start from (kept only until the pass takes it)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], int] = {}
        self._bodies: dict[tuple[str, str], Migration] = {}
        self._lock = threading.Lock()

    def seen(self, key: tuple[str, str], body: Mapping[str, Any]) -> bool:
        """``body`` is the resource now; whether it changed since last seen (or is new)."""
        fingerprint = change_of(body.get("metadata") or {})
        with self._lock:
            changed = self._seen.get(key) != fingerprint
            self._seen[key] = fingerprint
            if key in self._bodies or changed:
                self._bodies[key] = cast(Migration, dict(body))
        return changed

    def take(self, key: tuple[str, str]) -> Migration | None:
        """The body a pass is to start from (None: read it)."""
        with self._lock:
            return self._bodies.pop(key, None)

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._seen.pop(key, None)
            self._bodies.pop(key, None)


async def track(
    *,
    type: str | None,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    meta: Mapping[str, Any],
    labels: Mapping[str, str],
    status: Mapping[str, Any],
    memo: Any,
    **_: Any,
) -> None:
    """Each event of a resource (on kopf's event loop: cheap): a pass now if it changed,
    and when its next passes are due."""
    queue, changes = memo.get("passes"), memo.get("changes")
    if not isinstance(queue, WorkQueue) or not isinstance(changes, Changes):
        return
    _lend_context(queue)
    key = (namespace or "", name)
    if type == "DELETED":
        queue.forget(*key)
        changes.forget(key)
        return
    every, poll = schedule(runtime_of(memo).settings, labels=labels, status=status)
    queue.track(*key, every=every, poll=poll)
    ready = FINALIZER in (meta.get("finalizers") or ()) or bool(meta.get("deletionTimestamp"))
    if changes.seen(key, body) and ready:
        # Before the resyncs and follow-ups that are due: a new resource waits for its Job.
        queue.wake(*key, urgent=True)


def start_passes(*, memo: Any, **_: Any) -> None:
    """Start the work queue that runs resyncs, polls and event-woken passes."""
    runtime = runtime_of(memo)

    changes = Changes()

    def run(namespace: str, name: str, trigger: Trigger) -> Outcome:
        body = changes.take((namespace, name))
        return _scheduled_pass(
            runtime_of(memo), namespace=namespace, name=name, trigger=trigger, body=body
        )

    def on_error(namespace: str, name: str, exc: Exception, failures: int) -> float | None:
        return _pass_failed(runtime, namespace=namespace, name=name, exc=exc, failures=failures)

    queue = WorkQueue(run, on_error, threads=PASS_THREADS, spacing=PASS_SPACING_SECONDS)
    queue.start()
    memo["passes"] = queue
    memo["changes"] = changes


def stop_passes(*, memo: Any, **_: Any) -> None:
    queue = memo.get("passes")
    if isinstance(queue, WorkQueue):
        queue.stop()


def _scheduled_pass(
    runtime: Runtime,
    *,
    namespace: str,
    name: str,
    trigger: Trigger,
    body: Migration | None = None,
) -> Outcome:
    """One pass of the work queue; a progress poll while no engine runs reads nothing.

    ``body``: the resource as the event of its change delivered it (else it is read).
    """
    if body is not None:
        trigger = "change"
    elif trigger == PROGRESS_POLL and runtime.jobs is not None:
        jobs = runtime.jobs.jobs(namespace, name)
        if not any(engine_may_run(j) for j in jobs):
            return "skipped"
    decision = reconcile(runtime, namespace=namespace, name=name, body=body, trigger=trigger)
    return "gone" if decision is None else "done"


def _pass_failed(
    runtime: Runtime, *, namespace: str, name: str, exc: Exception, failures: int
) -> float | None:
    """A pass of the work queue failed: :func:`after_failure` says when to go again."""
    then = after_failure(exc, retry=failures - 1, resync_seconds=runtime.settings.resync_seconds)
    if then.bug:
        log.error("reconcile failed", namespace=namespace, migration=name, exc_info=exc)
    elif isinstance(exc, Conflict):
        log.debug(then.message, namespace=namespace, migration=name)
    else:
        log.warning("reconcile failed", namespace=namespace, migration=name, error=then.message)
    if then.delay is None:
        involved: Mapping[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name, "namespace": namespace},
        }
        with contextlib.suppress(KubeError):
            involved = runtime.kube.get_migration(namespace=namespace, name=name) or involved
        kopf.event(
            kopf.Body(cast(kopf.RawBody, involved)),
            type="Warning",
            reason=OperatorReason.RECONCILE_ERROR,
            message=then.message,
        )
    return then.delay


def _wake(memo: Any, *, namespace: str, name: str, delay: float = 0.0) -> None:
    """A pass of the resource soon, on the work queue (here and now without one: tests)."""
    queue = memo.get("passes")
    if isinstance(queue, WorkQueue):
        queue.wake(namespace, name, delay=delay)
    else:
        _reconcile_quietly(runtime_of(memo), namespace=namespace, name=name)


def _drift_check_unanswered(
    *, annotations: Mapping[str, str], status: Mapping[str, Any], **_: Any
) -> bool:
    asked = annotations.get(DRIFT_CHECK_ANNOTATION)
    return bool(asked) and asked != (status.get("drift") or {}).get("request")


def on_drift_check_asked(*, type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    """``revisor.dev/drift-check`` has a value no check answered yet: one is due now.

    Until its check is recorded, each event of the resource comes here; the pass is
    idempotent (the check's Job has one name), and the work queue retries it.
    """
    if type == "DELETED":
        return
    meta = body.metadata
    _wake(memo, namespace=meta.namespace or "", name=meta.name or "")


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
        jobs = _owned_jobs(runtime, namespace=namespace, name=name, uid=uid)
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


def migration_jobs(
    *, namespace: str | None, body: kopf.Body, labels: Mapping[str, str], **_: Any
) -> dict[tuple[str, str], Job] | None:
    """(namespace, DatabaseMigration) -> its Jobs, as much of each as a pass reads.

    The Jobs a listing by the resource's label finds (:meth:`.Kube.list_jobs`),
    whose owner it is; each pass still checks the owner's uid.
    """
    job = cast(Job, body)
    owner = migration_of(job)
    if owner is None or labels.get(MIGRATION_LABEL) != label_value(owner):
        return None
    return {(namespace or "", owner): slim_job(job)}


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
        _wake(memo, namespace=namespace or "", name=owner, delay=JOB_EVENTS_SECONDS)


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
    checks = runtime_of(memo).checks
    if checks is not None:
        checks.forget_config_map(namespace=namespace or "", name=name)
    for migration in users:
        _wake(memo, namespace=namespace or "", name=migration)
    sets: list[str] = list(set_config_maps.get((namespace, name), [])) if set_config_maps else []
    for set_name in sets:
        _fleet(memo).wake(namespace or "", set_name)


# -- DatabaseMigrationSets -------------------------------------------------------------
#
# A set's passes run on the FleetWorker's threads (see .fleet): these handlers only wake
# it. Its children are ordinary DatabaseMigrations (the handlers above), except that
# they also wake their set, react to the set's admission (an annotation), and are
# resynced only every fleet_child_resync_seconds (see schedule()).


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
    kopf.index(
        GROUP,
        VERSION,
        PLURAL,
        labels={SET_LABEL: kopf.PRESENT},
        id="fleet_children",
        registry=registry,
    )(on_loop(fleet_children))
    kopf.index(GROUP, VERSION, SET_PLURAL, id="set_config_maps", registry=registry)(
        on_loop(set_config_maps)
    )
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
    kopf.on.event(
        GROUP,
        VERSION,
        PLURAL,
        labels={SET_LABEL: kopf.PRESENT},
        id="on_child_event",
        registry=registry,
    )(on_loop(on_child_event))
    kopf.on.event(
        "batch",
        "v1",
        "jobs",
        labels={MANAGED_BY: MANAGER, PURPOSE_LABEL: SCHEMAS_PURPOSE},
        id="on_query_job_event",
        registry=registry,
    )(on_loop(on_query_job_event))


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
        _wake(memo, namespace=namespace, name=child)

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

    worker = FleetWorker(
        run, on_error, threads=FLEET_THREADS, spacing=runtime.settings.fleet_pass_seconds
    )
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
        _wake(memo, namespace=namespace or "", name=body.metadata.name or "")
    if owner is not None:
        fleet = _fleet(memo)
        delay = runtime_of(memo).settings.fleet_pass_seconds
        fleet.wake(namespace or "", owner, delay=delay, index=fleet_children)


def on_query_job_event(
    *, namespace: str | None, body: kopf.Body, memo: Any, fleet_children: Any = None, **_: Any
) -> None:
    """A page of a set's schemas query moved on."""
    for ref in body.metadata.get("ownerReferences") or []:
        if ref.get("kind") == SET_KIND and ref.get("controller"):
            _fleet(memo).wake(namespace or "", str(ref.get("name")), index=fleet_children)


# -- the one path ---------------------------------------------------------------------


def reconcile(
    runtime: Runtime,
    *,
    namespace: str,
    name: str,
    body: Mapping[str, Any] | None = None,
    trigger: str = "event",
) -> Decision | None:
    """Gather, decide, act. Returns the last decision (None if the resource is gone).

    ``body`` is the resource as kopf handed it over (else it is read). A status
    write that it turns out to be too old for (409 Conflict) reads the resource
    and goes again, once.

    Recording a finished run is followed at once by another pass, on the body
    that status write returned: what was queued behind that run (a spec
    changed while it ran, scripts edited meanwhile) starts now rather than at
    the next resync, since no other event is due to wake us (status writes do
    not trigger handlers).
    """
    decision = None
    given = cast(Migration, dict(body)) if body is not None else None
    for _ in range(MAX_PASSES):
        pass_started(trigger=trigger)
        try:
            decision, written = _reconcile_once(
                runtime, namespace=namespace, name=name, migration=given
            )
        except Conflict:
            if given is None:
                raise
            log.debug("the resource changed meanwhile; reading it", namespace=namespace, name=name)
            decision, written = _reconcile_once(runtime, namespace=namespace, name=name)
        if decision is None or decision.action not in ("record", "drift"):
            break
        given = written
    return decision


def _reconcile_once(
    runtime: Runtime, *, namespace: str, name: str, migration: Migration | None = None
) -> tuple[Decision | None, Migration | None]:
    """One pass; the decision, and the resource as its status write returned it (if any)."""
    kube = runtime.kube
    if migration is None:
        migration = kube.get_migration(namespace=namespace, name=name)
        if migration is None:
            return None, None
    spec = _spec(migration)
    runs = _runs(runtime, migration)
    now = datetime.now(UTC)
    deployment = _deployment(kube, spec, namespace=namespace)
    progress = _progress(
        kube, namespace=namespace, runs=runs, every=runtime.settings.progress_poll_seconds
    )

    def decided(references: Any) -> Decision:
        return decide(
            migration=migration,
            spec=spec,
            runs=runs,
            references=references,
            defaults=runtime.settings.job_defaults,
            now=now,
            deployment=deployment,
            policy=runtime.settings.policy,
            progress=progress,
        )

    # The Secret and ConfigMap are read only if a rule needs them: not while a run goes on.
    decision = decided(UNREAD)
    if decision.action == "read":
        decision = decided(_references(runtime, spec, namespace=namespace))
    written = _act(runtime, migration=migration, decision=decision)
    status = {**(migration.get("status") or {}), **(decision.status or {})}
    checked = isinstance(spec, MigrationSpec) and spec.drift is not None
    drift_observed(
        namespace=namespace, migration=name, drift=status.get("drift") if checked else None
    )
    return decision, written


def _spec(migration: Migration) -> MigrationSpec | InvalidSpec:
    """The spec, parsed once per pass; its problems are data for decide()."""
    try:
        return parse_spec(migration.get("spec") or {})
    except InvalidSpec as invalid:
        return invalid


def _runs(runtime: Runtime, migration: Migration) -> list[Run]:
    kube = runtime.kube
    meta = migration.get("metadata", {})
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    status = migration.get("status") or {}
    recorded = {h.get("job") for h in status.get("history") or []}
    recorded.add((status.get("lastRun") or {}).get("job"))
    runs: list[Run] = []
    for job in _owned_jobs(runtime, namespace=namespace, name=name, uid=meta.get("uid", "")):
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
    if run is None or state is None or not state.pod or not state.started:
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
    runtime: Runtime, spec: MigrationSpec | InvalidSpec, *, namespace: str
) -> References | None:
    """The Secret and ConfigMap the spec names, as they are now (None for an invalid spec)."""
    if isinstance(spec, InvalidSpec):
        return None
    checks: KubeAPI | ReferenceChecks = runtime.checks or runtime.kube
    wanted = needed(spec)
    config_map: ConfigMapCheck | None = None
    if wanted.config_map:
        config_map = checks.check_config_map(namespace=namespace, name=wanted.config_map)
    return References(
        secret=checks.check_secret(namespace=namespace, name=wanted.secret), config_map=config_map
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


def _act(runtime: Runtime, *, migration: Migration, decision: Decision) -> Migration | None:
    """Perform ``decision``; the resource as the status write returned it (None: no write)."""
    kube = runtime.kube
    meta = migration.get("metadata", {})
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    logger = log.bind(namespace=namespace, migration=name, action=decision.action)
    written: Migration | None = None
    if decision.action in ("create", "check") and decision.job is not None:
        job_name = decision.job.get("metadata", {}).get("name", "")
        created = kube.create_job(decision.job)
        if runtime.jobs is not None:
            runtime.jobs.created(decision.job)
        logger.info("job created" if created else "job already exists; adopted", job=job_name)
        job_seen(namespace=namespace, job=job_name, active=True)
        # The Event tells of the Job's creation, a fact once the create
        # succeeded: posted now, it survives a status write that conflicts
        # (the retry finds the Job running and has no creation to announce).
        if created and decision.event is not None:
            _post_event(migration, decision.event)
    if decision.status is not None:
        written = kube.patch_migration_status(
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
    return written


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
    #: Seconds until the next attempt; None: give up (the resync still comes by).
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


def _reconcile_quietly(runtime: Runtime, *, namespace: str, name: str) -> None:
    """A pass outside the work queue (there is none: tests); the resync catches up."""
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


def _owned_jobs(runtime: Runtime, *, namespace: str, name: str, uid: str) -> list[Job]:
    if runtime.jobs is not None:
        jobs = runtime.jobs.jobs(namespace, name)
    else:
        jobs = runtime.kube.list_jobs(namespace=namespace, migration=name)
    return [
        j
        for j in jobs
        if any(o.get("uid") == uid for o in j.get("metadata", {}).get("ownerReferences") or [])
    ]
