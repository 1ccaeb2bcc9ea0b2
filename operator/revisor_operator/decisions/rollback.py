"""Rollback windows: when one opens, what it decides while open, and the run that undoes a deploy.

Recording a successful upgrade of a spec with ``rollback.deploymentRef``
opens a window (:func:`window_after`); recording any later run that changes
the database replaces it. While it is open, :func:`follow` judges the
Deployment's rollout (:func:`.rollout.judge`) and either keeps watching,
closes the window, or asks for a rollback run: the same spec pointed back
at the revision before the upgrade. How a rollout is judged lives in
:mod:`.rollout`; this module is the policy around it. Pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from revisor.contract import Reason

from .bodies import JsonDict
from .observe import Run
from .reasons import OperatorReason, Phase, WindowState
from .rollout import DeploymentStatus, Window, judge, open_window, parse_time
from .spec import Approval, MigrationSpec, Rollback
from .status import Event, Verdict, problem_verdict


@dataclass(frozen=True)
class WindowChange:
    """What recording a run does to ``status.rollout``: nothing, or a new value (None deletes)."""

    changed: bool
    rollout: JsonDict | None = None


def window_after(
    *,
    run: Run,
    verdict: Verdict,
    spec: MigrationSpec | None,
    current: Window | None,
    deployment: DeploymentStatus | None,
    now: datetime,
) -> WindowChange:
    """A successful upgrade opens a window; a rollback closes its window as RolledBack or
    Failed; any other run that changes the database ends the window it superseded; plans
    and dry runs leave it alone."""
    if run.is_rollback:
        if current is None:
            return WindowChange(changed=False)
        state = (
            WindowState.ROLLED_BACK if verdict.phase == Phase.ROLLED_BACK else WindowState.FAILED
        )
        return WindowChange(
            True, replace(current, state=state, message=verdict.message).to_status()
        )
    result = run.result
    if run.command == "plan" or result is None or result.dry_run or run.mode == "DryRun":
        return WindowChange(changed=False)
    target = spec.rollback.deployment if spec is not None else None
    upgraded = (
        verdict.phase == Phase.SUCCEEDED and result.direction == "upgrade" and bool(result.applied)
    )
    previous = ",".join(result.from_revisions) or "base"
    # After a first install there is no previous application to serve: going
    # back to base would drop every table for nothing, unless asked for.
    back_to_nothing = previous == "base" and not (spec is not None and spec.rollback.allow_base)
    if target is None or spec is None or not upgraded or back_to_nothing:
        return WindowChange(changed=current is not None)
    return WindowChange(
        True,
        open_window(
            deployment_name=target,
            deployment=deployment,
            job=run.job,
            generation=run.generation,
            previous=previous,
            window_seconds=spec.rollback.window_seconds,
            now=now,
            migration_started=parse_time(run.created_at),
        ).to_status(),
    )


@dataclass(frozen=True)
class RollbackRun:
    """The run that moves the database back: a spec, its fingerprint, why it runs."""

    spec: MigrationSpec
    fingerprint: str
    deployment: str
    reason: str


@dataclass(frozen=True)
class Followed:
    """What following an open window decided.

    ``rollout`` is the window to write (None: unchanged); ``rollback`` is set
    when the database must go back; ``verdict`` when the resource's state
    changes with it (a rollback starting, or one that cannot be expressed).
    """

    rollout: JsonDict | None = None
    event: Event | None = None
    rollback: RollbackRun | None = None
    verdict: Verdict | None = None


def follow(
    *,
    window: Window,
    deployment: DeploymentStatus | None,
    spec: MigrationSpec,
    status: Mapping[str, Any],
    now: datetime,
) -> Followed:
    """Judge the rollout in an open window: keep watching, close it, or roll back."""
    judgement = judge(window, deployment, now)
    if judgement.outcome == WindowState.WATCHING:
        followed = replace(window, message=judgement.message).to_status()
        return Followed() if followed == status.get("rollout") else Followed(rollout=followed)
    if judgement.outcome in (WindowState.SUCCEEDED, WindowState.EXPIRED):
        closed = replace(window, state=judgement.outcome, message=judgement.message)
        reason = (
            OperatorReason.ROLLOUT_SUCCEEDED
            if judgement.outcome == WindowState.SUCCEEDED
            else OperatorReason.ROLLOUT_NOT_FOUND
        )
        return Followed(
            rollout=closed.to_status(), event=Event("Normal", reason, judgement.message)
        )
    failed = replace(window, state=WindowState.FAILED, message=judgement.message).to_status()
    if "," in window.previous:
        verdict = problem_verdict(
            reason=Reason.ROLLBACK_FAILED,
            message=f"{judgement.message}. The database was at several heads "
            f"({window.previous}) before the upgrade; one target cannot express that, "
            "so nothing was rolled back: a human needs to look",
        )
        return Followed(
            rollout=failed, event=Event("Warning", verdict.reason, verdict.message), verdict=verdict
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
    return Followed(
        rollout=failed,
        rollback=RollbackRun(
            spec=back, fingerprint=digest, deployment=window.deployment, reason=judgement.message
        ),
    )
