"""How far a running Job is, and what a failed one said last: both read from its pod's log.

The engine's pod has no Kubernetes API access (no token, whatever its
ServiceAccount), so it cannot report progress anywhere; it prints it, one
JSON line per step (:mod:`revisor.contract.progress`), and the operator,
which may ``get pods/log``, reads the last lines of that log:

* while a Job runs, at most every ``REVISOR_PROGRESS_POLL_SECONDS`` (a timer
  that exists only while the phase is Running or Planning), the last
  :data:`PROGRESS_TAIL_LINES` lines and never more than
  :data:`PROGRESS_LIMIT_BYTES`: :func:`latest_progress` turns them into
  :class:`Progress` (``status.progress`` and the Message column:
  ``[37/120] 5e4f924ff96c Add PAUSED state … 12s``);
* once, when a failed run is recorded, the last :data:`TAIL_LINES` lines
  (at most :data:`TAIL_LIMIT_BYTES`): :func:`log_tail` keeps them in
  ``status.lastRun.logTail``, bounded and with passwords masked, so that the
  evidence outlives the Job (deleted a day later, or with the resource).

The kubelet applies ``tailLines`` first, then ``limitBytes`` from the start
of what is left: lines longer than the limit can cut the newest line off,
and then the newest progress seen is an older one. No line the engine
writes for a step comes near it.

Pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from revisor.contract import ProgressLine, parse_progress_line

from .bodies import JsonDict
from .redaction import redact, shorten

#: What one progress poll reads: the last lines, and at most this many bytes of them.
PROGRESS_TAIL_LINES = 20
PROGRESS_LIMIT_BYTES = 16 * 1024
#: What a failed run keeps of its log in ``status.lastRun.logTail``.
TAIL_LINES = 20
TAIL_LIMIT_BYTES = 32 * 1024
#: Each kept line at most (both ends kept: an error's cause is often last).
TAIL_LINE_CHARS = 400
#: A revision's description, as the Message column shows it.
DESCRIPTION_CHARS = 80

_STATES = {
    "plan": "planned",
    "step.started": "running",
    "step.applied": "applied",
    "step.failed": "failed",
}
# Terminal escapes and other control characters a revision may print.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class Progress:
    """Where a running Job is: step ``step`` of ``steps`` (0 of N once planned)."""

    job: str
    step: int
    steps: int
    #: ``planned``, ``running`` (the step runs), ``applied`` (it committed; the next one
    #: has not started yet) or ``failed``.
    state: str
    revision: str = ""
    description: str = ""
    direction: str = "upgrade"
    #: When the engine said so (RFC 3339, UTC): when the step started, committed or failed.
    since: str | None = None
    seconds: float | None = None

    @classmethod
    def from_line(cls, line: ProgressLine, *, job: str) -> Progress:
        return cls(
            job=job,
            step=line.index,
            steps=line.total,
            state=_STATES[line.event],
            revision=line.revision,
            description=_clean(line.description, DESCRIPTION_CHARS),
            direction=line.direction,
            since=_rfc3339(line.at),
            seconds=line.seconds,
        )

    def to_status(self) -> JsonDict:
        """``status.progress``."""
        out: JsonDict = {
            "job": self.job,
            "step": self.step,
            "steps": self.steps,
            "state": self.state,
            "revision": self.revision or None,
            "description": self.description or None,
            "direction": self.direction,
            "since": self.since,
            "seconds": self.seconds,
        }
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_status(cls, raw: Any, *, job: str) -> Progress | None:
        """The progress ``status.progress`` holds for ``job`` (None: none, or another Job's)."""
        if not isinstance(raw, Mapping) or raw.get("job") != job:
            return None
        step, steps = raw.get("step"), raw.get("steps")
        if not isinstance(step, int) or not isinstance(steps, int):
            return None
        seconds = raw.get("seconds")
        return cls(
            job=job,
            step=step,
            steps=steps,
            state=str(raw.get("state") or "running"),
            revision=str(raw.get("revision") or ""),
            description=str(raw.get("description") or ""),
            direction=str(raw.get("direction") or "upgrade"),
            since=raw.get("since") if isinstance(raw.get("since"), str) else None,
            seconds=float(seconds) if isinstance(seconds, int | float) else None,
        )

    def message(self, now: datetime) -> str:
        """``[37/120] 5e4f924ff96c Add PAUSED state … 12s`` (the elapsed time, while it runs)."""
        if self.state == "planned":
            return f"[0/{self.steps}] planned {self.steps} step(s)"
        arrow = "" if self.direction == "upgrade" else "(down) "
        label = f"[{self.step}/{self.steps}] {arrow}{self.revision}"
        if self.description:
            label += f" {self.description}"
        if self.state == "failed":
            return f"{label} … FAILED"
        if self.state == "applied":
            took = f" {self.seconds:.2f}s" if self.seconds is not None else ""
            return f"{label} …{took} done"
        since = _parse(self.since)
        if since is None:
            return f"{label} …"
        return f"{label} … {elapsed((now - since).total_seconds())}"


def latest_progress(log: str, *, job: str) -> Progress | None:
    """The newest progress line of ``log`` (a tail of the Job's pod log), if it has one."""
    for line in reversed(log.splitlines()):
        found = parse_progress_line(line)
        if found is not None:
            return Progress.from_line(found, job=job)
    return None


def elapsed(seconds: float) -> str:
    """``12s``, ``3m05s``, ``2h07m``: how long a step has run, to the second."""
    total = max(int(seconds), 0)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def log_tail(log: str, *, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` non-blank lines of ``log``, each readable, bounded and masked.

    The engine's step lines read as on a console (``23:24:11 [3/3] 3c9a1f0b2e44
    add orders.status … FAILED: <error>``), its other JSON lines as ``time
    level event key=value ...``; the result document (already in status) is
    left out; anything else (a revision's print, a traceback) is kept as
    written, its control characters dropped. Every line goes through
    :func:`.redaction.redact`: the engine masks what it knows, and this masks
    the shapes of credentials whoever printed them.
    """
    kept: list[str] = []
    for raw in reversed(log.splitlines()):
        text = _clean(_render(raw), TAIL_LINE_CHARS).strip()
        if text:
            kept.append(text)
        if len(kept) >= lines:
            break
    return kept[::-1]


def _render(line: str) -> str:
    text = line.strip()
    if not text.startswith("{") or text.startswith(_RESULT):
        return "" if text.startswith(_RESULT) else text
    step = parse_progress_line(text)
    if step is not None:
        return _step_text(step)
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        return text
    clock = _clock(str(data.pop("timestamp", "")))
    level = str(data.pop("level", ""))
    event = str(data.pop("event"))
    rest = " ".join(f"{k}={_value(v)}" for k, v in data.items())
    return " ".join(part for part in (clock, level, event, rest) if part)


#: The result document on stdout: it is in status already.
_RESULT = '{"schema":"revisor.dev/result/'


def _step_text(step: ProgressLine) -> str:
    clock = _clock(step.at or "")
    if step.event == "plan":
        return f"{clock} planned {step.total} step(s)".strip()
    arrow = "" if step.direction == "upgrade" else "(down) "
    label = f"[{step.index}/{step.total}] {arrow}{step.revision} {step.description}".rstrip()
    if step.event == "step.started":
        end = "started"
    elif step.event == "step.applied":
        end = f"{step.seconds:.2f}s" if step.seconds is not None else "done"
    else:
        end = f"FAILED: {step.error}" if step.error else "FAILED"
    return f"{clock} {label} … {end}".strip()


def _clock(stamp: str) -> str:
    return stamp[11:19] if len(stamp) >= 19 else stamp


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _clean(text: str, limit: int) -> str:
    return shorten(redact(_CONTROL.sub("", text)), limit=limit)


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _rfc3339(text: str | None) -> str | None:
    """The engine's microsecond timestamp as Kubernetes writes times (seconds, ``Z``)."""
    moment = _parse(text)
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
