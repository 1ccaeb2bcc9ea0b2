"""The operator's one decision: given what exists, what happens next.

:func:`decide` is a pure function of the resource, its Jobs (as observed
:class:`.observe.Run` values), the referenced Secret and ConfigMap (whether
they exist, never their values) and the time. It returns one
:class:`Decision` — create a Job, wait for one, record a finished one, report
a problem, or do nothing — with the status to write and the Event to post.
:mod:`.handlers` performs it; nothing here talks to Kubernetes, so the whole
table is unit-tested.

The rules, in order:

1. A Job still running is waited for; at most one runs per resource. A spec
   changed meanwhile is applied after it (its generation is queued).
2. The newest finished Job not yet in ``status.lastRun``/``history`` is
   recorded: status, conditions and an Event.
3. A resource being deleted gets no new Job.
4. A spec that does not validate, a missing ConfigMap or Secret (or Secret
   key): a condition that says what to fix, and no Job.
5. The desired run's name (:func:`.naming.job_name`) already ran: if it
   opened a rollback window (``status.rollout`` Watching) the Deployment's
   rollout is judged (:func:`.rollout.judge`) and a failure creates the
   rollback Job; otherwise nothing to do (if a missing-reference condition
   was shown meanwhile, the last run's verdict is restored).
6. Otherwise: create the Job.

Rollback windows: recording a successful upgrade of a spec with
``rollback.deploymentRef`` opens one (:func:`.rollout.open_window`);
recording any later run that changes the database replaces it. A rollback
Job is an ordinary run (deterministic name, recorded once) whose verdict is
``DeployFailedRolledBack`` or ``RollbackFailed``; the window then says
RolledBack or Failed, is never Watching again, and so nothing retries until
the spec changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from .bodies import Job, JsonDict, Migration
from .conditions import READY, find
from .jobs import (
    DEPLOYMENT_ANNOTATION,
    PURPOSE_ANNOTATION,
    ROLLBACK_REASON_ANNOTATION,
    JobDefaults,
    Owner,
    build_job,
)
from .naming import fingerprint_run, job_name
from .observe import Run, newest
from .rollout import DeploymentStatus, Judgement, Window, judge, open_window, parse_time
from .spec import (
    Approval,
    ConfigMapSource,
    ImageSource,
    InvalidSpec,
    MigrationSpec,
    PartsDatabase,
    Rollback,
    UrlDatabase,
    parse_spec,
)
from .status import (
    Phase,
    Verdict,
    finished_verdict,
    is_noop,
    problem_verdict,
    running_verdict,
    status_patch,
)

Action = Literal["create", "wait", "record", "report", "follow", "nothing"]

#: Annotation whose value takes part in the run's fingerprint: changing it
#: re-runs the same spec (e.g. after fixing the database by hand).
RETRY_ANNOTATION = "revisor.dev/retry"
_MISSING_REFERENCE = frozenset({"SecretNotFound", "ConfigMapNotFound"})


@dataclass(frozen=True)
class SecretCheck:
    """Whether a Secret exists and which keys it has (names only, never values)."""

    name: str
    exists: bool
    keys: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ConfigMapCheck:
    """Whether a ConfigMap exists and the fingerprint of its content."""

    name: str
    exists: bool
    fingerprint: str = ""


@dataclass(frozen=True)
class References:
    secret: SecretCheck
    config_map: ConfigMapCheck | None = None


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    """What to do now; ``status`` is None when there is nothing to write."""

    action: Action
    verdict: Verdict | None = None
    status: JsonDict | None = None
    job: Job | None = None
    run: Run | None = None
    event: Event | None = None


def decide(
    *,
    migration: Migration,
    runs: Sequence[Run],
    references: References | None,
    defaults: JobDefaults,
    now: str,
    deployment: DeploymentStatus | None = None,
) -> Decision:
    """The next step for ``migration`` (see the module docstring for the rules).

    ``deployment`` is the Deployment named by ``spec.rollback.deploymentRef``
    as it is now (None when there is none, or it does not exist).
    """
    meta = migration.get("metadata", {})
    status: Mapping[str, Any] = migration.get("status") or {}
    generation = int(meta.get("generation", 1))
    spec, invalid = _parse(migration)

    active = [r for r in runs if r.active]
    if active:
        run = newest(active)
        assert run is not None
        queued = generation if run.generation != generation else None
        verdict = running_verdict(run, queued_generation=queued)
        return _with_status("wait", verdict, status, run.generation, now, run=None, job_run=run)

    recorded = _recorded_jobs(status)
    latest = newest(runs)
    if latest is not None and latest.job not in recorded:
        lock = spec.lock_timeout_seconds if spec else None
        verdict = finished_verdict(latest, lock_timeout_seconds=lock)
        decision = _with_status("record", verdict, status, latest.generation, now, run=latest)
        changes, window = _window_after(
            run=latest,
            verdict=verdict,
            spec=spec,
            status=status,
            deployment=deployment,
            now=now,
        )
        if decision.status is not None and changes:
            decision = replace(decision, status={**decision.status, "rollout": window})
        kind: Literal["Normal", "Warning"] = "Warning" if verdict.failed else "Normal"
        return replace(decision, event=Event(kind, verdict.reason, verdict.message))

    if meta.get("deletionTimestamp"):
        return Decision(action="nothing")
    if invalid is not None or spec is None:
        assert invalid is not None
        verdict = problem_verdict(reason=invalid.reason, message=str(invalid))
        return _report(verdict, status, generation, now)

    problem = _missing_reference(spec, references, namespace=meta.get("namespace", ""))
    if problem is not None:
        return _report(problem, status, generation, now)

    assert references is not None
    return _next_run(
        migration=migration,
        spec=spec,
        runs=runs,
        references=references,
        recorded=recorded,
        defaults=defaults,
        now=now,
        deployment=deployment,
    )


def desired_run(
    migration: Migration, spec: MigrationSpec, references: References
) -> tuple[str, str]:
    """The name and fingerprint of the Job that brings ``migration`` to its desired state.

    The same name for the same spec, scripts and retry annotation: a run is
    identified by it (``status.lastRun.job``), which is also how
    ``revisor-operator wait`` knows that the run it waits for is the current one.
    """
    meta = migration.get("metadata", {})
    retry = (meta.get("annotations") or {}).get(RETRY_ANNOTATION, "")
    fingerprint = fingerprint_run(
        spec=migration.get("spec") or {},
        scripts=f"{_scripts_fingerprint(spec, references)}\0{retry}",
    )
    name = job_name(
        migration=meta.get("name", ""),
        generation=int(meta.get("generation", 1)),
        fingerprint=fingerprint,
    )
    return name, fingerprint


def _next_run(
    *,
    migration: Migration,
    spec: MigrationSpec,
    runs: Sequence[Run],
    references: References,
    recorded: set[str],
    defaults: JobDefaults,
    now: str,
    deployment: DeploymentStatus | None,
) -> Decision:
    """Rules 5 and 6: the desired run already happened, or its Job is created now."""
    meta = migration.get("metadata", {})
    status: Mapping[str, Any] = migration.get("status") or {}
    owner = Owner(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation", 1)),
    )
    name, fingerprint = desired_run(migration, spec, references)
    if name in recorded or any(r.job == name for r in runs):
        window = Window.from_status(status.get("rollout"))
        if (
            window is not None
            and window.state == "Watching"
            and window.job == name
            and window.deployment == spec.rollback.deployment
        ):
            return _follow(
                window=window,
                deployment=deployment,
                owner=owner,
                spec=spec,
                status=status,
                defaults=defaults,
                now=now,
            )
        return _restore_last_verdict(status, now)
    job = build_job(owner=owner, spec=spec, name=name, fingerprint=fingerprint, defaults=defaults)
    verb = "plan" if spec.plans_only else "migrate"
    verdict = Verdict(
        phase="Planning" if spec.plans_only else "Running",
        reason="Running",
        message=f"Created Job {name} to {verb} to {spec.target}",
        progressing=True,
    )
    decision = _with_status("create", verdict, status, owner.generation, now, run=None)
    return replace(decision, job=job, event=Event("Normal", "Running", verdict.message))


# -- rollback windows ------------------------------------------------------------------


def _window_after(
    *,
    run: Run,
    verdict: Verdict,
    spec: MigrationSpec | None,
    status: Mapping[str, Any],
    deployment: DeploymentStatus | None,
    now: str,
) -> tuple[bool, JsonDict | None]:
    """Whether recording ``run`` changes ``status.rollout``, and to what (None deletes it).

    A successful upgrade opens a window; a rollback closes its window as
    RolledBack or Failed; any other run that changes the database ends the
    window it superseded; plans and dry runs leave it alone.
    """
    current = Window.from_status(status.get("rollout"))
    if run.is_rollback:
        if current is None:
            return False, None
        state: Literal["RolledBack", "Failed"] = (
            "RolledBack" if verdict.phase == "RolledBack" else "Failed"
        )
        return True, replace(current, state=state, message=verdict.message).to_status()
    result = run.result
    if run.command == "plan" or result is None or result.dry_run or run.mode == "DryRun":
        return False, None
    target = spec.rollback.deployment if spec is not None else None
    upgraded = (
        verdict.phase == "Succeeded" and result.direction == "upgrade" and bool(result.applied)
    )
    if target is None or spec is None or not upgraded:
        return current is not None, None
    return True, open_window(
        deployment_name=target,
        deployment=deployment,
        job=run.job,
        generation=run.generation,
        previous=",".join(result.from_revisions) or "base",
        window_seconds=spec.rollback.window_seconds,
        now=_moment(now),
        migration_started=parse_time(run.created_at),
    ).to_status()


def _follow(
    *,
    window: Window,
    deployment: DeploymentStatus | None,
    owner: Owner,
    spec: MigrationSpec,
    status: Mapping[str, Any],
    defaults: JobDefaults,
    now: str,
) -> Decision:
    """Judge the rollout in an open window: keep watching, close it, or roll back."""
    judgement = judge(window, deployment, _moment(now))
    if judgement.verdict == "Watching":
        followed = replace(window, message=judgement.message).to_status()
        if followed == status.get("rollout"):
            return Decision(action="nothing")
        return Decision(action="follow", status={"rollout": followed})
    if judgement.verdict in ("Succeeded", "Expired"):
        closed = replace(window, state=judgement.verdict, message=judgement.message)
        reason = "RolloutSucceeded" if judgement.verdict == "Succeeded" else "RolloutNotFound"
        return Decision(
            action="follow",
            status={"rollout": closed.to_status()},
            event=Event("Normal", reason, judgement.message),
        )
    return _roll_back(
        window=window,
        judgement=judgement,
        owner=owner,
        spec=spec,
        status=status,
        defaults=defaults,
        now=now,
    )


def _roll_back(
    *,
    window: Window,
    judgement: Judgement,
    owner: Owner,
    spec: MigrationSpec,
    status: Mapping[str, Any],
    defaults: JobDefaults,
    now: str,
) -> Decision:
    """The rollout failed: a Job that moves the database back to ``window.previous``."""
    failed = replace(window, state="Failed", message=judgement.message)
    if "," in window.previous:
        verdict = problem_verdict(
            reason="RollbackFailed",
            message=f"{judgement.message}. The database was at several heads "
            f"({window.previous}) before the upgrade; one target cannot express that, "
            "so nothing was rolled back: a human needs to look",
        )
        decision = _with_status("report", verdict, status, owner.generation, now, run=None)
        patch = {**(decision.status or {}), "rollout": failed.to_status()}
        return replace(
            decision,
            status=patch,
            event=Event("Warning", verdict.reason, verdict.message),
        )
    # The same spec, pointed back, as a plain Apply: no approval, no plan hash, no
    # window of its own; Stop on failure, since undoing a failed undo guesses.
    back = replace(
        spec,
        target=window.previous,
        mode="Apply",
        approval=Approval(),
        on_failure="stop",
        rollback=Rollback(),
    )
    digest = hashlib.sha256(f"rollback\0{window.job}\0{window.previous}".encode()).hexdigest()
    name = job_name(migration=owner.name, generation=owner.generation, fingerprint=digest)
    job = build_job(
        owner=owner,
        spec=back,
        name=name,
        fingerprint=digest,
        defaults=defaults,
        annotations={
            PURPOSE_ANNOTATION: "rollback",
            DEPLOYMENT_ANNOTATION: window.deployment,
            ROLLBACK_REASON_ANNOTATION: judgement.message,
        },
    )
    message = f"{judgement.message}; moving the database back to {window.previous} (Job {name})"
    verdict = Verdict(phase="Running", reason="DeployFailed", message=message, progressing=True)
    decision = _with_status("create", verdict, status, owner.generation, now, run=None)
    patch = {**(decision.status or {}), "rollout": failed.to_status()}
    return replace(decision, status=patch, job=job, event=Event("Warning", "DeployFailed", message))


def _moment(now: str) -> datetime:
    return parse_time(now) or datetime.now(UTC)


def references_needed(spec: MigrationSpec) -> tuple[str, str | None]:
    """The Secret and (if any) ConfigMap a spec refers to, for :mod:`.kube` to check."""
    secret = spec.database.url.secret if isinstance(spec.database, UrlDatabase) else ""
    if isinstance(spec.database, PartsDatabase):
        secret = spec.database.secret
    config_map = spec.source.name if isinstance(spec.source, ConfigMapSource) else None
    return secret, config_map


def _parse(migration: Migration) -> tuple[MigrationSpec | None, InvalidSpec | None]:
    try:
        return parse_spec(migration.get("spec") or {}), None
    except InvalidSpec as exc:
        return None, exc


def _recorded_jobs(status: Mapping[str, Any]) -> set[str]:
    jobs = {h.get("job") for h in status.get("history") or [] if isinstance(h, Mapping)}
    last = status.get("lastRun") or {}
    jobs.add(last.get("job"))
    return {j for j in jobs if j}


def _missing_reference(
    spec: MigrationSpec, references: References | None, *, namespace: str
) -> Verdict | None:
    if references is None:
        return problem_verdict(
            reason="SecretNotFound",
            phase="Pending",
            message="The database Secret has not been checked yet",
        )
    source = spec.source
    config_map = references.config_map
    if isinstance(source, ConfigMapSource) and (config_map is None or not config_map.exists):
        return problem_verdict(
            reason="ConfigMapNotFound",
            phase="Pending",
            message=f"ConfigMap {namespace}/{source.name} not found: create it from the "
            f"revision files (kubectl -n {namespace} create configmap {source.name} "
            "--from-file=versions/) or fix spec.source.configMap.name",
        )
    secret = references.secret
    database = spec.database
    if not secret.exists:
        how = (
            f"with key {database.url.key!r} holding the database URL"
            if isinstance(database, UrlDatabase)
            else "with the connection parts " + ", ".join(repr(k) for k in database.keys.values())
        )
        return problem_verdict(
            reason="SecretNotFound",
            phase="Pending",
            message=f"Secret {namespace}/{secret.name} not found: create it {how}, "
            "or fix spec.database",
        )
    needed = (
        {database.url.key}
        if isinstance(database, UrlDatabase)
        else {k for p, k in database.keys.items() if p not in database.optional_parts}
    )
    missing = sorted(needed - secret.keys)
    if missing:
        return problem_verdict(
            reason="SecretNotFound",
            phase="Pending",
            message=f"Secret {namespace}/{secret.name} has no key "
            + ", ".join(repr(k) for k in missing)
            + ": add it to the Secret or point spec.database at the key that holds it",
        )
    return None


def _scripts_fingerprint(spec: MigrationSpec, references: References) -> str:
    source = spec.source
    if isinstance(source, ImageSource):
        return f"image\0{source.image}\0{source.path}"
    assert references.config_map is not None
    return f"configmap\0{references.config_map.fingerprint}"


def _restore_last_verdict(status: Mapping[str, Any], now: str) -> Decision:
    ready = find(status.get("conditions") or [], READY)
    last = status.get("lastRun") or {}
    if not ready or ready.get("reason") not in _MISSING_REFERENCE or not last.get("phase"):
        return Decision(action="nothing")
    phase: Phase = last["phase"]
    verdict = Verdict(
        phase=phase,
        reason=str(last.get("reason", "Migrated")),
        message=str(last.get("message", "")),
        ready=phase == "Succeeded",
        failed=phase in ("Failed", "RolledBack"),
    )
    generation = int(status.get("observedGeneration", last.get("generation", 1)))
    return _report(verdict, status, generation, now)


def _report(verdict: Verdict, status: Mapping[str, Any], generation: int, now: str) -> Decision:
    decision = _with_status("report", verdict, status, generation, now, run=None)
    if decision.status is None:
        return decision
    kind: Literal["Normal", "Warning"] = "Warning" if verdict.failed else "Normal"
    return replace(decision, event=Event(kind, verdict.reason, verdict.message))


def _with_status(
    action: Action,
    verdict: Verdict,
    status: Mapping[str, Any],
    generation: int,
    now: str,
    *,
    run: Run | None,
    job_run: Run | None = None,
) -> Decision:
    patch = status_patch(current=status, verdict=verdict, generation=generation, now=now, run=run)
    changed = not is_noop(current=status, patch=patch)
    return Decision(
        action=action,
        verdict=verdict,
        status=patch if changed else None,
        run=run or job_run,
    )
