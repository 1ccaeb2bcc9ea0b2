"""Conditions the Kubernetes way: one entry per type, transitions time-stamped.

``Ready`` answers "is the database at the desired revision?" (what ``kubectl
wait --for=condition=Ready`` and Argo CD look at), ``Progressing`` "is a Job
running?", ``Failed`` "does a human need to act?", and, with ``spec.drift``,
``Drifted`` "has the schema changed outside the revisions?" (``Unknown``
while no check could tell, e.g. no snapshot was recorded). Following the API
conventions, ``lastTransitionTime`` changes only when a condition's status
changes, reasons are CamelCase and every condition carries the generation it
was computed for. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .bodies import Condition

READY = "Ready"
PROGRESSING = "Progressing"
FAILED = "Failed"
DRIFTED = "Drifted"
TYPES = (READY, PROGRESSING, FAILED, DRIFTED)


@dataclass(frozen=True)
class Desired:
    """What one condition should say now."""

    type: str
    #: True, False, or None for Unknown.
    status: bool | None
    reason: str
    message: str


def merge(
    existing: Sequence[Condition],
    desired: Sequence[Desired],
    *,
    generation: int,
    now: str,
) -> list[Condition]:
    """``existing`` updated with ``desired``; types not mentioned are kept as they were."""
    by_type = {c.get("type", ""): c for c in existing}
    out: list[Condition] = []
    for want in desired:
        status = "Unknown" if want.status is None else "True" if want.status else "False"
        before = by_type.pop(want.type, None)
        changed = before is None or before.get("status") != status
        since = before.get("lastTransitionTime", now) if before and not changed else now
        out.append(
            {
                "type": want.type,
                "status": status,
                "reason": want.reason,
                "message": want.message,
                "lastTransitionTime": since,
                "observedGeneration": generation,
            }
        )
    out.extend(by_type.values())
    order = {t: i for i, t in enumerate(TYPES)}
    return sorted(out, key=lambda c: order.get(c.get("type", ""), len(order)))


def find(conditions: Sequence[Condition], type_: str) -> Condition | None:
    """The condition of type ``type_``, if present."""
    return next((c for c in conditions if c.get("type") == type_), None)
