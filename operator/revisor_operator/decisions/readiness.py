"""When is a ``DatabaseMigration`` ready? The judgement behind ``revisor-operator wait``.

A deploy pipeline (a Helm hook, a CI step) must not go on before the
database is at the *new* desired state, and must stop at once, with the
resource's own words, when that state failed. ``Ready=True`` alone is not
enough: right after ``kubectl apply`` the status still describes the
previous generation, and a change of the scripts alone (a ConfigMap edited,
same spec) changes no generation at all. So the resource is done only when

* ``status.observedGeneration`` equals ``metadata.generation``, and
* ``status.lastRun.job`` is the Job the operator would run for the current
  spec and scripts (:func:`.reconcile.desired_run`: the same deterministic
  name), and that run succeeded (phase Succeeded, Ready=True).

It has failed when that run failed (phase Failed or RolledBack), when its
rollout was rolled back (``status.rollout`` of that run RolledBack or
Failed), when the spec itself is unusable (InvalidSpec, InvalidTarget:
nothing will run until someone edits it), or when ``spec.drift.policy``
Block refuses the run over a drifted schema (Drifted: a person fixes the
schema or accepts the drift; a deploy should not sit waiting for that).
Anything else — a Job running, a
Secret not created yet — is still in progress, until the caller's timeout.

Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from revisor.contract import Reason

from .bodies import Migration
from .conditions import READY, find
from .reasons import OperatorReason, Phase, WindowState

#: Reasons that no run can change: the spec must be edited first.
SPEC_PROBLEMS = frozenset({OperatorReason.INVALID_SPEC, Reason.INVALID_TARGET})
#: Reasons a person must act on before the run can start (Block over drift).
REFUSALS = frozenset({Reason.DRIFTED})

Outcome = Literal["Waiting", "Ready", "Failed"]


@dataclass(frozen=True)
class Progress:
    """Where the resource stands, and the sentence to print about it."""

    outcome: Outcome
    message: str


def judge_wait(migration: Migration, *, expected_job: str | None) -> Progress:
    """Done, failed, or not yet — for the current generation and scripts (see the module doc).

    ``expected_job`` is the name of the run the current desired state needs
    (None when it cannot be computed, e.g. the ConfigMap does not exist yet).
    """
    meta = migration.get("metadata", {})
    status: Mapping[str, Any] = migration.get("status") or {}
    generation = int(meta.get("generation") or 1)
    phase = str(status.get("phase") or Phase.PENDING)
    ready = find(status.get("conditions") or [], READY) or {}
    said = _said(phase, ready)
    if status.get("observedGeneration") != generation:
        return Progress(
            "Waiting", f"the operator has not observed generation {generation} yet ({said})"
        )
    if ready.get("reason") in SPEC_PROBLEMS | REFUSALS:
        return Progress("Failed", said)
    return _judge_runs(status, phase=phase, ready=ready, said=said, expected_job=expected_job)


def _judge_runs(
    status: Mapping[str, Any],
    *,
    phase: str,
    ready: Mapping[str, Any],
    said: str,
    expected_job: str | None,
) -> Progress:
    last = status.get("lastRun") or {}
    rollout = status.get("rollout") or {}
    failed = phase in (Phase.FAILED, Phase.ROLLED_BACK)
    rolled_back = rollout.get("state") in (WindowState.ROLLED_BACK, WindowState.FAILED)
    if expected_job is not None and rollout.get("job") == expected_job and rolled_back and failed:
        return Progress("Failed", said)
    # A retry of the same desired state (after its Secret was fixed) is another Job.
    if expected_job is None or last.get("desiredRun", last.get("job")) != expected_job:
        return Progress("Waiting", said)
    if phase in (Phase.SUCCEEDED, Phase.PLANNED) and ready.get("status") == "True":
        return Progress("Ready", said)
    return Progress("Failed" if failed else "Waiting", said)


def _said(phase: str, ready: Mapping[str, Any]) -> str:
    """``Phase: message``: the resource's own sentence, its reason only when it adds a word."""
    message = str(ready.get("message") or "")
    reason = str(ready.get("reason") or "")
    if not message:
        return f"{phase}: {reason}" if reason else f"{phase}: no condition yet"
    if reason and reason != phase and reason not in message:
        return f"{phase} ({reason}): {message}"
    return f"{phase}: {message}"
