"""The engine's progress lines: how far a run is, as the operator reads it from a Job's log.

A Job's pod has no Kubernetes API access (no token is mounted), so the
engine cannot write its progress anywhere the operator would read it; it
prints it. With ``--log-format json`` each event is one JSON object on one
line of stderr, and the events about a run's steps are part of the Job
contract: the operator tails the pod's log (``get pods/log``) while the Job
runs and shows how far it is. Their event names and keys are spelled here
once, for the engine's reporter (:func:`step_fields`) and the operator's
parser (:func:`parse_progress_line`).

A line the engine wrote for a step::

    {"index": 2, "total": 3, "revision": "9d2e7a11c0f3", "direction": "upgrade",
     "description": "create orders", "event": "step.started", "level": "info",
     "timestamp": "2026-12-06T23:24:11.651299Z"}

Parsing is lenient about what it ignores (any other line: what a revision
printed, a traceback, a line cut by a byte limit) and strict about what it
takes: the keys must have their types, or the line is not progress.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeGuard

from revisor.contract.results import Step

#: ``event`` of the line that lists a run's planned steps (``steps``: their number).
PLAN: Final = "plan"
#: ``event`` of a step's lines: it started, it committed, it failed.
STEP_STARTED: Final = "step.started"
STEP_APPLIED: Final = "step.applied"
STEP_FAILED: Final = "step.failed"
#: The key of each line's time (ISO 8601, UTC).
TIMESTAMP = "timestamp"
#: Lines longer than this are not parsed: no progress line is near it.
MAX_LINE_CHARS = 64 * 1024

ProgressEvent = Literal["plan", "step.started", "step.applied", "step.failed"]
_EVENTS: tuple[ProgressEvent, ...] = (PLAN, STEP_STARTED, STEP_APPLIED, STEP_FAILED)


@dataclass(frozen=True)
class ProgressLine:
    """One progress event: step ``index`` of ``total`` (``index`` 0 for the plan)."""

    event: ProgressEvent
    index: int
    total: int
    revision: str = ""
    direction: str = "upgrade"
    description: str = ""
    #: When the engine wrote the line (ISO 8601 as written), if it said.
    at: str | None = None
    #: How long the step took (``step.applied``), or the failed step's error.
    seconds: float | None = None
    error: str | None = None


def step_fields(index: int, total: int, step: Step) -> dict[str, Any]:
    """The keys of a step's line besides ``event`` (and the logger's level and timestamp)."""
    return {"index": index, "total": total, **step.to_json()}


def plan_fields(steps: int, *, dry_run: bool, revisions: list[str]) -> dict[str, Any]:
    """The keys of the plan's line besides ``event``."""
    return {"steps": steps, "dry_run": dry_run, "revisions": revisions}


def parse_progress_line(line: str) -> ProgressLine | None:
    """The progress event ``line`` holds, or None when it holds none."""
    data = _json_object(line)
    event = data.get("event") if data is not None else None
    if data is None or event not in _EVENTS:
        return None
    at = data.get(TIMESTAMP)
    at = at if isinstance(at, str) else None
    if event == PLAN:
        steps = data.get("steps")
        if not _count(steps) or steps < 0:
            return None
        return ProgressLine(event=PLAN, index=0, total=steps, at=at)
    return _step_line(data, event=event, at=at)


def _json_object(line: str) -> Mapping[str, Any] | None:
    text = line.strip()
    if not text.startswith("{") or len(text) > MAX_LINE_CHARS:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, Mapping) else None


def _step_line(
    data: Mapping[str, Any], *, event: ProgressEvent, at: str | None
) -> ProgressLine | None:
    index, total = data.get("index"), data.get("total")
    if not (_count(index) and _count(total)) or not 1 <= index <= total:
        return None
    texts = {key: data.get(key, "") for key in ("revision", "direction", "description")}
    if not all(isinstance(value, str) for value in texts.values()) or not texts["revision"]:
        return None
    seconds = data.get("seconds")
    error = data.get("error")
    return ProgressLine(
        event=event,
        index=index,
        total=total,
        revision=texts["revision"],
        direction=texts["direction"] or "upgrade",
        description=texts["description"],
        at=at,
        seconds=float(seconds) if _number(seconds) else None,
        error=error if isinstance(error, str) else None,
    )


def _count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
