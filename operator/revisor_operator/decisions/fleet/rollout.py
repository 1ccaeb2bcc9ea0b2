"""A set's one decision: given its targets and children, what to admit, remove and report.

:func:`decide_set` is to a ``DatabaseMigrationSet`` what
:func:`..reconcile.decide` is to one migration: a pure function of what the
handlers gathered (the set, its spec parsed once, the scripts' fingerprint,
the targets, the children as :class:`.children.Child` summaries, the Jobs
they left) that returns a :class:`SetDecision` for them to carry out.

The rules:

1. A rollout is the template, the scripts and the set's re-run marks
   (:func:`.naming.rollout_hash`). When it changes, the rollout generation
   goes up and every target starts over from the first wave.
2. A target's state in the rollout: *Ready* or *Failed* once its child ran
   for this rollout (and the same spec) and succeeded or failed (or cannot run:
   a Secret or key missing), *Running* while admitted and not yet done,
   *Pending* otherwise.
3. The current wave is the first with a target not done (Ready; or Failed
   when the policy is Continue). Its Pending targets are admitted in name
   order while fewer than its ``maxParallel`` targets of the set are in
   flight: admitted and not done (``status.active``, written *before* the
   children, so that a restarted operator knows them), or with a Job running
   (a retry, or a child of the previous rollout finishing).
4. Nothing is admitted while ``paused``, or while halted: Halt at the first
   failed target, Continue once more than ``maxFailures`` failed. A halt is not
   a latch: once the failed targets are Ready again (their Secret fixed, the
   annotation ``revisor.dev/retry`` changed) the rollout goes on.
5. A child whose target is gone (a Secret unlabelled or deleted, a schema
   no longer listed) is deleted; its database is left as it is. Only when the
   targets are known completely.
6. Finished Jobs of the children, once their run is recorded, are deleted
   beyond ``successfulJobsHistoryLimit`` and ``failedJobsHistoryLimit``.

Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ..bodies import Job, JsonDict
from ..conditions import FAILED, PROGRESSING, READY, Desired, merge
from ..jobs import JobDefaults, migration_of
from ..observe import job_finished
from ..policy import Policy, violations
from ..redaction import redact, shorten
from ..rollout import format_time
from ..spec import InvalidSpec, Problem
from ..status import Event, is_noop
from .children import Child, Rollout, SetRef, State, child_body, child_spec
from .naming import child_name, rollout_hash, spec_key
from .query import ROUND_ANNOTATION, QueryStep
from .spec import SchemaTargets, SecretSelectorTargets, SetSpec
from .targets import Resolved, Target, WavePlan, assign_waves
from .words import SetPhase, SetReason

#: At most this many failed targets are named in status (their number is in counts).
FAILED_LISTED = 20
MESSAGE_LIMIT = 1024
#: The set's own marks: changing one re-runs the rollout (as for a DatabaseMigration).
MARKS = ("revisor.dev/retry", "revisor.dev/release")


@dataclass(frozen=True)
class JobInfo:
    """A Job of the set (a child's run, or a page of its schemas query), for pruning."""

    name: str
    #: The child it ran for (None: one of the set's own query Jobs).
    child: str | None
    finished: bool
    succeeded: bool
    #: When it finished (RFC 3339), for keeping the newest.
    finished_at: str = ""
    #: The query round of a query Job.
    round: int = 0


def job_info(job: Job) -> JobInfo:
    """What pruning needs of one of the set's Jobs."""
    meta = job.get("metadata", {})
    conditions = {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or []}
    failed = conditions.get("Failed") or {}
    finished_at = (
        (job.get("status") or {}).get("completionTime")
        or (failed.get("lastTransitionTime") if failed.get("status") == "True" else None)
        or meta.get("creationTimestamp", "")
    )
    try:
        round_ = int((meta.get("annotations") or {}).get(ROUND_ANNOTATION) or 0)
    except ValueError:
        round_ = 0
    return JobInfo(
        name=meta.get("name", ""),
        child=migration_of(job),
        finished=job_finished(job),
        succeeded=(conditions.get("Complete") or {}).get("status") == "True",
        finished_at=str(finished_at),
        round=round_,
    )


@dataclass(frozen=True)
class Counts:
    total: int = 0
    ready: int = 0
    running: int = 0
    failed: int = 0
    pending: int = 0


@dataclass(frozen=True)
class SetDecision:
    """What to do for a set now; the handlers do it in this order (status first)."""

    phase: SetPhase
    status: JsonDict | None = None
    #: Children to write: created, or server-side applied (admitted to the rollout).
    apply: tuple[JsonDict, ...] = ()
    delete_children: tuple[str, ...] = ()
    create_jobs: tuple[Job, ...] = ()
    delete_jobs: tuple[str, ...] = ()
    #: Failed children to look at again (a fixed Secret runs them again), at most 20.
    recheck: tuple[str, ...] = ()
    events: tuple[Event, ...] = ()
    counts: Counts = field(default_factory=Counts)
    wave: int = 0
    rollout_generation: int = 0


@dataclass(frozen=True)
class SetInputs:
    """What the handlers gathered for one pass."""

    body: Mapping[str, Any]
    spec: SetSpec | InvalidSpec
    #: The scripts' fingerprint; None when their ConfigMap does not exist (``scripts_problem``).
    scripts: str | None
    resolved: Resolved
    children: Sequence[Child]
    now: datetime
    defaults: JobDefaults
    policy: Policy = field(default_factory=Policy)
    scripts_problem: str = ""
    #: Per selector wave (by index), the Secrets its selector matches.
    selected: Mapping[int, frozenset[str]] = field(default_factory=dict)
    jobs: Sequence[JobInfo] = ()
    query: QueryStep | None = None


@dataclass(frozen=True)
class _Verdict:
    phase: SetPhase
    reason: str
    message: str
    ready: bool = False
    progressing: bool = False
    failed: bool = False

    def conditions(self) -> list[Desired]:
        return [
            Desired(READY, self.ready, self.reason, self.message),
            Desired(PROGRESSING, self.progressing, self.reason, self.message),
            Desired(FAILED, self.failed, self.reason, self.message),
        ]


def decide_set(inputs: SetInputs) -> SetDecision:
    """The set's next step (the module docstring has the rules)."""
    body = inputs.body
    status: Mapping[str, Any] = body.get("status") or {}
    generation = int((body.get("metadata") or {}).get("generation") or 1)
    spec = inputs.spec
    if isinstance(spec, SetSpec):
        refused = violations(
            spec.migration, inputs.policy, default_image=inputs.defaults.runner_image
        )
        if refused:
            spec = InvalidSpec([_in_template(p) for p in refused])
    query = inputs.query or QueryStep()
    reported = _Reported(
        status=status,
        generation=generation,
        now=inputs.now,
        extra=dict(query.status),
        events=[query.event] if query.event is not None else [],
        jobs=(query.job,) if query.job is not None else (),
    )
    if isinstance(spec, InvalidSpec):
        verdict = _Verdict(SetPhase.FAILED, SetReason.INVALID_SPEC, _clean(str(spec)), failed=True)
        return reported.decision(verdict)
    if inputs.scripts is None:
        message = _clean(inputs.scripts_problem)
        return reported.decision(
            _Verdict(SetPhase.PENDING, SetReason.CONFIG_MAP_NOT_FOUND, message)
        )
    standing = _stand(inputs, spec, inputs.scripts)
    return _roll_out(inputs, spec, standing, query, reported)


@dataclass(frozen=True)
class _Standing:
    """Where the set's targets stand in the current rollout (rules 1-3)."""

    owner: SetRef
    rollout: Rollout
    new_rollout: bool
    started_at: str | None
    targets: tuple[Target, ...]
    conflicts: tuple[tuple[str, str], ...]
    #: Target name -> its child's name.
    names: Mapping[str, str]
    children: Mapping[str, Child]
    states: Mapping[str, State]
    #: Targets admitted and not done, in admission order.
    active: tuple[str, ...]
    waves: tuple[WavePlan, ...]
    failed: tuple[str, ...]
    current: WavePlan | None
    halted: bool

    @property
    def in_flight(self) -> set[str]:
        """Targets with a run in flight: admitted and not done, or with a Job running."""
        return {c.target for c in self.children.values() if c.running} | set(self.active)

    @property
    def wave_index(self) -> int:
        """The current wave, counted from 1 (the last wave once every wave is done)."""
        return self.current.index + 1 if self.current is not None else len(self.waves)


def _stand(inputs: SetInputs, spec: SetSpec, scripts: str) -> _Standing:
    meta = inputs.body.get("metadata") or {}
    status: Mapping[str, Any] = inputs.body.get("status") or {}
    owner = SetRef(
        name=meta.get("name", ""), namespace=meta.get("namespace", ""), uid=meta.get("uid", "")
    )
    annotations = meta.get("annotations") or {}
    marks = {k: str(annotations[k]) for k in MARKS if k in annotations}
    previous: Mapping[str, Any] = status.get("rollout") or {}
    wanted = rollout_hash(template=spec.template, scripts=scripts, annotations=marks)
    new_rollout = previous.get("hash") != wanted
    rollout = Rollout(
        hash=wanted,
        generation=int(previous.get("generation") or 0) + (1 if new_rollout else 0),
        scripts=scripts,
    )
    targets, conflicts = _unique_children(owner, inputs.resolved.targets)
    names = {t.name: child_name(set_name=owner.name, target=t.name) for t in targets}
    children = {c.name: c for c in inputs.children if c.set_uid == owner.uid}
    states: dict[str, State] = {}
    for target in targets:
        child = children.get(names[target.name])
        key = spec_key(child_spec(spec.template, target))
        states[target.name] = child.state(rollout=rollout.hash, key=key) if child else "Pending"
    before = [] if new_rollout else list(status.get("active") or [])
    active = tuple(
        str(a["target"])
        for a in before
        if isinstance(a, Mapping)
        and a.get("target") in states
        and states[str(a["target"])] in ("Pending", "Running")
    )
    waves = assign_waves(spec, targets, selected=inputs.selected)
    failed = tuple(t.name for w in waves for t in w.targets if states[t.name] == "Failed")
    return _Standing(
        owner=owner,
        rollout=rollout,
        new_rollout=new_rollout,
        started_at=format_time(inputs.now) if new_rollout else previous.get("startedAt"),
        targets=tuple(targets),
        conflicts=tuple(conflicts),
        names=names,
        children=children,
        states=states,
        active=active,
        waves=waves,
        failed=failed,
        current=_current_wave(spec, waves, states),
        halted=_halted(spec, len(failed)),
    )


def _admit(spec: SetSpec, standing: _Standing) -> list[str]:
    """Rules 3 and 4: the current wave's Pending targets, while its slots are free."""
    current = standing.current
    if current is None or spec.paused or standing.halted:
        return []
    busy = standing.in_flight
    slots = current.max_parallel - len(busy)
    admitted: list[str] = []
    for target in current.targets:
        if len(admitted) >= slots:
            break
        if standing.states[target.name] == "Pending" and target.name not in busy:
            admitted.append(target.name)
    return admitted


def _roll_out(
    inputs: SetInputs,
    spec: SetSpec,
    standing: _Standing,
    query: QueryStep,
    reported: _Reported,
) -> SetDecision:
    status = reported.status
    admitted = _admit(spec, standing)
    active = [*standing.active, *admitted]
    by_target = {t.name: t for t in standing.targets}
    apply = tuple(
        child_body(
            owner=standing.owner,
            template=spec.template,
            target=by_target[name],
            rollout=standing.rollout,
        )
        for name in active
        if standing.states[name] == "Pending"
    )
    events = list(reported.events)
    if standing.new_rollout:
        events.append(
            Event(
                "Normal",
                SetReason.ROLLOUT_STARTED,
                f"Rollout {standing.rollout.generation} started: target "
                f"{spec.migration.target}, scripts {standing.rollout.scripts[-12:]}",
            )
        )
    orphans = _orphans(standing, complete=inputs.resolved.complete)
    if orphans:
        shown = ", ".join(orphans[:10]) + (
            f" and {len(orphans) - 10} more" if len(orphans) > 10 else ""
        )
        events.append(
            Event(
                "Normal",
                SetReason.TARGET_REMOVED,
                f"Removing {len(orphans)} child(ren) whose target left the set: {shown}; "
                "their databases are left as they are",
            )
        )
    counts = _counts(standing, set(active))
    verdict = _verdict(spec=spec, inputs=inputs, standing=standing, counts=counts, query=query)
    current = standing.current
    last = (status.get("wave") or {}).get("index"), (status.get("rollout") or {}).get("generation")
    if (
        admitted
        and current is not None
        and last != (standing.wave_index, standing.rollout.generation)
    ):
        events.append(
            Event(
                "Normal",
                SetReason.WAVE_STARTED,
                f"Wave {standing.wave_index}/{len(standing.waves)} ({current.name}) started: "
                f"{len(current.targets)} target(s), at most {current.max_parallel} at a time",
            )
        )
    fields = _fields(spec, standing, counts, active)
    return replace(
        reported.decision(verdict, fields=fields, events=events),
        apply=apply,
        delete_children=orphans,
        delete_jobs=_prune(spec, inputs.jobs, standing.children, status),
        recheck=tuple(standing.names[n] for n in standing.failed[:FAILED_LISTED]),
        counts=counts,
        wave=standing.wave_index,
        rollout_generation=standing.rollout.generation,
    )


def _orphans(standing: _Standing, *, complete: bool) -> tuple[str, ...]:
    """Rule 5: children whose target is gone (only when the targets are known completely)."""
    if not complete:
        return ()
    wanted = set(standing.names.values())
    return tuple(
        sorted(
            c.name for c in standing.children.values() if c.name not in wanted and not c.deleting
        )
    )


def _counts(standing: _Standing, active: set[str]) -> Counts:
    states = standing.states
    ready = sum(1 for s in states.values() if s == "Ready")
    failed = len(standing.failed)
    running = sum(1 for n, s in states.items() if s == "Running" or n in active)
    total = len(states)
    return Counts(total, ready, running, failed, total - ready - running - failed)


def _fields(spec: SetSpec, standing: _Standing, counts: Counts, active: Sequence[str]) -> JsonDict:
    """The status fields of a rollout (besides phase and conditions)."""
    rollout, current, waves, names = (
        standing.rollout,
        standing.current,
        standing.waves,
        standing.names,
    )
    wave_name = current.name if current is not None else waves[-1].name
    return {
        "rollout": {
            "generation": rollout.generation,
            "hash": rollout.hash,
            "startedAt": standing.started_at,
            "target": spec.migration.target,
            "scripts": rollout.scripts,
        },
        "targets": counts.total,
        "readyTargets": f"{counts.ready}/{counts.total}",
        "counts": {
            "ready": counts.ready,
            "running": counts.running,
            "failed": counts.failed,
            "pending": counts.pending,
        },
        "wave": {
            "index": standing.wave_index,
            "count": len(waves),
            "name": wave_name,
            "maxParallel": current.max_parallel if current is not None else 0,
            "text": f"{standing.wave_index}/{len(waves)} {wave_name}",
        },
        "waves": [_wave_status(w, standing.states, set(active)) for w in waves],
        "active": [{"target": n, "child": names[n]} for n in active],
        "failedTargets": [
            _failed_entry(n, names[n], standing.children.get(names[n]))
            for n in standing.failed[:FAILED_LISTED]
        ],
        "currentRevision": _common_revision(standing),
    }


def _unique_children(
    owner: SetRef, targets: Sequence[Target]
) -> tuple[list[Target], list[tuple[str, str]]]:
    """The targets whose child name is theirs alone; the others as (target, clashing target)."""
    seen: dict[str, str] = {}
    kept: list[Target] = []
    conflicts: list[tuple[str, str]] = []
    for target in targets:
        name = child_name(set_name=owner.name, target=target.name)
        if name in seen:
            conflicts.append((target.name, seen[name]))
            continue
        seen[name] = target.name
        kept.append(target)
    return kept, conflicts


def _halted(spec: SetSpec, failed: int) -> bool:
    if spec.failure_policy == "Halt":
        return failed > 0
    return spec.max_failures is not None and failed > spec.max_failures


def _current_wave(
    spec: SetSpec, waves: Sequence[WavePlan], states: Mapping[str, State]
) -> WavePlan | None:
    """The first wave with a target that is not done (None: every wave is done)."""
    done: set[State] = {"Ready", "Failed"} if spec.failure_policy == "Continue" else {"Ready"}
    for wave in waves:
        if any(states[t.name] not in done for t in wave.targets):
            return wave
    return None


def _verdict(  # noqa: PLR0911 - one return per phase
    *, spec: SetSpec, inputs: SetInputs, standing: _Standing, counts: Counts, query: QueryStep
) -> _Verdict:
    """Phase, reason and message of the set now."""
    current, waves, generation = standing.current, standing.waves, standing.rollout.generation
    where = f"wave {current.index + 1}/{len(waves)} ({current.name})" if current else "the end"
    tally = f"{counts.ready}/{counts.total} Ready"
    tally += f", {counts.running} running" if counts.running else ""
    tally += f", {counts.failed} failed" if counts.failed else ""
    if standing.conflicts:
        target, other = standing.conflicts[0]
        clash = child_name(set_name=standing.owner.name, target=target)
        message = (
            f"Targets {other!r} and {target!r} would share the child {clash}: rename one of "
            f"them ({len(standing.conflicts)} such pair(s)); the others roll out"
        )
        return _Verdict(SetPhase.FAILED, SetReason.TARGET_CONFLICT, _clean(message), failed=True)
    if counts.total == 0:
        return _no_targets(spec, inputs, query)
    if counts.ready == counts.total:
        revision = _common_revision(standing)
        at = f" ({revision})" if revision else ""
        message = (
            f"Rollout {generation} complete: {counts.total}/{counts.total} target(s) Ready at "
            f"{spec.migration.target}{at}"
        )
        return _Verdict(SetPhase.SUCCEEDED, SetReason.ROLLOUT_COMPLETE, _clean(message), ready=True)
    if standing.halted:
        message = _halt_message(spec, where, standing, tally)
        return _Verdict(SetPhase.HALTED, SetReason.HALTED, _clean(message), failed=True)
    if spec.paused:
        message = f"Paused at {where}: {tally}; no target starts until spec.paused is false"
        return _Verdict(SetPhase.PAUSED, SetReason.PAUSED, _clean(message))
    if current is None:
        limit = spec.max_failures if spec.max_failures is not None else "unlimited"
        first = _failure_text(standing.failed[0], standing) if standing.failed else ""
        message = f"Rollout {generation} finished: {tally} (maxFailures {limit}). First: {first}"
        return _Verdict(SetPhase.FAILED, SetReason.TARGETS_FAILED, _clean(message), failed=True)
    problem = f". {query.problem}" if query.problem else ""
    message = f"Rollout {generation}, {where}: {tally}{problem}"
    return _Verdict(SetPhase.PROGRESSING, SetReason.PROGRESSING, _clean(message), progressing=True)


def _no_targets(spec: SetSpec, inputs: SetInputs, query: QueryStep) -> _Verdict:
    targets = spec.targets
    namespace = (inputs.body.get("metadata") or {}).get("namespace", "")
    if isinstance(targets, SecretSelectorTargets):
        message = (
            f"No Secret in namespace {namespace} matches {targets.selector.query()}: label "
            "the tenants' Secrets; they join at the next check"
        )
        return _Verdict(SetPhase.PENDING, SetReason.NO_TARGETS, message)
    if isinstance(targets, SchemaTargets) and query.problem and query.names is None:
        return _Verdict(
            SetPhase.FAILED, SetReason.SCHEMAS_QUERY_FAILED, _clean(query.problem), failed=True
        )
    if inputs.resolved.waiting:
        message = f"Waiting: {inputs.resolved.waiting}"
        return _Verdict(SetPhase.PENDING, SetReason.QUERYING_SCHEMAS, message)
    return _Verdict(SetPhase.PENDING, SetReason.NO_TARGETS, "The schemas query returned no schema")


def _halt_message(spec: SetSpec, where: str, standing: _Standing, tally: str) -> str:
    failed = standing.failed
    first = _failure_text(failed[0], standing)
    more = f" ({len(failed) - 1} more failed)" if len(failed) > 1 else ""
    why = (
        "failurePolicy Halt"
        if spec.failure_policy == "Halt"
        else f"more than maxFailures {spec.max_failures} failed"
    )
    return (
        f"Halted at {where} ({why}): target {first}{more}. {tally}. No target starts until "
        "the failed ones are Ready again: fix them (their DatabaseMigration says how), or "
        "change the template"
    )


def _failure_text(target: str, standing: _Standing) -> str:
    child = standing.children.get(standing.names.get(target, ""))
    if child is None:
        return f"{target!r} failed"
    return f"{target!r} (dbm/{child.name}) failed: {child.message}"


def _wave_status(wave: WavePlan, states: Mapping[str, State], active: set[str]) -> JsonDict:
    of = [states[t.name] for t in wave.targets]
    return {
        "name": wave.name,
        "targets": len(of),
        "ready": of.count("Ready"),
        "running": sum(1 for t in wave.targets if states[t.name] == "Running" or t.name in active),
        "failed": of.count("Failed"),
        "maxParallel": wave.max_parallel,
    }


def _failed_entry(target: str, child_name_: str, child: Child | None) -> JsonDict:
    out: JsonDict = {"target": target, "child": child_name_}
    if child is not None:
        out["reason"] = child.reason
        out["message"] = child.message
    return out


def _common_revision(standing: _Standing) -> str | None:
    """The revision every Ready target is at, when they agree (None otherwise)."""
    revisions = {
        standing.children[standing.names[name]].revision
        for name, state in standing.states.items()
        if state == "Ready" and standing.names[name] in standing.children
    }
    return revisions.pop() if len(revisions) == 1 else None


#: The Event a set posts when it enters a phase (Progressing: only back from a stop).
_ENTERED: Mapping[str, tuple[str, str | None]] = {
    SetPhase.SUCCEEDED: ("Normal", SetReason.ROLLOUT_COMPLETE),
    SetPhase.HALTED: ("Warning", SetReason.HALTED),
    SetPhase.FAILED: ("Warning", None),
    SetPhase.PAUSED: ("Normal", SetReason.PAUSED),
}


def _transition_events(before: str, verdict: _Verdict) -> list[Event]:
    if before == verdict.phase:
        return []
    if verdict.phase == SetPhase.PROGRESSING:
        if before in (SetPhase.PAUSED, SetPhase.HALTED):
            return [Event("Normal", SetReason.RESUMED, verdict.message)]
        return []
    if verdict.phase not in _ENTERED:
        return []
    kind, reason = _ENTERED[verdict.phase]
    return [
        Event(
            "Warning" if kind == "Warning" else "Normal", reason or verdict.reason, verdict.message
        )
    ]


def _prune(
    spec: SetSpec,
    jobs: Sequence[JobInfo],
    children: Mapping[str, Child],
    status: Mapping[str, Any],
) -> tuple[str, ...]:
    """Finished Jobs to delete: recorded by their child, beyond the history limits.

    A Job whose run its child has not recorded yet is never deleted (its pod
    holds the result). Query Jobs of rounds before the current one go.
    """
    recorded = [
        j
        for j in jobs
        if j.finished
        and j.child is not None
        and (j.child not in children or j.name in children[j.child].recorded_jobs)
    ]
    newest_first = sorted(recorded, key=lambda j: (j.finished_at, j.name), reverse=True)
    succeeded = [j.name for j in newest_first if j.succeeded][spec.successful_jobs_kept :]
    failed = [j.name for j in newest_first if not j.succeeded][spec.failed_jobs_kept :]
    query_round = int(
        (status.get("schemaQuery") or {}).get("round")
        or (status.get("schemas") or {}).get("round")
        or 0
    )
    old_queries = [j.name for j in jobs if j.child is None and j.finished and j.round < query_round]
    return tuple(sorted({*succeeded, *failed, *old_queries}))


def _status(
    current: Mapping[str, Any],
    verdict: _Verdict,
    generation: int,
    now: datetime,
    fields: JsonDict,
) -> JsonDict | None:
    patch: JsonDict = {
        "observedGeneration": generation,
        "phase": str(verdict.phase),
        "conditions": merge(
            current.get("conditions") or [],
            verdict.conditions(),
            generation=generation,
            now=format_time(now),
        ),
        **fields,
    }
    return None if is_noop(current=current, patch=patch) else patch


@dataclass(frozen=True)
class _Reported:
    """What every decision carries: the status it is made from, the query's step."""

    status: Mapping[str, Any]
    generation: int
    now: datetime
    #: Status fields of the schemas query.
    extra: JsonDict
    events: list[Event]
    jobs: tuple[Job, ...]

    def decision(
        self,
        verdict: _Verdict,
        *,
        fields: JsonDict | None = None,
        events: Sequence[Event] | None = None,
    ) -> SetDecision:
        """A decision that writes ``verdict`` (and ``fields``), posting its transition's Event."""
        told = [*(self.events if events is None else events)]
        told += _transition_events(str(self.status.get("phase") or ""), verdict)
        counts = self.status.get("counts") or {}
        return SetDecision(
            phase=verdict.phase,
            status=_status(
                self.status, verdict, self.generation, self.now, {**self.extra, **(fields or {})}
            ),
            create_jobs=self.jobs,
            events=tuple(told),
            counts=Counts(
                total=int(self.status.get("targets") or 0),
                **{k: int(v) for k, v in counts.items() if k in _COUNTED},
            ),
            wave=int((self.status.get("wave") or {}).get("index") or 0),
            rollout_generation=int((self.status.get("rollout") or {}).get("generation") or 0),
        )


_COUNTED = ("ready", "running", "failed", "pending")


def _in_template(problem: Problem) -> Problem:
    """A policy problem of the template, said where the set's spec has it."""
    return Problem(
        field=problem.field.replace("spec.", "spec.template.", 1),
        message=problem.message,
        fix=problem.fix,
        reason=problem.reason,
    )


def _clean(message: str) -> str:
    return shorten(redact(message), limit=MESSAGE_LIMIT)
