"""The parts of a result's ``details`` the operator reads: drift, baseline, hash, partial runs.

The engine writes them with ``to_details()`` and the operator reads them
back with ``from_details()``, so the keys are spelled once, here. Reading is
lenient (a missing or malformed part is None), as a result document may come
from an older engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

#: At most this many differences travel in a result (their total in
#: ``differencesTotal``): the document must fit a termination message.
MAX_DIFFERENCES = 20
#: A difference longer than this is cut (with "…") in the result.
MAX_DIFFERENCE_CHARS = 120

#: ``details`` key of every run that recorded a schema snapshot
#: (``upgrade``/``apply``/``downgrade``, ``drift --record``): its sha256.
SCHEMA_HASH = "schemaHash"
#: ``details`` key of a run given ``--baseline`` (:class:`BaselineDetails`).
BASELINE = "baseline"
#: ``details`` key of a ``NeedsBaseline`` refusal (:class:`ExistingObjects`).
EXISTING_OBJECTS = "existingObjects"
#: ``details`` key of a ``PartiallyApplied`` run (:class:`PartiallyApplied`).
PARTIALLY_APPLIED = "partiallyApplied"
#: A failed statement or its error longer than this is cut (with "…") in the result.
MAX_STATEMENT_CHARS = 300

BaselineOutcome = Literal["stamped", "planned", "ignored"]


@dataclass(frozen=True)
class DriftDetails:
    """What ``revisor drift`` found; ``details`` of its result.

    ``hash`` is the live schema's sha256 and ``recorded_hash`` the recorded
    one's, both of the schema as compared (objects matched by ``--ignore``
    left out): they are equal exactly when nothing drifted. ``accepted``:
    ``--accept`` named ``hash``, so the drift is acknowledged (exit 0).
    ``differences`` are lines a person can act on (``+ index ix on t(a)``:
    in the database, not in the snapshot; ``-``: the other way round; ``~``:
    changed), at most :data:`MAX_DIFFERENCES` of ``total``.
    """

    drifted: bool
    hash: str
    recorded_hash: str | None = None
    #: When the compared snapshot was recorded (ISO 8601, UTC), and by what:
    #: the command of the run (``upgrade``, ``apply``, ...) or ``record``.
    recorded_at: str | None = None
    recorded_by: str | None = None
    differences: tuple[str, ...] = ()
    total: int = 0
    accepted: bool = False

    @classmethod
    def bounded(cls, *, differences: Sequence[str], **kw: Any) -> DriftDetails:
        """The details with ``differences`` cut to what a result can carry."""
        shown = tuple(_cut(d, MAX_DIFFERENCE_CHARS) for d in differences[:MAX_DIFFERENCES])
        return cls(differences=shown, total=len(differences), **kw)

    def to_details(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "drifted": self.drifted,
            "hash": self.hash,
            "recordedHash": self.recorded_hash,
            "recordedAt": self.recorded_at,
            "recordedBy": self.recorded_by,
            "differences": list(self.differences),
            "differencesTotal": self.total,
            "accepted": self.accepted,
        }
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_details(cls, details: Mapping[str, Any]) -> DriftDetails | None:
        """The drift part of a result's details; None when it has none."""
        if not isinstance(details.get("drifted"), bool) or not isinstance(details.get("hash"), str):
            return None
        differences = tuple(str(d) for d in details.get("differences") or ())
        total = details.get("differencesTotal")
        return cls(
            drifted=bool(details["drifted"]),
            hash=str(details["hash"]),
            recorded_hash=_text(details.get("recordedHash")),
            recorded_at=_text(details.get("recordedAt")),
            recorded_by=_text(details.get("recordedBy")),
            differences=differences,
            total=total if isinstance(total, int) else len(differences),
            accepted=details.get("accepted") is True,
        )


@dataclass(frozen=True)
class BaselineDetails:
    """What ``--baseline REV`` did: ``details["baseline"]``.

    ``stamped``: the database had no version table and was stamped at
    ``revisions`` before the run went on; ``planned``: the same, in a plan
    (nothing written); ``ignored``: the database has a version table, so the
    baseline did not apply.
    """

    revisions: tuple[str, ...]
    outcome: BaselineOutcome

    def to_details(self) -> dict[str, Any]:
        return {BASELINE: {"revisions": list(self.revisions), "outcome": self.outcome}}

    @classmethod
    def from_details(cls, details: Mapping[str, Any]) -> BaselineDetails | None:
        raw = details.get(BASELINE)
        if not isinstance(raw, Mapping) or raw.get("outcome") not in (
            "stamped",
            "planned",
            "ignored",
        ):
            return None
        revisions = tuple(str(r) for r in raw.get("revisions") or ())
        return cls(revisions=revisions, outcome=raw["outcome"])


@dataclass(frozen=True)
class ExistingObjects:
    """A ``NeedsBaseline`` refusal: what ``revision`` would create that the database has.

    ``details["existingObjects"]``: the revision, and the tables and indexes
    (``table.index``) it creates that already exist (the first few).
    """

    revision: str
    tables: tuple[str, ...] = ()
    indexes: tuple[str, ...] = ()

    def to_details(self) -> dict[str, Any]:
        return {
            EXISTING_OBJECTS: {
                "revision": self.revision,
                "tables": list(self.tables[:10]),
                "indexes": list(self.indexes[:10]),
            }
        }

    @classmethod
    def from_details(cls, details: Mapping[str, Any]) -> ExistingObjects | None:
        raw = details.get(EXISTING_OBJECTS)
        if not isinstance(raw, Mapping) or not isinstance(raw.get("revision"), str):
            return None
        return cls(
            revision=raw["revision"],
            tables=tuple(str(t) for t in raw.get("tables") or ()),
            indexes=tuple(str(i) for i in raw.get("indexes") or ()),
        )


@dataclass(frozen=True)
class PartiallyApplied:
    """A revision that failed after some of its statements had committed on their own.

    ``details["partiallyApplied"]`` of a ``PartiallyApplied`` run (exit 8;
    DDL on MySQL/MariaDB commits as it runs). ``statements`` are the first
    and last few of the ``committed`` ones (``… N more …`` between), each cut;
    ``failed_statement`` is the SQL that failed (None when the revision's
    Python failed between statements) and ``cause`` the database's or
    Python's words for why. Once a person has finished the revision by hand,
    ``revisor stamp`` takes ``stamp`` (the revision a finished upgrade is at,
    or the one below a finished downgrade).
    """

    revision: str
    committed: int
    statements: tuple[str, ...] = ()
    direction: str = "upgrade"
    failed_statement: str | None = None
    cause: str | None = None
    stamp: tuple[str, ...] = ()

    def to_details(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "revision": self.revision,
            "direction": self.direction,
            "statementsCommitted": self.committed,
            "statements": list(self.statements),
            "failedStatement": _cut(self.failed_statement, MAX_STATEMENT_CHARS)
            if self.failed_statement
            else None,
            "cause": _cut(self.cause, MAX_STATEMENT_CHARS) if self.cause else None,
            "stamp": list(self.stamp),
        }
        return {PARTIALLY_APPLIED: {k: v for k, v in out.items() if v is not None}}

    @classmethod
    def from_details(cls, details: Mapping[str, Any]) -> PartiallyApplied | None:
        """The partial application a result reports; None when it reports none."""
        raw = details.get(PARTIALLY_APPLIED)
        if not isinstance(raw, Mapping) or not isinstance(raw.get("revision"), str):
            return None
        committed = raw.get("statementsCommitted")
        statements = tuple(str(s) for s in raw.get("statements") or ())
        return cls(
            revision=raw["revision"],
            committed=committed if isinstance(committed, int) else len(statements),
            statements=statements,
            direction=str(raw.get("direction") or "upgrade"),
            failed_statement=_text(raw.get("failedStatement")),
            cause=_text(raw.get("cause")),
            stamp=tuple(str(r) for r in raw.get("stamp") or ()),
        )


def schema_hash(details: Mapping[str, Any]) -> str | None:
    """The hash of the schema snapshot a run recorded, if it recorded one."""
    return _text(details.get(SCHEMA_HASH))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _cut(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"
