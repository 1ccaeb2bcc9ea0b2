"""The operator's words for where a resource stands: phases, its own reasons, window states.

Each spelled once. The engine's reasons (``Migrated``, ``LockTimeout``,
``RolledBack``, ...) come from :class:`revisor.contract.Reason` and are never
respelled here; these are the ones only the operator can see: a Job
running, a Secret missing, a Deployment's rollout.
"""

from __future__ import annotations

import enum


class Phase(enum.StrEnum):
    """``status.phase``: the one word ``kubectl get dbm`` shows."""

    PENDING = "Pending"
    PLANNING = "Planning"
    AWAITING_APPROVAL = "AwaitingApproval"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    #: A plan or a dry run finished: Ready, and the database did not move.
    PLANNED = "Planned"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"


class OperatorReason(enum.StrEnum):
    """Condition and Event reasons the operator adds to the engine's."""

    RUNNING = "Running"
    PLANNED = "Planned"
    AWAITING_APPROVAL = "AwaitingApproval"
    SECRET_NOT_FOUND = "SecretNotFound"  # noqa: S105 - a reason, not a password
    CONFIG_MAP_NOT_FOUND = "ConfigMapNotFound"
    INVALID_SPEC = "InvalidSpec"
    JOB_FAILED = "JobFailed"
    DEPLOY_FAILED = "DeployFailed"
    DEPLOY_FAILED_ROLLED_BACK = "DeployFailedRolledBack"
    ROLLOUT_SUCCEEDED = "RolloutSucceeded"
    ROLLOUT_NOT_FOUND = "RolloutNotFound"
    RECONCILE_ERROR = "ReconcileError"
    #: The resource was deleted while its Job ran, and the wait for it ran out.
    DELETE_TIMEOUT = "DeleteTimeout"
    #: A DatabaseMigrationSet's child whose scripts changed after the set admitted
    #: it: it runs when the set's rollout reaches it again.
    WAITING_FOR_SET = "WaitingForSet"


class WindowState(enum.StrEnum):
    """``status.rollout.state``: a rollback window's life."""

    WATCHING = "Watching"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"
    EXPIRED = "Expired"
    #: A newer generation of the spec replaced the run that opened the window.
    SUPERSEDED = "Superseded"
