"""From what happened to what the resource's status says.

A :class:`Verdict` is the one-line story (phase, reason, human message and
the three condition statuses); :func:`status_patch` turns it, plus the run
it came from, into the status fields: revisions, ``lastRun``, ``history``,
``plan``, ``observedGeneration`` and conditions.

Reasons come from the contract (:attr:`revisor.contract.Result.reason`,
:attr:`revisor.contract.ExitCode.reason`) so that the engine's words and the
operator's cannot drift; messages are written for the person running
``kubectl get dbm`` and always pass through :func:`.redaction.redact`.
Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from revisor.contract import BaselineDetails, ExitCode, Reason, Result, Step, heads_text

from .bodies import Condition, JsonDict
from .conditions import FAILED, PROGRESSING, READY, Desired, merge
from .observe import Run
from .partial import partially_applied_message
from .progress import log_tail
from .reasons import OperatorReason, Phase
from .redaction import redact, shorten

HISTORY_LIMIT = 10
MESSAGE_LIMIT = 1024


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the resource."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Verdict:
    """The state of a resource in one sentence, and the conditions it implies."""

    phase: Phase
    reason: str
    message: str
    ready: bool = False
    progressing: bool = False
    failed: bool = False

    def desired_conditions(self) -> list[Desired]:
        return [
            Desired(type=READY, status=self.ready, reason=self.reason, message=self.message),
            Desired(
                type=PROGRESSING, status=self.progressing, reason=self.reason, message=self.message
            ),
            Desired(type=FAILED, status=self.failed, reason=self.reason, message=self.message),
        ]


def problem_verdict(*, reason: str, message: str, phase: Phase = Phase.FAILED) -> Verdict:
    """A resource that cannot be acted on until a human fixes something."""
    return Verdict(phase=phase, reason=reason, message=_clean(message), failed=True)


def running_verdict(
    run: Run, *, queued_generation: int | None = None, progress: str | None = None
) -> Verdict:
    """A Job exists and has not finished; ``progress`` is how far it is, in words (first)."""
    verb = "planning" if run.command == "plan" else "migrating"
    message = f"Job {run.job} is {verb} to {run.target}"
    if progress:
        message = f"{progress}; {message}"
    if run.is_rollback:
        message = (
            f"Job {run.job} is moving the database back to {run.target} because Deployment "
            f"{run.deployment} failed to roll out: {run.rollback_reason or 'no detail'}"
        )
    state = run.container
    if state and state.waiting_reason and state.waiting_reason != "ContainerCreating":
        message += f"; its pod is waiting: {state.waiting_reason}"
        if state.waiting_message:
            message += f": {state.waiting_message}"
    if queued_generation is not None:
        message += f"; generation {queued_generation} will be applied after it"
    return Verdict(
        phase=Phase.PLANNING if run.command == "plan" else Phase.RUNNING,
        reason=OperatorReason.RUNNING,
        message=_clean(message),
        progressing=True,
    )


def finished_verdict(run: Run, *, lock_timeout_seconds: int | None = None) -> Verdict:
    """A Job that has finished, judged by the engine's result (or by its absence)."""
    if run.is_rollback:
        return _rollback_verdict(run)
    result = run.result
    if result is None:
        return _verdict_without_result(run)
    if result.exit_code is ExitCode.OK:
        return _success(run, result)
    # The engine names the finer reason itself (InvalidTarget, NotReversible,
    # PlanChanged, ...), so exit code 2 needs no guessing from words here.
    reason = result.reason
    if reason == Reason.PLAN_CHANGED and result.plan_hash:
        return _plan_changed(run, result)
    if result.exit_code is ExitCode.PARTIALLY_APPLIED:
        # Its own message: a person must act on the database, nothing here will.
        message = partially_applied_message(target=run.target, result=result, limit=MESSAGE_LIMIT)
        return Verdict(
            phase=Phase.FAILED,
            reason=Reason.PARTIALLY_APPLIED,
            message=_clean(message),
            failed=True,
        )
    message = _failure_message(run, result, reason, lock_timeout_seconds)
    phase = Phase.ROLLED_BACK if reason == Reason.ROLLED_BACK else Phase.FAILED
    return Verdict(phase=phase, reason=reason, message=_clean(message), failed=True)


def _plan_changed(run: Run, result: Result) -> Verdict:
    """The approved plan went stale (new scripts, or the database moved): approve again.

    Nothing was changed, so this is not a failure: the engine planned again
    and its result carries the new plan, which becomes ``status.plan``; the
    resource waits for that hash exactly as it did for the first approval.
    """
    start = heads_text(result.from_revisions)
    return Verdict(
        phase=Phase.AWAITING_APPROVAL,
        reason=Reason.PLAN_CHANGED,
        message=_clean(
            f"The plan changed since it was approved: now {len(result.plan)} step(s) from "
            f"{start} to {run.target}. Review status.plan, then set spec.approval.planHash "
            f"to {result.plan_hash}"
        ),
    )


def _rollback_verdict(run: Run) -> Verdict:
    """A finished rollback: ``DeployFailedRolledBack``, or ``RollbackFailed`` (terminal)."""
    why = run.rollback_reason or f"Deployment {run.deployment} failed to roll out"
    result = run.result
    if result is not None and result.exit_code is ExitCode.OK:
        moved = (
            f"from {heads_text(result.from_revisions)} to {heads_text(result.to_revisions)}"
            if result.applied
            else f"it was already at {heads_text(result.to_revisions)}"
        )
        return Verdict(
            phase=Phase.ROLLED_BACK,
            reason=OperatorReason.DEPLOY_FAILED_ROLLED_BACK,
            failed=True,
            message=_clean(f"{why.rstrip('.')}. The database was moved back {moved}"),
        )
    if result is not None and result.exit_code is ExitCode.PARTIALLY_APPLIED:
        moving = f"{why}. Moving the database back, "
        limit = max(MESSAGE_LIMIT - len(moving), MESSAGE_LIMIT // 2)
        partial = partially_applied_message(target=run.target, result=result, limit=limit)
        return Verdict(
            phase=Phase.FAILED,
            reason=Reason.PARTIALLY_APPLIED,
            failed=True,
            message=_clean(moving + partial[0].lower() + partial[1:]),
        )
    if result is not None:
        detail = f"the engine said {result.reason}: {result.error or 'no error message'}"
        at = f"; the database is at {heads_text(result.to_revisions or result.from_revisions)}"
    else:
        detail = _verdict_without_result(run).message
        at = ""
    return Verdict(
        phase=Phase.FAILED,
        reason=Reason.ROLLBACK_FAILED,
        failed=True,
        message=_clean(
            f"{why}. Moving the database back to {run.target} failed ({detail}){at}. "
            "Not retried: a human needs to look; change the spec to run again"
        ),
    )


def status_patch(
    *,
    current: Mapping[str, Any],
    verdict: Verdict,
    generation: int,
    now: str,
    run: Run | None = None,
) -> JsonDict:
    """The status fields to write (a merge patch of ``status``).

    ``run`` is given only when recording a *finished* run: then revisions,
    ``lastRun``, ``history`` and ``plan`` are updated too.
    """
    existing: Sequence[Condition] = current.get("conditions") or []
    patch: JsonDict = {
        "phase": str(verdict.phase),
        "observedGeneration": generation,
        "conditions": merge(existing, verdict.desired_conditions(), generation=generation, now=now),
    }
    if run is not None and run.finished:
        patch.update(_run_fields(current=current, run=run, verdict=verdict))
    return patch


def is_noop(*, current: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
    """True when writing ``patch`` would change nothing."""
    return all(current.get(key) == value for key, value in patch.items())


# -- verdicts -----------------------------------------------------------------------


def _success(run: Run, result: Result) -> Verdict:
    start, end = heads_text(result.from_revisions), heads_text(result.to_revisions)
    steps = len(result.applied) or len(result.plan)
    if run.command == "plan":
        plan = f"{steps} step(s) from {start} to {run.target}"
        if run.mode == "Apply" and run.approval_required:
            if not result.plan:
                return Verdict(
                    phase=Phase.SUCCEEDED,
                    reason=Reason.MIGRATED,
                    ready=True,
                    message=f"Already at {run.target} ({start}); nothing to approve",
                )
            return Verdict(
                phase=Phase.AWAITING_APPROVAL,
                reason=OperatorReason.AWAITING_APPROVAL,
                message=f"{plan} await approval: review status.plan, then set "
                f"spec.approval.planHash to {result.plan_hash}",
            )
        # Ready: the plan the resource asks for is there (Argo CD and `kubectl
        # wait` see a healthy resource); the phase says the database did not move.
        return Verdict(
            phase=Phase.PLANNED,
            reason=OperatorReason.PLANNED,
            ready=True,
            message=f"Planned {plan}, nothing applied (hash {result.plan_hash}); "
            "set spec.mode to Apply to apply it",
        )
    if result.dry_run or run.mode == "DryRun":
        return Verdict(
            phase=Phase.PLANNED,
            reason=OperatorReason.PLANNED,
            ready=True,
            message=f"Dry run succeeded: {steps} step(s) from {start} to {end} "
            "ran and were rolled back; nothing applied",
        )
    baseline = BaselineDetails.from_details(result.details)
    stamped = baseline is not None and baseline.outcome == "stamped"
    if not result.applied:
        return Verdict(
            phase=Phase.SUCCEEDED,
            reason=Reason.MIGRATED,
            ready=True,
            message=f"Stamped at spec.baseline {end}: the database had no version table; "
            "nothing else to do"
            if stamped
            else f"At {end}; nothing to do",
        )
    seconds = sum(s.seconds or 0.0 for s in result.applied)
    noops = sum(1 for s in result.applied if s.noop)
    return Verdict(
        phase=Phase.SUCCEEDED,
        reason=Reason.MIGRATED,
        ready=True,
        message=f"Migrated ({result.direction}) from {start} to {end}: "
        f"{steps} step(s) in {_seconds_text(seconds)}"
        + (f", {noops} of them no-ops (their downgrade() is only pass)" if noops else "")
        + (
            f"; the database had no version table and was stamped at spec.baseline "
            f"{heads_text(baseline.revisions)} first"
            if stamped and baseline is not None
            else ""
        )
        + "".join(f". Warning: {w}" for w in result.warnings),
    )


def _seconds_text(seconds: float) -> str:
    """``<0.01s``, ``0.04s``, ``1.3s``, ``95s``: two significant digits where it matters.

    A run faster than the resolution says so rather than claiming it took no time.
    """
    if seconds < 0.005:
        return "<0.01s"
    if seconds < 1:
        return f"{seconds:.2f}s"
    return f"{seconds:.1f}s" if seconds < 60 else f"{seconds:.0f}s"


#: How a person runs a failed resource again, once the cause is fixed.
RETRY_HINT = (
    "Once fixed, a change of the Secret, the scripts or the spec runs it again, "
    "as does a new value of the annotation revisor.dev/retry"
)


def _failure_message(
    run: Run, result: Result, reason: str, lock_timeout_seconds: int | None
) -> str:
    # The engine's own hint speaks of CLI flags; the operator says it in spec fields.
    error = _HINT.sub("", result.error or "no error message")
    at = heads_text(result.to_revisions or result.from_revisions)
    waited = f" within {lock_timeout_seconds}s" if lock_timeout_seconds is not None else ""
    messages: dict[str, str] = {
        Reason.ROLLED_BACK: f"Migration to {run.target} failed and was rolled back to "
        f"{heads_text(result.from_revisions)}: {error}",
        Reason.MIGRATION_FAILED: f"Migration to {run.target} failed; the database is at {at}: "
        f"{error}",
        Reason.ROLLBACK_FAILED: f"Migration to {run.target} failed and rolling it back failed too; "
        f"the database is at {at} and needs a human: {error}",
        Reason.ROLLBACK_INCOMPLETE: f"Migration to {run.target} failed and could be rolled back "
        f"only part of the way; the database is at {at}: {error}",
        Reason.LOCK_TIMEOUT: f"The database's migration lock was not acquired{waited}: another "
        f"migration is running. Raise spec.lock.timeoutSeconds or retry later: {error}",
        Reason.DATABASE_UNREACHABLE: f"Cannot connect to the database: {error}. Check the "
        "Secret's URL, the network and the credentials",
        Reason.INVALID_TARGET: f"The engine rejected target {run.target!r}: {error}",
        Reason.INVALID_SCRIPTS: f"The revision scripts cannot be loaded: {error}. Fix them in "
        "the ConfigMap or image",
        Reason.NOT_REVERSIBLE: f"Cannot move to {run.target}: {error}",
        Reason.PLAN_CHANGED: f"The approved plan no longer matches: {error}. Approve the new plan "
        "hash in spec.approval.planHash",
        Reason.NEEDS_BASELINE: f"{error}. Set spec.baseline to the revision the "
        "existing schema matches (head for a database create_all() built from the current "
        "models); it is ignored once the database has a version table",
    }
    message = messages.get(reason, f"{reason}: {error}")
    if reason in _SPEC_FIXES:
        return message
    return f"{message}. {RETRY_HINT}"


#: Failures a new run of the same spec cannot cure: the message says what to change.
_SPEC_FIXES = frozenset(
    {Reason.INVALID_TARGET, Reason.PLAN_CHANGED, Reason.NOT_REVERSIBLE, Reason.NEEDS_BASELINE}
)
_HINT = re.compile(r"\s*\bhint: .*$", re.DOTALL)


def _verdict_without_result(run: Run) -> Verdict:
    state = run.container
    if run.succeeded:
        # The engine always leaves its result; a Job complete without one was
        # completed by something else (a pod the Job adopted): unknown, not done.
        return Verdict(
            phase=Phase.FAILED,
            reason=OperatorReason.JOB_FAILED,
            failed=True,
            message=_clean(
                f"Job {run.job} completed, but no pod running the engine left its result: "
                "the database may be anywhere (revisor current tells). " + RETRY_HINT
            ),
        )
    parts = [f"Job {run.job} failed"]
    if run.failure_reason:
        parts[0] += f" ({run.failure_reason}: {run.failure_message or 'no message'})"
    code = ExitCode.from_code(state.exit_code) if state and state.exit_code is not None else None
    if state and (state.terminated_reason or state.exit_code is not None):
        parts.append(
            f"container {state.terminated_reason or 'terminated'} with exit code {state.exit_code}"
        )
    elif state and state.waiting_reason:
        parts.append(f"its pod was waiting: {state.waiting_reason}: {state.waiting_message or ''}")
    # No pod at all: a deleted pod (kubectl delete, a drain) takes the engine's result along.
    parts.append(
        "the engine left no result"
        if state is not None
        else "no pod is left to read the engine's result from (a deleted pod takes it along)"
    )
    if state and state.message:
        parts.append(f"last output: {state.message.strip()}")
    parts.append(RETRY_HINT)
    reason = (
        code.reason if code is not None and code is not ExitCode.OK else OperatorReason.JOB_FAILED
    )
    return Verdict(phase=Phase.FAILED, reason=reason, message=_clean("; ".join(parts)), failed=True)


# -- recorded runs ------------------------------------------------------------------


def _run_fields(*, current: Mapping[str, Any], run: Run, verdict: Verdict) -> JsonDict:
    result = run.result
    last = _last_run(run, verdict)
    history = [_summary(last)] + [
        h for h in current.get("history") or [] if h.get("job") != run.job
    ]
    fields: JsonDict = {"lastRun": last, "history": history[:HISTORY_LIMIT]}
    if result is None:
        return fields
    changes_database = run.command != "plan" and not result.dry_run
    # The engine read the version table (it ran, under the lock, or succeeded):
    # its revisions are the truth, base included; a run that never reached the
    # database (unreachable, bad input) says nothing about where it is.
    if result.exit_code is ExitCode.OK or result.started_at is not None:
        at = result.to_revisions if changes_database else result.from_revisions
        fields["currentRevision"] = heads_text(at)
    if changes_database and result.direction != "none" and result.applied:
        fields["previousRevision"] = heads_text(result.from_revisions)
    if result.exit_code is ExitCode.OK and result.to_revisions:
        fields["targetRevision"] = heads_text(result.to_revisions)
    else:
        fields["targetRevision"] = run.target
    if run.command == "plan" or result.plan_hash:
        fields["plan"] = {
            "hash": result.plan_hash,
            "steps": [_step(s, with_seconds=False) for s in result.plan],
            "job": run.job,
        }
    return fields


def _last_run(run: Run, verdict: Verdict) -> JsonDict:
    result = run.result
    state = run.container
    out: JsonDict = {
        "job": run.job,
        "desiredRun": run.desired or run.job,
        "secretVersion": run.secret_version or None,
        "command": run.command,
        "generation": run.generation,
        "phase": str(verdict.phase),
        "reason": verdict.reason,
        "message": verdict.message,
        "startedAt": (result.started_at if result else None) or run.started_at,
        "finishedAt": (result.finished_at if result else None) or run.completed_at,
    }
    exit_code = result.exit_code if result else (state.exit_code if state else None)
    if exit_code is not None:
        out["exitCode"] = int(exit_code)
    if result is not None:
        out.update(
            {
                "direction": result.direction,
                "from": list(result.from_revisions),
                "to": list(result.to_revisions),
                "applied": [_step(s, with_seconds=True) for s in result.applied],
                "dryRun": result.dry_run,
            }
        )
        if result.error:
            out["error"] = _clean(result.error)
        if result.warnings:
            out["warnings"] = [_clean(w) for w in result.warnings]
    if run.log and verdict.failed:
        # The evidence outlives the Job and its pod (see .progress).
        out["logTail"] = log_tail(run.log)
    return {k: v for k, v in out.items() if v is not None}


def _summary(last: Mapping[str, Any]) -> JsonDict:
    keep = (
        "job",
        "desiredRun",
        "command",
        "generation",
        "reason",
        "direction",
        "from",
        "to",
        "exitCode",
        "startedAt",
        "finishedAt",
    )
    out = {k: last[k] for k in keep if k in last}
    out["steps"] = len(last.get("applied") or [])
    return out


def _step(step: Step, *, with_seconds: bool) -> JsonDict:
    out: JsonDict = {"revision": step.revision, "direction": step.direction}
    if step.description:
        out["description"] = step.description
    if step.noop:
        out["noop"] = True
    if with_seconds and step.seconds is not None:
        out["seconds"] = step.seconds
    return out


def _clean(message: str) -> str:
    return shorten(redact(message), limit=MESSAGE_LIMIT)
