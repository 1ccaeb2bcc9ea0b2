"""Typed shapes of the Kubernetes bodies the operator reads and writes.

Only the fields the operator relies on are typed; everything else passes
through untouched as ``Any``. ``total=False`` because the API omits empty
fields.
"""

from __future__ import annotations

from typing import Any, TypedDict

JsonDict = dict[str, Any]


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    generation: int
    resourceVersion: str
    creationTimestamp: str
    deletionTimestamp: str
    labels: dict[str, str]
    annotations: dict[str, str]
    ownerReferences: list[OwnerReference]


class OwnerReference(TypedDict):
    apiVersion: str
    kind: str
    name: str
    uid: str
    controller: bool
    blockOwnerDeletion: bool


class Condition(TypedDict, total=False):
    type: str
    status: str
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: int


class Migration(TypedDict, total=False):
    """A ``DatabaseMigration`` as the API returns it."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: JsonDict
    status: JsonDict


class Job(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: JsonDict
    status: JsonDict


class Pod(TypedDict, total=False):
    metadata: ObjectMeta
    spec: JsonDict
    status: JsonDict
