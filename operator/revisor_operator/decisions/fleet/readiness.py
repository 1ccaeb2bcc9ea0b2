"""When is a ``DatabaseMigrationSet`` done? What ``revisor-operator wait dbmset/NAME`` judges.

As for one migration (:mod:`..readiness`), ``Ready=True`` alone is not
enough right after an apply: the status may still describe the previous
template, or the previous scripts (a ConfigMap edited, same spec). The set is
done when

* ``status.observedGeneration`` equals ``metadata.generation``,
* ``status.rollout.hash`` is the rollout the current template, scripts and
  marks make (:func:`expected_rollout`, the operator's own function), and
* that rollout succeeded: every target Ready.

It has failed when that rollout halted (failurePolicy), finished with
failed targets, or cannot start (an invalid spec, a failed schemas query
with no list to go on). Anything else is in progress. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..conditions import READY, find
from ..readiness import Progress
from ..spec import InvalidSpec
from .naming import rollout_hash
from .rollout import MARKS
from .spec import SetSpec, parse_set_spec
from .words import SetPhase, SetReason

_STOPPED = frozenset({SetPhase.HALTED, SetPhase.FAILED})


def parsed(body: Mapping[str, Any]) -> SetSpec | None:
    """The set's spec, or None when it does not parse."""
    try:
        return parse_set_spec(body.get("spec") or {})
    except InvalidSpec:
        return None


def expected_rollout(body: Mapping[str, Any], *, scripts: str) -> str | None:
    """The rollout hash the set's current spec and ``scripts`` make (None: invalid spec)."""
    spec = parsed(body)
    if spec is None:
        return None
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    marks = {k: str(annotations[k]) for k in MARKS if k in annotations}
    return rollout_hash(template=spec.template, scripts=scripts, annotations=marks)


def judge_set(  # noqa: PLR0911 - one return per outcome
    body: Mapping[str, Any], *, expected: str | None
) -> Progress:
    """Done, failed, or not yet, for the set's current spec and scripts.

    ``expected`` is :func:`expected_rollout` (None when it cannot be known yet,
    e.g. the scripts' ConfigMap does not exist).
    """
    meta = body.get("metadata") or {}
    status: Mapping[str, Any] = body.get("status") or {}
    generation = int(meta.get("generation") or 1)
    phase = str(status.get("phase") or SetPhase.PENDING)
    ready = find(status.get("conditions") or [], READY) or {}
    said = f"{phase}: {ready.get('message') or ready.get('reason') or 'no condition yet'}"
    if status.get("observedGeneration") != generation:
        return Progress(
            "Waiting", f"the operator has not observed generation {generation} yet ({said})"
        )
    if ready.get("reason") == SetReason.INVALID_SPEC:
        return Progress("Failed", said)
    rollout = (status.get("rollout") or {}).get("hash")
    if expected is None or rollout != expected:
        if phase == SetPhase.FAILED and ready.get("reason") == SetReason.SCHEMAS_QUERY_FAILED:
            return Progress("Failed", said)
        return Progress(
            "Waiting", f"the rollout of the current template and scripts has not started ({said})"
        )
    if phase == SetPhase.SUCCEEDED and ready.get("status") == "True":
        return Progress("Ready", said)
    if phase in _STOPPED:
        return Progress("Failed", said)
    return Progress("Waiting", said)
