"""Follow an application's rollout after a migration, and judge it.

After an upgrade succeeds, a ``DatabaseMigration`` with
``spec.rollback.deploymentRef`` opens a *rollback window*
(``status.rollout``): for ``spec.rollback.window`` the operator follows that
Deployment and, if its rollout fails, moves the database back to the
revision it was at before the upgrade.

The hard part is telling *this* rollout from the Deployment's past. When the
window opens (the moment the migration finished) the Deployment may be

* absent (``helm install``: the pre-install hook migrates before the
  Deployment exists);
* fully rolled out at its old spec (``helm upgrade``: pre-upgrade hooks run
  before the new Deployment spec is applied) — success of *that* rollout
  says nothing about the new code;
* fully rolled out *while the migration ran* (``kubectl apply`` of both at
  once, pods that did not need the new schema to become ready): that is
  this release's rollout, and it succeeded;
* mid-rollout (``kubectl apply`` of both at once): that rollout is the one
  to follow, and it may already have hit its progress deadline while its
  pods waited for the schema.

So the window remembers a *baseline*: the Deployment generation already
known good before the migration (its current generation if it was complete
before the migration's Job was created, one less if it was rolling out or
completed since, 0 if absent). A rollout counts as new when
the Deployment's generation is above the baseline. A progress deadline that
was already exceeded when the window opened gets the Deployment's own
``progressDeadlineSeconds`` again, counted from the window's start: pods
that only waited for the schema get a fair chance to become ready.

Verdicts:

* **Failed** — Progressing=False with reason ``ProgressDeadlineExceeded``
  (new since the window opened, or still there a full progress deadline
  after it), or the window ends while a new rollout is incomplete;
* **Succeeded** — a new rollout is complete: observedGeneration current,
  updatedReplicas == replicas == availableReplicas, no old pods left,
  Progressing reason ``NewReplicaSetAvailable``; or the window ends with the
  Deployment complete and no new rollout started (nothing failed);
* **Expired** — the window ends and the Deployment was never found: nothing
  is rolled back (a typo in deploymentRef must not downgrade a database);
* **Watching** — otherwise.

Pure: Deployment status + window + now -> verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from .bodies import JsonDict
from .reasons import WindowState

#: What :func:`judge` says of a rollout (a window's state, short of RolledBack).
RolloutOutcome = Literal[
    WindowState.WATCHING, WindowState.SUCCEEDED, WindowState.FAILED, WindowState.EXPIRED
]

DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
ROLLED_OUT = "NewReplicaSetAvailable"
#: Kubernetes' default ``progressDeadlineSeconds``.
DEFAULT_PROGRESS_DEADLINE = 600


@dataclass(frozen=True)
class DeploymentStatus:
    """What the operator needs from a Deployment to judge its rollout."""

    name: str
    generation: int
    observed_generation: int
    replicas: int
    updated: int
    available: int
    total: int
    progress_deadline_seconds: int = DEFAULT_PROGRESS_DEADLINE
    progressing: str | None = None
    progressing_reason: str | None = None
    progressing_message: str | None = None
    progressing_since: datetime | None = None
    #: When the Progressing condition last changed (for a complete rollout: when it completed).
    progressing_updated: datetime | None = None

    @property
    def complete(self) -> bool:
        """Rolled out: the current spec's pods are all updated and available, no old ones left."""
        return (
            self.observed_generation >= self.generation
            and self.updated == self.replicas
            and self.available == self.replicas
            and self.total == self.replicas
            and (self.replicas == 0 or self.progressing_reason == ROLLED_OUT)
        )

    @property
    def deadline_exceeded(self) -> bool:
        return self.progressing == "False" and self.progressing_reason == DEADLINE_EXCEEDED

    def describe(self) -> str:
        """The counts ``kubectl rollout status`` talks about.

        ``availableReplicas`` counts the old ReplicaSet's pods too: while old
        pods are left, "1/1 available" would read as the new one being up,
        so the old ones are named and the available count says it has them.
        """
        old = self.total - self.updated
        updated = f"{self.updated}/{self.replicas} updated"
        if old <= 0:
            return f"{updated}, {self.available}/{self.replicas} available"
        replicas = "replica" if old == 1 else "replicas"
        return (
            f"{updated}, {old} old {replicas} pending termination, "
            f"{self.available} available counting old ones"
        )


def deployment_status(body: Mapping[str, Any]) -> DeploymentStatus:
    """The :class:`DeploymentStatus` of a Deployment as the API returns it."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    progressing: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {}
    )
    replicas = spec.get("replicas")
    return DeploymentStatus(
        name=str(meta.get("name", "")),
        generation=int(meta.get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0),
        replicas=1 if replicas is None else int(replicas),
        updated=int(status.get("updatedReplicas") or 0),
        available=int(status.get("availableReplicas") or 0),
        total=int(status.get("replicas") or 0),
        progress_deadline_seconds=int(
            spec.get("progressDeadlineSeconds") or DEFAULT_PROGRESS_DEADLINE
        ),
        progressing=progressing.get("status"),
        progressing_reason=progressing.get("reason"),
        progressing_message=progressing.get("message"),
        progressing_since=_parse_time(progressing.get("lastTransitionTime")),
        progressing_updated=_parse_time(progressing.get("lastUpdateTime")),
    )


@dataclass(frozen=True)
class Window:
    """An open (or closed) rollback window, as kept in ``status.rollout``."""

    deployment: str
    #: The upgrade run (Job) that opened the window, and the generation it served.
    job: str
    generation: int
    #: Where a rollback goes: the revision(s) before that run, ``base`` for none.
    previous: str
    since: datetime
    until: datetime
    #: Deployment generations up to this one were rolled out before the migration.
    baseline: int
    state: WindowState = WindowState.WATCHING
    message: str = ""

    def to_status(self) -> JsonDict:
        return {
            "deployment": self.deployment,
            "state": str(self.state),
            "job": self.job,
            "generation": self.generation,
            "previousRevision": self.previous,
            "since": format_time(self.since),
            "until": format_time(self.until),
            "baselineGeneration": self.baseline,
            "message": self.message,
        }

    @classmethod
    def from_status(cls, raw: Mapping[str, Any] | None) -> Window | None:
        """The window recorded in ``status.rollout``; None if there is none (or it is garbled)."""
        if not raw:
            return None
        since = _parse_time(raw.get("since"))
        until = _parse_time(raw.get("until"))
        if since is None or until is None or not raw.get("deployment"):
            return None
        state = raw.get("state")
        return cls(
            deployment=str(raw["deployment"]),
            job=str(raw.get("job", "")),
            generation=int(raw.get("generation") or 0),
            previous=str(raw.get("previousRevision") or "base"),
            since=since,
            until=until,
            baseline=int(raw.get("baselineGeneration") or 0),
            state=WindowState(state) if state in set(WindowState) else WindowState.WATCHING,
            message=str(raw.get("message", "")),
        )


def open_window(
    *,
    deployment_name: str,
    deployment: DeploymentStatus | None,
    job: str,
    generation: int,
    previous: str,
    window_seconds: float,
    now: datetime,
    migration_started: datetime | None = None,
) -> Window:
    """The window a successful upgrade opens, with the baseline described in the module doc.

    ``migration_started`` is when the upgrade's Job was created: a rollout that
    completed after it belongs to this release.
    """
    completed = deployment.progressing_updated if deployment is not None else None
    during = (
        migration_started is not None and completed is not None and completed >= migration_started
    )
    if deployment is None:
        baseline = 0
    elif deployment.complete and not during:
        baseline = deployment.generation
    else:
        baseline = deployment.generation - 1
    until = now + timedelta(seconds=window_seconds)
    return Window(
        deployment=deployment_name,
        job=job,
        generation=generation,
        previous=previous,
        since=now,
        until=until,
        baseline=baseline,
        message=f"Following Deployment {deployment_name} until {format_time(until)}",
    )


@dataclass(frozen=True)
class Judgement:
    outcome: RolloutOutcome
    message: str


def judge(window: Window, deployment: DeploymentStatus | None, now: datetime) -> Judgement:
    """Whether the rollout that followed the migration failed, succeeded, or is still going."""
    name = window.deployment
    ended = now >= window.until
    if deployment is None:
        if ended:
            return Judgement(
                WindowState.EXPIRED,
                f"Deployment {name} was not found during the rollback window; "
                "nothing was rolled back",
            )
        return Judgement(WindowState.WATCHING, f"Waiting for Deployment {name} to appear")
    return _judge_present(window, deployment, now, ended=ended)


def _judge_present(
    window: Window, deployment: DeploymentStatus, now: datetime, *, ended: bool
) -> Judgement:
    name = window.deployment
    new_rollout = deployment.generation > window.baseline
    if deployment.deadline_exceeded:
        since = deployment.progressing_since
        fresh = since is not None and since >= window.since
        grace_over = now >= window.since + timedelta(seconds=deployment.progress_deadline_seconds)
        if new_rollout and (fresh or grace_over):
            detail = (deployment.progressing_message or DEADLINE_EXCEEDED).rstrip(".")
            return Judgement(
                WindowState.FAILED,
                f"Deployment {name} did not roll out: {DEADLINE_EXCEEDED} "
                f"({deployment.describe()}): {detail}",
            )
    if deployment.complete:
        if new_rollout:
            return Judgement(
                WindowState.SUCCEEDED,
                f"Deployment {name} rolled out generation {deployment.generation} "
                f"({deployment.describe()})",
            )
        if ended:
            return Judgement(
                WindowState.SUCCEEDED,
                f"Deployment {name} stayed available through the rollback window "
                "(no new rollout started)",
            )
        return Judgement(
            WindowState.WATCHING, f"Deployment {name} is available; waiting for its new rollout"
        )
    if ended:
        return Judgement(
            WindowState.FAILED,
            f"Deployment {name} did not roll out within the rollback window "
            f"({deployment.describe()})",
        )
    return Judgement(
        WindowState.WATCHING, f"Deployment {name} is rolling out ({deployment.describe()})"
    )


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC, seconds precision, as Kubernetes writes timestamps."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_time(text: Any) -> datetime | None:
    """A Kubernetes timestamp as an aware datetime, or None."""
    return _parse_time(text)
