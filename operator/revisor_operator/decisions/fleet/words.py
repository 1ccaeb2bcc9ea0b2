"""A set's words: where it stands (phases), why (reasons), and the names it marks objects with.

Each spelled once. The children's labels and annotations are
:mod:`..admission`'s: a child obeys them, the set writes them.
"""

from __future__ import annotations

import enum

from ..admission import (
    ROLLOUT_ANNOTATION,
    SCRIPTS_ANNOTATION,
    SET_LABEL,
    SPEC_ANNOTATION,
    TARGET_ANNOTATION,
    TARGET_LABEL,
)

__all__ = [
    "FIELD_MANAGER",
    "PURPOSE_LABEL",
    "ROLLOUT_ANNOTATION",
    "SCHEMAS_PURPOSE",
    "SCRIPTS_ANNOTATION",
    "SET_LABEL",
    "SPEC_ANNOTATION",
    "TARGET_ANNOTATION",
    "TARGET_LABEL",
    "SetPhase",
    "SetReason",
]

#: The field manager of the children the set writes (server-side apply).
FIELD_MANAGER = "revisor-fleet"
#: On a set's own Jobs (the schemas query): what they are for.
PURPOSE_LABEL = "revisor.dev/purpose"
SCHEMAS_PURPOSE = "schemas"


class SetPhase(enum.StrEnum):
    """``status.phase`` of a DatabaseMigrationSet: what ``kubectl get dbmset`` shows."""

    #: No target yet (no Secret matches, the schemas query has not answered), or the
    #: scripts' ConfigMap does not exist.
    PENDING = "Pending"
    #: Waves are being rolled out.
    PROGRESSING = "Progressing"
    #: spec.paused: no new target starts; running ones finish.
    PAUSED = "Paused"
    #: The failure policy stopped the rollout: no new target starts until the failed
    #: ones are Ready again (or the policy or template changes).
    HALTED = "Halted"
    #: Every target is Ready at the current rollout.
    SUCCEEDED = "Succeeded"
    #: Every target has run; some failed, within maxFailures (or the spec is invalid).
    FAILED = "Failed"


class SetReason(enum.StrEnum):
    """Condition and Event reasons of a DatabaseMigrationSet."""

    ROLLOUT_STARTED = "RolloutStarted"
    WAVE_STARTED = "WaveStarted"
    PROGRESSING = "Progressing"
    ROLLOUT_COMPLETE = "RolloutComplete"
    PAUSED = "Paused"
    RESUMED = "Resumed"
    HALTED = "Halted"
    #: The rollout ran every target; some failed, no more than maxFailures.
    TARGETS_FAILED = "TargetsFailed"
    NO_TARGETS = "NoTargets"
    INVALID_SPEC = "InvalidSpec"
    CONFIG_MAP_NOT_FOUND = "ConfigMapNotFound"
    #: The schemas query has not answered yet.
    QUERYING_SCHEMAS = "QueryingSchemas"
    SCHEMAS_QUERY_FAILED = "SchemasQueryFailed"
    TARGET_REMOVED = "TargetRemoved"
    #: Two targets would make the same child, or a child's name is taken.
    TARGET_CONFLICT = "TargetConflict"
