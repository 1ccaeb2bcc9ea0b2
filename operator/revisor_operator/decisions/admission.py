"""What a ``DatabaseMigration`` that a ``DatabaseMigrationSet`` made obeys: the set's admission.

A set's children share the set's scripts (one ConfigMap, say). Left to
themselves, every child would start a run the moment those scripts change,
all at once: no waves, no ``maxParallel``, no halt. So a child's desired
state is not "these scripts" but "the rollout the set admitted it to": the
set writes the rollout's hash and the scripts' fingerprint it admitted onto
the child (:data:`ROLLOUT_ANNOTATION`, :data:`SCRIPTS_ANNOTATION`), and

* the child's run identity (:func:`.reconcile.desired_run`) takes the
  rollout hash in place of the live scripts' fingerprint, so new scripts make
  no new run until the set admits the child to the rollout that has them;
* a child about to start a run whose live scripts are not the ones admitted
  (the ConfigMap changed since) holds instead, and says so.

The annotations' prefix is ``fleet.revisor.dev``, not ``revisor.dev``: kopf
stores its own state under ``revisor.dev/`` and leaves every annotation of
that prefix out of what it compares, so a change of those would never wake a
child's update handler. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .bodies import Migration

#: On a set's children (and their Jobs): the set, as a label value.
SET_LABEL = "revisor.dev/set"
#: On a set's children: the target, as a label value (the full name is an annotation).
TARGET_LABEL = "revisor.dev/target"
FLEET_PREFIX = "fleet.revisor.dev"
#: The target's name, whole (a label value holds 63 characters of a restricted alphabet).
TARGET_ANNOTATION = f"{FLEET_PREFIX}/target"
#: The hash of the rollout the set admitted this child to.
ROLLOUT_ANNOTATION = f"{FLEET_PREFIX}/rollout"
#: The fingerprint of the scripts that rollout runs.
SCRIPTS_ANNOTATION = f"{FLEET_PREFIX}/scripts"
#: The hash of the spec the set wrote (the API server adds defaults to what it stores).
SPEC_ANNOTATION = f"{FLEET_PREFIX}/spec"


@dataclass(frozen=True)
class Admission:
    """How a resource's run is identified, and whether it must hold instead of running."""

    #: What stands for the scripts in the run's identity.
    identity: str
    #: Why no run may start now (None: it may).
    hold: str | None = None
    #: The set that admitted it (None: a DatabaseMigration of its own).
    set_name: str | None = None


def admitted(migration: Migration, *, scripts: str) -> Admission:
    """The admission of ``migration`` given its live ``scripts`` fingerprint."""
    meta = migration.get("metadata", {})
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    rollout = annotations.get(ROLLOUT_ANNOTATION)
    if not rollout:
        return Admission(identity=scripts)
    owner = set_of(migration) or (meta.get("labels") or {}).get(SET_LABEL, "")
    allowed = annotations.get(SCRIPTS_ANNOTATION, "")
    if allowed and allowed != scripts:
        return Admission(
            identity=rollout,
            set_name=owner,
            hold=f"The revision files changed after DatabaseMigrationSet {owner} admitted this "
            "target: it runs them when the set's rollout reaches it again",
        )
    return Admission(identity=rollout, set_name=owner)


def set_of(migration: Migration) -> str | None:
    """The ``DatabaseMigrationSet`` that controls ``migration``, from its owner reference."""
    for ref in migration.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == "DatabaseMigrationSet" and ref.get("controller"):
            return str(ref.get("name", "")) or None
    return None
