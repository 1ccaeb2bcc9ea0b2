"""A set's child ``DatabaseMigration``: the body the set writes, and what it reads back.

:func:`child_body` is the whole child as the set wants it (server-side
applied, so a field the template dropped goes away): the template, the
target's database (and schema), the set's labels, the admission
annotations of :mod:`..admission`, and an owner reference, so that deleting
the set deletes its children (never a database).

:func:`summarize` is the other way: the few facts the set needs from a child
(is it admitted to the current rollout, has that run succeeded or failed, is
a Job running), small enough to keep for every child in memory. Whether the
child's run is the one its admission asks for is judged exactly as
``revisor-operator wait`` judges it (:func:`..readiness.judge_wait`).

Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ... import API_VERSION, KIND, SET_KIND
from ..bodies import JsonDict, Migration
from ..conditions import READY, find
from ..readiness import judge_wait
from ..reasons import OperatorReason, Phase
from ..reconcile import desired_run
from ..redaction import shorten
from ..spec import Database, InvalidSpec, PartsDatabase, UrlDatabase, parse_spec
from .naming import child_name, label_safe, spec_key
from .targets import Target
from .words import (
    ROLLOUT_ANNOTATION,
    SCRIPTS_ANNOTATION,
    SET_LABEL,
    SPEC_ANNOTATION,
    TARGET_ANNOTATION,
    TARGET_LABEL,
)

MESSAGE_CHARS = 300
#: A child that cannot run until someone acts, though no run of it failed.
_BLOCKED = frozenset({OperatorReason.SECRET_NOT_FOUND, OperatorReason.CONFIG_MAP_NOT_FOUND})

Outcome = Literal["Ready", "Failed", "Waiting"]
#: Where a target stands in the set's current rollout.
State = Literal["Pending", "Running", "Ready", "Failed"]


@dataclass(frozen=True)
class SetRef:
    """The set a child belongs to."""

    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class Rollout:
    """What the set admits children to now."""

    hash: str
    generation: int
    scripts: str


def child_spec(template: Mapping[str, Any], target: Target) -> JsonDict:
    """The child's spec: the template, its target's database and (for schemas) schema."""
    spec: JsonDict = {**template, "database": database_json(target.database)}
    if target.schema is not None:
        spec["schema"] = target.schema
    return spec


def child_body(
    *, owner: SetRef, template: Mapping[str, Any], target: Target, rollout: Rollout
) -> JsonDict:
    """The child of ``target`` admitted to ``rollout`` (a server-side apply body)."""
    spec = child_spec(template, target)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": child_name(set_name=owner.name, target=target.name),
            "namespace": owner.namespace,
            "labels": {SET_LABEL: label_safe(owner.name), TARGET_LABEL: label_safe(target.name)},
            "annotations": {
                TARGET_ANNOTATION: target.name,
                ROLLOUT_ANNOTATION: rollout.hash,
                SCRIPTS_ANNOTATION: rollout.scripts,
                SPEC_ANNOTATION: spec_key(spec),
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": SET_KIND,
                    "name": owner.name,
                    "uid": owner.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def database_json(database: Database) -> JsonDict:
    """``spec.database`` as the CRD spells it."""
    if isinstance(database, UrlDatabase):
        return {"urlSecretRef": {"name": database.url.secret, "key": database.url.key}}
    assert isinstance(database, PartsDatabase)
    ref: JsonDict = {"name": database.secret}
    ref.update({f"{_PART_FIELDS[part]}Key": key for part, key in database.keys.items()})
    out: JsonDict = {"secretRef": ref}
    if database.driver:
        out["driver"] = database.driver
    return out


_PART_FIELDS = {
    "host": "host",
    "port": "port",
    "name": "database",
    "user": "user",
    "password": "password",
}


@dataclass(frozen=True)
class Child:
    """What a set knows of one of its children."""

    name: str
    #: The uid of the set that controls it.
    set_uid: str
    target: str
    rollout: str
    spec_key: str
    outcome: Outcome
    #: A Job of it runs now (whatever rollout it serves).
    running: bool
    #: It cannot run until someone acts (a Secret or a key missing).
    blocked: bool
    phase: str
    reason: str
    message: str
    revision: str | None
    #: The Jobs its status has recorded: finished Jobs the set may clean up.
    recorded_jobs: frozenset[str]
    deleting: bool = False
    #: Its last run failed and a new one is due (its retry annotation or spec changed)
    #: but none has started: the child should be reconciled now.
    stale: bool = False

    def state(self, *, rollout: str, key: str) -> State:
        """Where this child's target stands in the rollout ``rollout`` with spec ``key``."""
        if self.rollout != rollout or self.spec_key != key or self.deleting:
            return "Pending"
        if self.outcome == "Ready":
            return "Ready"
        if self.outcome == "Failed" or self.blocked:
            return "Failed"
        return "Running"


def summarize(migration: Migration) -> Child | None:
    """The :class:`Child` ``migration`` is, or None when no set controls it."""
    meta = migration.get("metadata", {})
    owner = next(
        (
            ref
            for ref in meta.get("ownerReferences") or []
            if ref.get("kind") == SET_KIND and ref.get("controller")
        ),
        None,
    )
    if owner is None:
        return None
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    status: Mapping[str, Any] = migration.get("status") or {}
    progress = judge_wait(migration, expected_job=_expected_job(migration))
    ready = find(status.get("conditions") or [], READY) or {}
    phase = str(status.get("phase") or Phase.PENDING)
    current = status.get("observedGeneration") == meta.get("generation")
    return Child(
        name=meta.get("name", ""),
        set_uid=str(owner.get("uid", "")),
        target=annotations.get(TARGET_ANNOTATION, ""),
        rollout=annotations.get(ROLLOUT_ANNOTATION, ""),
        spec_key=annotations.get(SPEC_ANNOTATION, ""),
        outcome=progress.outcome,
        running=phase in (Phase.RUNNING, Phase.PLANNING),
        blocked=current and ready.get("reason") in _BLOCKED,
        phase=phase,
        reason=str(ready.get("reason") or ""),
        message=shorten(progress.message, limit=MESSAGE_CHARS),
        revision=status.get("currentRevision"),
        recorded_jobs=_recorded(status),
        deleting=bool(meta.get("deletionTimestamp")),
        stale=progress.outcome == "Waiting"
        and phase in (Phase.FAILED, Phase.ROLLED_BACK)
        and not meta.get("deletionTimestamp"),
    )


def _expected_job(migration: Migration) -> str | None:
    try:
        spec = parse_spec(migration.get("spec") or {})
    except InvalidSpec:
        return None
    annotations = migration.get("metadata", {}).get("annotations") or {}
    # The admitted scripts: a set's child is identified by its rollout, not the live files.
    return desired_run(migration, spec, scripts=annotations.get(SCRIPTS_ANNOTATION, ""))[0]


def _recorded(status: Mapping[str, Any]) -> frozenset[str]:
    jobs = {str(h.get("job")) for h in status.get("history") or [] if isinstance(h, Mapping)}
    last = (status.get("lastRun") or {}).get("job")
    if last:
        jobs.add(str(last))
    return frozenset(j for j in jobs if j and j != "None")
