"""The targets of a set, and the wave each one belongs to.

What the targets are depends on the spec and on what exists: the Secrets a
selector matches now (read as metadata only: names and labels, never
values), a list in the spec, or the last complete answer of a schemas
query. :func:`resolve` turns those into :class:`Target` values, sorted by
name; :func:`assign_waves` puts each in the first wave that chooses it (by
name or pattern, or by its Secret's labels), the others in the wave that
takes the rest. Within a wave, targets start in name order. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..spec import Database, UrlDatabase
from .spec import DatabaseListTargets, SchemaTargets, SecretSelectorTargets, SetSpec, Wave


@dataclass(frozen=True)
class Target:
    """One database (or one schema of a database) the set migrates."""

    name: str
    database: Database
    schema: str | None = None

    @property
    def secret(self) -> str:
        """The Secret of its database (a wave's selector reads that Secret's labels)."""
        database = self.database
        return database.url.secret if isinstance(database, UrlDatabase) else database.secret


@dataclass(frozen=True)
class Resolved:
    """The targets as they are now."""

    targets: tuple[Target, ...]
    #: True when this is all of them: a child whose target is not here may be removed.
    #: False while a schemas query has not answered (the list is not known yet).
    complete: bool = True
    #: Why there are no targets yet, when that is not the answer itself.
    waiting: str | None = None


def resolve(
    spec: SetSpec,
    *,
    secrets: Sequence[str] | None = None,
    schemas: Sequence[str] | None = None,
) -> Resolved:
    """The targets of ``spec``: ``secrets`` are the names of the Secrets its selector matches
    now, ``schemas`` the last complete answer of its query (None: none yet)."""
    targets = spec.targets
    if isinstance(targets, SecretSelectorTargets):
        found = sorted(set(secrets or ()))
        return Resolved(tuple(Target(name=s, database=targets.database(s)) for s in found))
    if isinstance(targets, DatabaseListTargets):
        listed = sorted(targets.databases, key=lambda d: d.name)
        return Resolved(tuple(Target(name=d.name, database=d.database) for d in listed))
    assert isinstance(targets, SchemaTargets)
    if targets.names is not None:
        names: Sequence[str] = targets.names
    elif schemas is not None:
        names = schemas
    else:
        return Resolved((), complete=False, waiting="the schemas query has not answered yet")
    return Resolved(
        tuple(Target(name=n, database=targets.database, schema=n) for n in sorted(set(names)))
    )


@dataclass(frozen=True)
class WavePlan:
    """One wave and the targets it holds, in the order they start."""

    index: int
    wave: Wave
    targets: tuple[Target, ...]

    @property
    def name(self) -> str:
        return self.wave.name

    @property
    def max_parallel(self) -> int:
        return self.wave.max_parallel


def assign_waves(
    spec: SetSpec,
    targets: Sequence[Target],
    *,
    selected: Mapping[int, frozenset[str]] | None = None,
) -> tuple[WavePlan, ...]:
    """Each target in the first wave that chooses it; the rest in the wave of the rest.

    ``selected`` maps the index of each wave that chooses by label selector to
    the names of the Secrets it matches (the API evaluates the selectors).
    """
    chosen: dict[int, list[Target]] = {i: [] for i in range(len(spec.waves))}
    rest = next(i for i, w in enumerate(spec.waves) if w.is_rest)
    matches = selected or {}
    for target in sorted(targets, key=lambda t: t.name):
        for i, wave in enumerate(spec.waves):
            by_label = wave.selector is not None and target.secret in matches.get(i, frozenset())
            if wave.chooses_name(target.name) or by_label:
                chosen[i].append(target)
                break
        else:
            chosen[rest].append(target)
    return tuple(
        WavePlan(index=i, wave=w, targets=tuple(chosen[i])) for i, w in enumerate(spec.waves)
    )
