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
  named by ``spec.rollback.deploymentRef`` and judges its rollout.

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

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import kopf
import structlog

from . import GROUP, PLURAL, VERSION
from .adapters.kopf_namespace_race import serve_namespaces_listed_at_watch_start
from .adapters.kube import Conflict, Forbidden, Kube, KubeAPI, KubeError
from .adapters.metrics import forget_migration, job_seen, run_recorded
from .decisions.bodies import Job, Migration
from .decisions.jobs import MANAGED_BY, MANAGER, MIGRATION_LABEL, migration_of
from .decisions.observe import Run, job_finished, observe_run
from .decisions.reasons import OperatorReason, WindowState
from .decisions.reconcile import Decision, decide
from .decisions.redaction import redact, shorten
from .decisions.references import ConfigMapCheck, References, needed
from .decisions.rollout import DeploymentStatus, deployment_status, parse_time
from .decisions.spec import ConfigMapSource, InvalidSpec, MigrationSpec, parse_spec
from .decisions.status import Event
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
    kopf.on.event(
        "", "v1", "configmaps", labels={SCRIPTS_LABEL: kopf.PRESENT}, registry=registry
    )(on_config_map_event)


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
    *, namespace: str | None, name: str, spec: Mapping[str, Any], **_: Any
) -> dict[tuple[str | None, str], str] | None:
    """ConfigMap (namespace, name) -> the DatabaseMigrations whose scripts it holds."""
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
    if owner is not None:
        _reconcile_quietly(runtime_of(memo), namespace=namespace or "", name=owner)


def on_config_map_event(
    *,
    namespace: str | None,
    name: str,
    memo: Any,
    config_map_users: kopf.Index[tuple[str | None, str], str] | None = None,
    **_: Any,
) -> None:
    users: list[str] = list(config_map_users.get((namespace, name), [])) if config_map_users else []
    for migration in users:
        _reconcile_quietly(runtime_of(memo), namespace=namespace or "", name=migration)


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
        if decision is None or decision.action != "record":
            break
    return decision


def _reconcile_once(runtime: Runtime, *, namespace: str, name: str) -> Decision | None:
    kube = runtime.kube
    migration = kube.get_migration(namespace=namespace, name=name)
    if migration is None:
        return None
    spec = _spec(migration)
    decision = decide(
        migration=migration,
        spec=spec,
        runs=_runs(kube, migration),
        references=_references(kube, spec, namespace=namespace),
        defaults=runtime.settings.job_defaults,
        now=datetime.now(UTC),
        deployment=_deployment(kube, spec, namespace=namespace),
        policy=runtime.settings.policy,
    )
    _act(kube, migration=migration, decision=decision)
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
        runs.append(run)
    return runs


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
    if decision.action == "create" and decision.job is not None:
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
    if decision.event is not None and decision.status is not None and decision.action != "create":
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
