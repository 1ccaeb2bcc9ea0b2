"""The operator's one decision: given what exists, what happens next.

:func:`decide` is a pure function of the resource, its spec (parsed once,
by the caller), its Jobs (as observed :class:`.observe.Run` values), the
referenced Secret and ConfigMap (whether they exist, never their values),
the Deployment a rollback window follows, and the time. It returns one
:class:`Decision` — create a Job, wait for one, record a finished one,
report a problem, or do nothing — with the status to write and the Event to
post. :mod:`revisor_operator.handlers` gathers the inputs and performs it;
nothing here talks to Kubernetes, so the whole table is unit-tested.

The rules, in order:

1. A Job still running is waited for; at most one runs per resource. A spec
   changed meanwhile is applied after it (its generation is queued). How far
   it is (:class:`.progress.Progress`, read from its pod's log by the
   caller) goes into ``status.progress`` and the message.
2. The newest finished Job not yet in ``status.lastRun``/``history`` is
   recorded: status, conditions and an Event (and the rollback window it
   opens or closes: :mod:`.rollback`).
3. A drift check (:mod:`.drift`) still running is waited for; a finished one
   not yet in ``status.drift`` is recorded there and in the ``Drifted``
   condition, with an Event when the answer changed.
4. A resource being deleted gets no new Job.
5. A spec that does not validate, a missing ConfigMap or Secret (or Secret
   key): a condition that says what to fix, and no Job.
6. The desired run's name (:func:`desired_run`) already ran: if it opened a
   rollback window that is still Watching, the Deployment's rollout is
   judged (:func:`.rollback.follow`) and a failure creates the rollback Job;
   otherwise, if a drift check is due, its Job is created; otherwise nothing
   to do (if a missing-reference condition was shown meanwhile, the last
   run's verdict is restored).
7. Otherwise the Job is created — unless ``spec.drift.policy`` is Block and
   no check has cleared this run yet: then the check runs first, and a
   schema that has drifted refuses the run (reason ``Drifted``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from revisor.contract import Reason

from .admission import SET_LABEL, admitted
from .bodies import Job, JsonDict, Migration
from .conditions import READY, find
from .drift import (
    DRIFT_CHECK_ANNOTATION,
    blocked_verdict,
    build_check_job,
    check_job_name,
    checking_verdict,
    due,
    finding,
    finding_patch,
    gate,
    to_record,
)
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
from .policy import Policy, violations
from .progress import Progress
from .reasons import OperatorReason, Phase, WindowState
from .references import References, missing, scripts_fingerprint
from .rollback import follow, window_after
from .rollout import DeploymentStatus, Window, format_time
from .spec import InvalidSpec, MigrationSpec
from .status import (
    Event,
    Verdict,
    finished_verdict,
    is_noop,
    problem_verdict,
    running_verdict,
    status_patch,
)

#: ``check``: create a drift check's Job; ``drift``: record a finished one; ``read``: the
#: Secret and ConfigMap are needed (``references`` was :data:`UNREAD`), decide again with them.
Action = Literal[
    "create", "wait", "record", "report", "follow", "check", "drift", "nothing", "read"
]


class Unread:
    """The type of :data:`UNREAD`."""

    def __repr__(self) -> str:
        return "UNREAD"


#: ``references`` not read yet: :func:`decide` answers ``read`` if, and only if, a rule
#: needs them. A pass that waits for a run (or records one) reads no Secret or ConfigMap.
UNREAD = Unread()

#: Annotation whose value takes part in the run's fingerprint: changing it
#: re-runs the same spec (e.g. after fixing the database by hand).
RETRY_ANNOTATION = "revisor.dev/retry"
#: The Helm release revision the hook chart applied the spec for: a new
#: release is a new desired state, whether or not the spec changed.
RELEASE_ANNOTATION = "revisor.dev/release"
_MISSING_REFERENCE = frozenset(
    {OperatorReason.SECRET_NOT_FOUND, OperatorReason.CONFIG_MAP_NOT_FOUND}
)


@dataclass(frozen=True)
class Decision:
    """What to do now; ``status`` is None when there is nothing to write."""

    action: Action
    verdict: Verdict | None = None
    status: JsonDict | None = None
    job: Job | None = None
    run: Run | None = None
    event: Event | None = None


def decide(  # noqa: PLR0911 - one return per rule of the module docstring
    *,
    migration: Migration,
    spec: MigrationSpec | InvalidSpec,
    runs: Sequence[Run],
    references: References | Unread | None,
    defaults: JobDefaults,
    now: datetime,
    deployment: DeploymentStatus | None = None,
    policy: Policy | None = None,
    progress: Progress | None = None,
) -> Decision:
    """The next step for ``migration`` (see the module docstring for the rules).

    ``policy`` is what the operator allows a spec to choose for its Job's pod
    (:mod:`.policy`; default: only what the operator would choose itself).
    ``progress`` is what the running Job's log said last, if it was read this
    pass (else ``status.progress`` is shown again, its time brought up to ``now``).

    ``references`` is None when the spec is invalid (nothing was read), and
    :data:`UNREAD` when the caller reads them only if needed (the ``read`` action);
    ``deployment`` is the Deployment named by ``spec.rollback.deploymentRef``
    as it is now (None when there is none, or it does not exist).
    """
    meta = migration.get("metadata", {})
    status: Mapping[str, Any] = migration.get("status") or {}
    generation = int(meta.get("generation", 1))
    valid = spec if isinstance(spec, MigrationSpec) else None
    stamp = format_time(now)

    checks = [r for r in runs if r.is_drift_check]
    runs = [r for r in runs if not r.is_drift_check]
    active = [r for r in runs if r.active]
    if active:
        run = newest(active)
        assert run is not None
        queued = generation if run.generation != generation else None
        shown = progress if progress is not None and progress.job == run.job else None
        shown = shown or Progress.from_status(status.get("progress"), job=run.job)
        verdict = running_verdict(
            run, queued_generation=queued, progress=shown.message(now) if shown else None
        )
        # Shown, or cleared when it is another Job's; never written while there is none.
        extra: JsonDict = {"progress": shown.to_status()} if shown else {}
        if not shown and status.get("progress"):
            extra = {"progress": None}
        return _with_status(
            "wait", verdict, status, run.generation, stamp, job_run=run, extra=extra
        )

    recorded = _recorded_jobs(status)
    latest = newest(runs)
    if latest is not None and latest.job not in recorded:
        lock = valid.lock_timeout_seconds if valid else None
        verdict = finished_verdict(latest, lock_timeout_seconds=lock)
        decision = _with_status(
            "record",
            verdict,
            status,
            latest.generation,
            stamp,
            run=latest,
            extra={"progress": None},
        )
        change = window_after(
            run=latest,
            verdict=verdict,
            spec=valid,
            current=Window.from_status(status.get("rollout")),
            deployment=deployment,
            now=now,
        )
        if decision.status is not None and change.changed:
            decision = replace(decision, status={**decision.status, "rollout": change.rollout})
        kind: Literal["Normal", "Warning"] = "Warning" if verdict.failed else "Normal"
        return replace(decision, event=Event(kind, verdict.reason, verdict.message))

    running = [c for c in checks if c.active]
    if running:
        return Decision(action="wait", run=running[0])
    check = to_record(checks, status=status)
    if check is not None:
        found = finding(check, migration=meta.get("name", ""), status=status, now=now)
        patch = finding_patch(found, status=status, generation=generation, now=now)
        return Decision(action="drift", status=patch, run=check, event=found.event)

    if meta.get("deletionTimestamp"):
        return Decision(action="nothing")
    if isinstance(spec, MigrationSpec):
        refused = violations(spec, policy or Policy(), default_image=defaults.runner_image)
        if refused:
            spec = InvalidSpec(refused)
    if isinstance(spec, InvalidSpec):
        verdict = problem_verdict(reason=spec.reason, message=str(spec))
        return _report(verdict, status, generation, stamp)
    if isinstance(references, Unread):
        return Decision(action="read")
    problem = _reference_problem(spec, references, namespace=meta.get("namespace", ""))
    if problem is not None or references is None:
        assert problem is not None
        return _report(problem, status, generation, stamp)
    scripts = scripts_fingerprint(spec, references.config_map)
    assert scripts is not None  # a ConfigMap that does not exist is a problem above
    return _next_run(
        migration=migration,
        spec=spec,
        scripts=scripts,
        secret_version=references.secret.version,
        runs=runs,
        defaults=defaults,
        now=now,
        deployment=deployment,
    )


def _reference_problem(
    spec: MigrationSpec, references: References | None, *, namespace: str
) -> Verdict | None:
    """Rule 5's verdict when the Secret or ConfigMap will not do (None: both will)."""
    if references is None:
        return problem_verdict(
            reason=OperatorReason.SECRET_NOT_FOUND,
            phase=Phase.PENDING,
            message="The database Secret has not been checked yet",
        )
    absent = missing(spec, references, namespace=namespace)
    if absent is not None:
        return problem_verdict(reason=absent.reason, phase=Phase.PENDING, message=absent.message)
    return None


def desired_run(migration: Migration, spec: MigrationSpec, *, scripts: str) -> tuple[str, str]:
    """The name and fingerprint of the Job that brings ``migration`` to its desired state.

    ``scripts`` is :func:`.references.scripts_fingerprint`. The same name for
    the same spec, scripts, retry annotation and Helm release: a desired
    state is identified by it (``status.lastRun.desiredRun``), which is also
    how ``revisor-operator wait`` knows that the run it waits for is the
    current one.

    A relative target (``-1``, ``+2``, ``rev+1``) is an action, not a state:
    it is acted on once per generation, so new scripts do not make a new run
    of it (``-1`` would step down again on every new revision file).

    A child of a ``DatabaseMigrationSet`` is identified by the set's rollout
    it was admitted to instead of the live scripts (:mod:`.admission`).
    """
    meta = migration.get("metadata", {})
    annotations = meta.get("annotations") or {}
    retry = annotations.get(RETRY_ANNOTATION, "")
    release = annotations.get(RELEASE_ANNOTATION, "")
    files = "" if spec.relative_target else admitted(migration, scripts=scripts).identity
    fingerprint = fingerprint_run(
        spec=migration.get("spec") or {}, scripts=f"{files}\0{retry}\0{release}"
    )
    name = job_name(
        migration=meta.get("name", ""),
        generation=int(meta.get("generation", 1)),
        fingerprint=fingerprint,
    )
    return name, fingerprint


def _next_run(  # noqa: PLR0911 - one return per case of rules 6 and 7
    *,
    migration: Migration,
    spec: MigrationSpec,
    scripts: str,
    secret_version: str,
    runs: Sequence[Run],
    defaults: JobDefaults,
    now: datetime,
    deployment: DeploymentStatus | None,
) -> Decision:
    """Rules 5 and 6: the desired run already happened, or its Job is created now.

    A desired run that failed runs again, as a retry Job, once the database
    Secret has changed since (a fixed password or host): the Secret is part
    of what the run needed, though not of its identity.
    """
    meta = migration.get("metadata", {})
    status: Mapping[str, Any] = migration.get("status") or {}
    owner = Owner(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation", 1)),
        set_label=(meta.get("labels") or {}).get(SET_LABEL),
    )
    stamp = format_time(now)
    name, fingerprint = desired_run(migration, spec, scripts=scripts)
    window = Window.from_status(status.get("rollout"))
    superseded = _superseded(window, owner.generation)
    done = name in _recorded_desired(status) or any(r.desired == name for r in runs)
    if done:
        retry = _secret_retry(status, desired=name, secret_version=secret_version)
        if retry is None:
            if (
                window is not None
                and window.state == WindowState.WATCHING
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
            restored = _restore_last_verdict(status, stamp)
            if restored.action != "nothing" or (window and window.state == WindowState.WATCHING):
                return restored
            return _drift_check(
                migration, spec, owner=owner, desired=name, defaults=defaults, now=now
            )
        fingerprint = retry
    hold = admitted(migration, scripts=scripts).hold
    if hold is not None:
        # A set's child runs only what the set admitted (see .admission).
        held = Verdict(phase=Phase.PENDING, reason=OperatorReason.WAITING_FOR_SET, message=hold)
        return _report(held, status, owner.generation, stamp)
    cleared = gate(spec, status=status, desired=name)
    if cleared == "check":
        check = _drift_check(
            migration, spec, owner=owner, desired=name, defaults=defaults, now=now, forced=True
        )
        verdict = checking_verdict(check.job_name, target=spec.target)
        extra = {"rollout": superseded} if superseded is not None else None
        decision = _with_status("check", verdict, status, owner.generation, stamp, extra=extra)
        return replace(
            decision, job=check.job, event=Event("Normal", verdict.reason, verdict.message)
        )
    if cleared == "blocked":
        # A check made for this run found drift: a later one (on its interval, or asked
        # for) may find it gone; an accepted hash is a new spec, hence a new run.
        recheck = _drift_check(
            migration, spec, owner=owner, desired=name, defaults=defaults, now=now
        )
        if recheck.action == "check":
            return recheck
        return _report(blocked_verdict(status, target=spec.target), status, owner.generation, stamp)
    job_named = job_name(migration=owner.name, generation=owner.generation, fingerprint=fingerprint)
    job = build_job(
        owner=owner,
        spec=spec,
        name=job_named,
        fingerprint=fingerprint,
        defaults=defaults,
        desired=name,
        secret_version=secret_version,
    )
    verb = "plan" if spec.plans_only else "migrate"
    again = " again: the database Secret changed since it failed" if done else ""
    verdict = Verdict(
        phase=Phase.PLANNING if spec.plans_only else Phase.RUNNING,
        reason=OperatorReason.RUNNING,
        message=f"Created Job {job_named} to {verb} to {spec.target}{again}",
        progressing=True,
    )
    decision = _with_status("create", verdict, status, owner.generation, stamp)
    if superseded is not None and decision.status is not None:
        decision = replace(decision, status={**decision.status, "rollout": superseded})
    return replace(decision, job=job, event=Event("Normal", verdict.reason, verdict.message))


@dataclass(frozen=True)
class _Check(Decision):
    job_name: str = ""


def _drift_check(
    migration: Migration,
    spec: MigrationSpec,
    *,
    owner: Owner,
    desired: str,
    defaults: JobDefaults,
    now: datetime,
    forced: bool = False,
) -> _Check:
    """A drift check's Job if one is due (or ``forced``: Block's check before an apply)."""
    meta = migration.get("metadata", {})
    status: Mapping[str, Any] = migration.get("status") or {}
    request = str((meta.get("annotations") or {}).get(DRIFT_CHECK_ANNOTATION) or "")
    why = due(spec.drift, status=status, request=request, now=now)
    if why is None and not forced:
        return _Check(action="nothing")
    after = str((status.get("lastRun") or {}).get("job") or "")
    previous = str((status.get("drift") or {}).get("job") or "")
    name = check_job_name(
        owner.name, spec=spec, desired=desired, after=after, request=request, previous=previous
    )
    job = build_check_job(
        owner=owner,
        spec=spec,
        name=name,
        defaults=defaults,
        desired=desired,
        after=after,
        request=request,
        previous=previous,
    )
    return _Check(action="check", job=job, job_name=name)


def _superseded(window: Window | None, generation: int) -> JsonDict | None:
    """The open window of an older generation, closed: its rollback must never run now."""
    if window is None or window.state != WindowState.WATCHING or window.generation == generation:
        return None
    return replace(
        window,
        state=WindowState.SUPERSEDED,
        message=f"Generation {generation} replaced generation {window.generation}: "
        "its rollback window closed without judging the rollout",
    ).to_status()


def _recorded_desired(status: Mapping[str, Any]) -> set[str]:
    """The desired runs status has recorded (a retry counts for the run it retried)."""
    entries = [h for h in status.get("history") or [] if isinstance(h, Mapping)]
    entries.append(status.get("lastRun") or {})
    return {str(e.get("desiredRun") or e.get("job")) for e in entries if e.get("job")}


#: Failures a changed Secret may cure (not a bad target, plan or history).
_SECRET_CURABLE = frozenset({Phase.FAILED, Phase.ROLLED_BACK})
#: ...nor a partially applied revision: a person must finish or undo it first.
_SPEC_REASONS = frozenset(
    {
        Reason.INVALID_TARGET,
        Reason.NOT_REVERSIBLE,
        Reason.PLAN_CHANGED,
        Reason.PARTIALLY_APPLIED,
        OperatorReason.DEPLOY_FAILED_ROLLED_BACK,
    }
)


def _secret_retry(status: Mapping[str, Any], *, desired: str, secret_version: str) -> str | None:
    """The fingerprint of a retry of ``desired`` if its last run failed before the Secret
    changed; None when no retry is due."""
    last = status.get("lastRun") or {}
    if str(last.get("desiredRun") or last.get("job")) != desired:
        return None
    if last.get("phase") not in _SECRET_CURABLE or last.get("reason") in _SPEC_REASONS:
        return None
    before = last.get("secretVersion")
    if not before or not secret_version or before == secret_version:
        return None
    return hashlib.sha256(f"{desired}\0secret\0{secret_version}".encode()).hexdigest()


def _follow(
    *,
    window: Window,
    deployment: DeploymentStatus | None,
    owner: Owner,
    spec: MigrationSpec,
    status: Mapping[str, Any],
    defaults: JobDefaults,
    now: datetime,
) -> Decision:
    """Rule 5 with a window open: what :func:`.rollback.follow` decided, as a Decision."""
    followed = follow(window=window, deployment=deployment, spec=spec, status=status, now=now)
    stamp = format_time(now)
    if followed.rollback is None and followed.verdict is None:
        if followed.rollout is None:
            return Decision(action="nothing")
        return Decision(action="follow", status={"rollout": followed.rollout}, event=followed.event)
    if followed.rollback is None:
        assert followed.verdict is not None
        decision = _with_status("report", followed.verdict, status, owner.generation, stamp)
        reported: JsonDict = {**(decision.status or {}), "rollout": followed.rollout}
        return replace(decision, status=reported, event=followed.event)
    back = followed.rollback
    name = job_name(migration=owner.name, generation=owner.generation, fingerprint=back.fingerprint)
    job = build_job(
        owner=owner,
        spec=back.spec,
        name=name,
        fingerprint=back.fingerprint,
        defaults=defaults,
        annotations={
            PURPOSE_ANNOTATION: "rollback",
            DEPLOYMENT_ANNOTATION: back.deployment,
            ROLLBACK_REASON_ANNOTATION: back.reason,
        },
    )
    message = f"{back.reason}; moving the database back to {back.spec.target} (Job {name})"
    verdict = Verdict(
        phase=Phase.RUNNING,
        reason=OperatorReason.DEPLOY_FAILED,
        message=message,
        progressing=True,
    )
    decision = _with_status("create", verdict, status, owner.generation, stamp)
    created: JsonDict = {**(decision.status or {}), "rollout": followed.rollout}
    return replace(
        decision, status=created, job=job, event=Event("Warning", verdict.reason, message)
    )


def _recorded_jobs(status: Mapping[str, Any]) -> set[str]:
    jobs = {h.get("job") for h in status.get("history") or [] if isinstance(h, Mapping)}
    last = status.get("lastRun") or {}
    jobs.add(last.get("job"))
    return {j for j in jobs if j}


def _restore_last_verdict(status: Mapping[str, Any], now: str) -> Decision:
    ready = find(status.get("conditions") or [], READY)
    last = status.get("lastRun") or {}
    if not ready or ready.get("reason") not in _MISSING_REFERENCE or not last.get("phase"):
        return Decision(action="nothing")
    phase = Phase(last["phase"])
    verdict = Verdict(
        phase=phase,
        reason=str(last.get("reason", Reason.MIGRATED)),
        message=str(last.get("message", "")),
        ready=phase == Phase.SUCCEEDED,
        failed=phase in (Phase.FAILED, Phase.ROLLED_BACK),
    )
    generation = int(status.get("observedGeneration", last.get("generation", 1)))
    return _report(verdict, status, generation, now)


def _report(verdict: Verdict, status: Mapping[str, Any], generation: int, now: str) -> Decision:
    decision = _with_status("report", verdict, status, generation, now)
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
    run: Run | None = None,
    job_run: Run | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Decision:
    patch = status_patch(current=status, verdict=verdict, generation=generation, now=now, run=run)
    patch.update(extra or {})
    changed = not is_noop(current=status, patch=patch)
    return Decision(
        action=action,
        verdict=verdict,
        status=patch if changed else None,
        run=run or job_run,
    )
