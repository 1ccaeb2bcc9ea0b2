"""What a run did: exit codes, reasons, and the result document.

The engine's answer is a :class:`Result` serialised to at most
:data:`MAX_RESULT_BYTES`, so that it fits a Kubernetes termination message
(the kubelet keeps 4096 bytes and truncates the rest). Every exit code maps
to one :class:`Reason`; finer reasons (``InvalidTarget`` for exit code 2)
travel in the document.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from revisor.contract.schemas import OPAQUE_DETAILS

RESULT_SCHEMA = "revisor.dev/result/v1"
MAX_RESULT_BYTES = 4096

Direction = Literal["upgrade", "downgrade", "stamp", "none"]


class Reason(enum.StrEnum):
    """Why a run ended as it did: the condition reasons the engine can name.

    Each exit code has one (:attr:`ExitCode.reason`); the rest are finer
    words for the same codes. The operator adds its own for what only it
    can see (a missing Secret, a rollout), never respelling these.
    """

    MIGRATED = "Migrated"
    #: A plan was computed; nothing was changed.
    PLANNED = "Planned"
    INTERNAL_ERROR = "InternalError"
    INVALID_INPUT = "InvalidInput"
    INVALID_TARGET = "InvalidTarget"
    INVALID_SCRIPTS = "InvalidScripts"
    NOT_REVERSIBLE = "NotReversible"
    PLAN_CHANGED = "PlanChanged"
    LOCK_TIMEOUT = "LockTimeout"
    MIGRATION_FAILED = "MigrationFailed"
    ROLLED_BACK = "RolledBack"
    ROLLBACK_FAILED = "RollbackFailed"
    #: Asked to stop (SIGTERM), the run stopped between two revisions.
    INTERRUPTED = "Interrupted"
    #: The rollback stopped at a revision that cannot be downgraded.
    ROLLBACK_INCOMPLETE = "RollbackIncomplete"
    DATABASE_UNREACHABLE = "DatabaseUnreachable"
    MISMATCH = "Mismatch"
    #: A revision failed after some of its statements had committed on their
    #: own (DDL on MySQL/MariaDB): the database holds part of it.
    PARTIALLY_APPLIED = "PartiallyApplied"
    #: ``drift`` (exit 7): the live schema differs from the snapshot recorded
    #: for the database's revision (:class:`~revisor.contract.DriftDetails`).
    DRIFTED = "Drifted"
    #: ``drift`` (exit 0): the live schema is the one recorded for its revision.
    NO_DRIFT = "NoDrift"
    #: ``drift --accept HASH`` (exit 0): the schema differs from the recorded
    #: one, and HASH, the live schema's, says a person acknowledged that.
    DRIFT_ACCEPTED = "DriftAccepted"
    #: ``drift --record`` (exit 0): the live schema is now the one recorded
    #: for the database's revision.
    SNAPSHOT_RECORDED = "SnapshotRecorded"
    #: ``drift`` (exit 2): no schema was recorded for the database's revision,
    #: so there is nothing to compare with (``drift --record`` records one).
    NO_SNAPSHOT = "NoSnapshot"
    #: ``upgrade``/``apply``/``plan`` (exit 2): the database has no version
    #: table, yet the first planned revision would create objects it already
    #: has (a database made by ``metadata.create_all()``): ``--baseline REV``.
    NEEDS_BASELINE = "NeedsBaseline"
    #: ``wait-for`` (exit 0): the database is at (or past) the awaited revision.
    AT_REVISION = "AtRevision"
    #: ``wait-for`` (exit 9): the database did not get there within ``--timeout``.
    WAIT_TIMEOUT = "WaitTimeout"
    #: ``schemas`` (exit 0): a page of the names the query returned
    #: (:class:`~revisor.contract.SchemaPage`).
    SCHEMAS_LISTED = "SchemasListed"


class ExitCode(enum.IntEnum):
    """Process exit codes; each maps to one condition reason on the resource."""

    OK = 0
    INTERNAL = 1
    BAD_INPUT = 2
    LOCK_TIMEOUT = 3
    MIGRATION_FAILED = 4
    ROLLBACK_FAILED = 5
    UNREACHABLE = 6
    MISMATCH = 7
    #: A revision failed half-way where DDL is not transactional: a person
    #: must finish or undo it (then ``revisor stamp``); running again would not.
    PARTIALLY_APPLIED = 8
    #: ``wait-for`` gave up: the database was reachable but did not reach the
    #: awaited revision within ``--timeout`` (unreachable throughout: 6).
    WAIT_TIMEOUT = 9

    @property
    def reason(self) -> Reason:
        """The CamelCase reason the operator puts on conditions and Events."""
        return _REASONS[self]

    @classmethod
    def from_code(cls, code: int) -> ExitCode | None:
        """The exit code as a member, or None for codes outside the contract."""
        try:
            return cls(code)
        except ValueError:
            return None


_REASONS = {
    ExitCode.OK: Reason.MIGRATED,
    ExitCode.INTERNAL: Reason.INTERNAL_ERROR,
    ExitCode.BAD_INPUT: Reason.INVALID_INPUT,
    ExitCode.LOCK_TIMEOUT: Reason.LOCK_TIMEOUT,
    ExitCode.MIGRATION_FAILED: Reason.MIGRATION_FAILED,
    ExitCode.ROLLBACK_FAILED: Reason.ROLLBACK_FAILED,
    ExitCode.UNREACHABLE: Reason.DATABASE_UNREACHABLE,
    ExitCode.MISMATCH: Reason.MISMATCH,
    ExitCode.PARTIALLY_APPLIED: Reason.PARTIALLY_APPLIED,
    ExitCode.WAIT_TIMEOUT: Reason.WAIT_TIMEOUT,
}


@dataclass(frozen=True)
class Step:
    """One revision applied (or to be applied) in one direction.

    ``noop`` marks a downgrade whose ``downgrade()`` is only ``pass``: Alembic
    runs it (the version moves) but the revision's changes stay.
    """

    revision: str
    direction: Direction
    description: str = ""
    seconds: float | None = None
    noop: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"revision": self.revision, "direction": self.direction}
        if self.description:
            out["description"] = self.description
        if self.seconds is not None:
            out["seconds"] = round(self.seconds, 3)
        if self.noop:
            out["noop"] = True
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Step:
        seconds = data.get("seconds")
        return cls(
            revision=str(data["revision"]),
            direction=data.get("direction", "upgrade"),
            description=str(data.get("description", "")),
            seconds=float(seconds) if seconds is not None else None,
            noop=bool(data.get("noop", False)),
        )


@dataclass(frozen=True)
class Result:
    """What one engine run did. Serialised as ``revisor.dev/result/v1``.

    ``from_revisions``/``to_revisions`` are lists because a database with
    branches can sit at several heads at once.
    """

    command: str
    exit_code: ExitCode
    direction: Direction = "none"
    target: str | None = None
    from_revisions: tuple[str, ...] = ()
    to_revisions: tuple[str, ...] = ()
    applied: tuple[Step, ...] = ()
    plan: tuple[Step, ...] = ()
    plan_hash: str | None = None
    error: str | None = None
    rolled_back: bool = False
    dry_run: bool = False
    started_at: str | None = None
    finished_at: str | None = None
    engine_version: str | None = None
    runner: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    #: Things a person should know though the run went on (an env.py not used,
    #: an INVALID index found), each one sentence.
    warnings: tuple[str, ...] = ()
    #: A finer reason than the exit code's, e.g. InvalidTarget for exit code 2.
    detail_reason: str | None = None

    def with_text(self, clean: Callable[[str], str]) -> Result:
        """This result with ``clean`` applied to every free-text value.

        Free text is what a person or a revision wrote (errors, warnings,
        step descriptions, details); the document's own words (schema,
        reason, command, revision ids) are left alone, so a secret that
        happens to equal one of them (a database user named "revisor")
        cannot garble the document. So is data in details that is not text
        (:data:`~revisor.contract.schemas.OPAQUE_DETAILS`: compressed names).
        """
        return replace(
            self,
            error=clean(self.error) if self.error is not None else None,
            warnings=tuple(clean(w) for w in self.warnings),
            applied=tuple(replace(s, description=clean(s.description)) for s in self.applied),
            plan=tuple(replace(s, description=clean(s.description)) for s in self.plan),
            details={
                k: v if k in OPAQUE_DETAILS else _cleaned(v, clean) for k, v in self.details.items()
            },
            runner=clean(self.runner) if self.runner is not None else None,
        )

    @property
    def reason(self) -> str:
        """The finest reason known: the engine's own word, else the exit code's."""
        if self.detail_reason:
            return self.detail_reason
        if self.rolled_back and self.exit_code is ExitCode.MIGRATION_FAILED:
            return Reason.ROLLED_BACK
        return self.exit_code.reason

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": RESULT_SCHEMA,
            "command": self.command,
            "exitCode": int(self.exit_code),
            "reason": self.reason,
            "direction": self.direction,
            "from": list(self.from_revisions),
            "to": list(self.to_revisions),
            "applied": [s.to_json() for s in self.applied],
        }
        optional: dict[str, Any] = {
            "target": self.target,
            "error": self.error,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "engineVersion": self.engine_version,
            "runner": self.runner,
            "planHash": self.plan_hash,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        if self.plan or self.plan_hash:
            out["plan"] = [s.to_json() for s in self.plan]
        if self.rolled_back:
            out["rolledBack"] = True
        if self.dry_run:
            out["dryRun"] = True
        if self.warnings:
            out["warnings"] = list(self.warnings)
        if self.details:
            out["details"] = dict(self.details)
        return out

    def to_json(self, *, limit: int = MAX_RESULT_BYTES) -> str:
        """Compact JSON of at most ``limit`` bytes, shortening long parts first.

        Lists are cut from the middle of the run's story outward (the first
        and last steps are the useful ones) and their full length is kept in
        ``appliedTotal`` / ``planTotal`` so nothing is silently lost.
        """
        data = self.to_dict()
        text = _dumps(data)
        if len(text.encode()) <= limit:
            return text
        # The error is what a person reads first: keep its head, then make
        # room by keeping the first steps of long lists, with their totals.
        if "error" in data:
            data["error"] = _truncate(str(data["error"]), 1024)
        for keep in (50, 20, 10, 5, 2, 1, 0):
            for key in ("plan", "applied"):
                items = data.get(key)
                if isinstance(items, list) and len(items) > keep:
                    data[f"{key}Total"] = data.get(f"{key}Total", len(items))
                    data[key] = items[:keep]
            # Lists in details (drift's differences) shrink the same way
            # before details would be dropped whole: their other keys (the
            # schema's hashes) are what the operator acts on.
            details = data.get("details")
            if isinstance(details, dict):
                for key, items in list(details.items()):
                    if isinstance(items, list) and len(items) > keep:
                        details.setdefault(f"{key}Total", len(items))
                        details[key] = items[:keep]
            text = _dumps(data)
            if len(text.encode()) <= limit:
                return text
        data.pop("details", None)
        text = _dumps(data)
        while len(text.encode()) > limit and len(data.get("error", "")) > 80:
            data["error"] = _truncate(data["error"], len(data["error"]) // 2)
            text = _dumps(data)
        return text

    @classmethod
    def from_json(cls, text: str) -> Result:
        """Parse a result document; raises :class:`ValueError` if it is not one."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON result document: {exc}") from exc
        if not isinstance(data, dict) or data.get("schema") != RESULT_SCHEMA:
            raise ValueError(f"not a {RESULT_SCHEMA} document")
        code = ExitCode.from_code(int(data.get("exitCode", -1)))
        if code is None:
            raise ValueError(f"unknown exit code {data.get('exitCode')!r}")
        known = {
            "schema", "command", "exitCode", "reason", "direction", "from", "to", "applied",
            "target", "error", "startedAt", "finishedAt", "engineVersion", "runner",
            "planHash", "plan", "rolledBack", "dryRun", "details", "warnings",
        }  # fmt: skip
        reason = data.get("reason")
        default = cls(command="", exit_code=code, rolled_back=bool(data.get("rolledBack"))).reason
        details = dict(data.get("details") or {})
        details.update({k: v for k, v in data.items() if k not in known})
        return cls(
            command=str(data.get("command", "")),
            exit_code=code,
            direction=data.get("direction", "none"),
            target=data.get("target"),
            from_revisions=tuple(data.get("from") or ()),
            to_revisions=tuple(data.get("to") or ()),
            applied=tuple(Step.from_json(s) for s in data.get("applied") or ()),
            plan=tuple(Step.from_json(s) for s in data.get("plan") or ()),
            plan_hash=data.get("planHash"),
            error=data.get("error"),
            rolled_back=bool(data.get("rolledBack", False)),
            dry_run=bool(data.get("dryRun", False)),
            started_at=data.get("startedAt"),
            finished_at=data.get("finishedAt"),
            engine_version=data.get("engineVersion"),
            runner=data.get("runner"),
            details=details,
            warnings=tuple(str(w) for w in data.get("warnings") or ()),
            detail_reason=reason if isinstance(reason, str) and reason != default else None,
        )


def _cleaned(value: Any, clean: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, Mapping):
        return {k: _cleaned(v, clean) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_cleaned(v, clean) for v in value]
    return value


def _dumps(data: Mapping[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=False, default=str)


def _truncate(text: str, size: int) -> str:
    if len(text) <= size:
        return text
    return text[: max(size - 1, 0)] + "…"
