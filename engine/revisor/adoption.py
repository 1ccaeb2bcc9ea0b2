"""Adopting a database Alembic did not build: ``--baseline REV``, and the refusal without it.

A database made by ``metadata.create_all()`` (or by hand, or by another
tool) has the schema but no version table. Upgrading it from base runs the
first revision, which fails half-way with ``relation "orders" already
exists``. ``--baseline REV`` stamps such a database at REV (the revision its
schema matches) before the run goes on; without it, the run is refused
before anything is written (``NeedsBaseline``) when the first planned
revision would create a table or index that the database already has.

How that is told, robustly on PostgreSQL, MySQL/MariaDB and SQLite alike:
the first planned revisions' ``upgrade()`` runs in Alembic's **offline**
mode, for the connection's dialect, with every statement it would send
captured as SQLAlchemy constructs instead of being compiled or executed:
``CreateTable`` and ``CreateIndex`` name exactly what it would create,
with names computed by code, loops and helpers, which reading the source
(``op.create_table("orders", ...)`` literals) would miss. Nothing reaches
the database, so this holds where DDL is not transactional (a dry run in a
rolled-back transaction would commit DDL on MySQL, and would take locks
and run data changes everywhere). Those names are then looked up with the
inspector. A revision that cannot run offline (it reads the database
through ``op.get_bind()``, or checks for the table itself) is left to run
as Alembic would run it; the result says the check was inconclusive.
Revisions are only run like this when the database has no version table
but has tables, so a fresh database never pays for it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext, RevisionStep
from alembic.script import Script
from sqlalchemy.engine import Connection

from revisor import contract
from revisor.contract import BaselineDetails, ExistingObjects, Reason, VersionTable, heads_text
from revisor.errors import BadInput
from revisor.history import TABLE_NAME as HISTORY_TABLE
from revisor.output import Reporter
from revisor.project import Project
from revisor.scripts import Plan, Scripts, describe, script_errors
from revisor.snapshot_table import TABLE_NAME as SNAPSHOT_TABLE

#: How many planned revisions are looked at for the first one that creates something.
LOOK_AHEAD = 3

_CREATE_TABLE = re.compile(
    r"^\s*CREATE\s+(?:(?:GLOBAL\s+|LOCAL\s+)?(?:TEMPORARY|TEMP)\s+|UNLOGGED\s+)?TABLE\s+"
    r"(?!IF\s+NOT\s+EXISTS\b)([^\s(]+)",
    re.IGNORECASE,
)


def resolve_baseline(scripts: Scripts, revision: str) -> tuple[str, ...]:
    """The revision ids ``--baseline REV`` names, or :class:`BadInput` (``InvalidTarget``)."""
    spec = revision.split("@", 1)[-1].strip()
    if spec in ("", "base") or spec[0] in "+-":
        raise BadInput(
            f"--baseline {revision!r}: name the revision the existing schema matches",
            hint="an id (or a unique prefix), head, heads or branch@head; e.g. --baseline head "
            "for a database that metadata.create_all() built from the current models",
            reason=Reason.INVALID_TARGET,
        )
    try:
        with script_errors(scripts.dirs, reason=Reason.INVALID_TARGET):
            found = scripts.directory.revision_map.get_revisions(revision)
    except BadInput as exc:
        raise BadInput(f"--baseline {revision}: {exc.message}", reason=exc.reason) from None
    ids = tuple(r.revision for r in found if r is not None and not isinstance(r, str))
    if not ids:
        raise BadInput(
            f"--baseline {revision}: the scripts have no such revision",
            reason=Reason.INVALID_TARGET,
        )
    return ids


@dataclass
class _Created:
    """What a revision's ``upgrade()`` would create: tables, and indexes by table."""

    tables: list[tuple[str | None, str]] = field(default_factory=list)
    indexes: list[tuple[str | None, str, str]] = field(default_factory=list)

    def note(self, construct: Any) -> None:
        if isinstance(construct, sa.schema.CreateTable):
            if not getattr(construct, "if_not_exists", False):
                table = construct.element
                self.tables.append((table.schema, table.name))
        elif isinstance(construct, sa.schema.CreateIndex):
            index = construct.element
            if not getattr(construct, "if_not_exists", False) and index.table is not None:
                self.indexes.append((index.table.schema, index.table.name, str(index.name)))
        elif isinstance(construct, str | sa.TextClause):
            match = _CREATE_TABLE.match(str(construct))
            if match:
                parts = [p.strip('"`[]') for p in match.group(1).split(".")]
                self.tables.append((parts[-2] if len(parts) > 1 else None, parts[-1]))

    def __bool__(self) -> bool:
        return bool(self.tables or self.indexes)


def _created_by(script: Script, dialect: sa.Dialect) -> _Created:
    """Run ``script``'s ``upgrade()`` offline for ``dialect``, capturing what it creates."""
    created = _Created()
    ctx = MigrationContext.configure(
        dialect=dialect, opts={"as_sql": True, "output_buffer": io.StringIO()}
    )

    def capture(construct: Any, *_args: Any, **_kw: Any) -> None:
        created.note(construct)

    # Every statement of an offline run goes through the impl's _exec (the
    # offline "bind" sends its statements there too): capture instead of
    # compiling them to text. (Alembic's private API, as in revisor.scripts:
    # DefaultImpl._exec has been the one way out since Alembic 0.x.)
    ctx.impl._exec = capture  # type: ignore[method-assign]
    operations = Operations.context(ctx)
    operations.__enter__()
    try:
        script.module.upgrade()
    finally:
        # Leaving normally even when upgrade() raised: Alembic's context()
        # removes the ``op`` proxy only after a clean exit.
        operations.__exit__(None, None, None)
    return created


@dataclass(frozen=True)
class AdoptionCheck:
    """What the check found: objects that already exist (refuse), or why it could not tell."""

    existing: ExistingObjects | None = None
    inconclusive: str | None = None


def check_existing_objects(
    conn: Connection,
    plan: Plan,
    *,
    schema: str | None,
    own_tables: Collection[str],
) -> AdoptionCheck:
    """Would the first revisions of ``plan`` create what the database already has?

    Call only for a database without a version table; ends the read
    transaction. ``own_tables`` (Revisor's tables) do not count as the
    database's; ``schema`` is the version table's, looked at besides the
    connection's default schema.
    """
    if plan.direction != "upgrade" or not plan.steps:
        return AdoptionCheck()
    insp = sa.inspect(conn)
    skip = {name.casefold() for name in own_tables}
    tables_in: dict[str | None, set[str]] = {}

    def existing_tables(where: str | None) -> set[str]:
        if where not in tables_in:
            names = insp.get_table_names(schema=where) + _views(insp, where)
            tables_in[where] = {n.casefold() for n in names} - skip
        return tables_in[where]

    try:
        if not existing_tables(None) and not existing_tables(schema):
            return AdoptionCheck()  # nothing there to collide with: a new database
        for step in plan.steps[:LOOK_AHEAD]:
            found = _look_at(step, conn, insp, existing_tables)
            if found is not None:
                return found
        return AdoptionCheck()
    finally:
        conn.rollback()


def _look_at(
    step: RevisionStep,
    conn: Connection,
    insp: sa.Inspector,
    existing_tables: Callable[[str | None], set[str]],
) -> AdoptionCheck | None:
    """The check's answer from ``step``, or None when it creates nothing (look further)."""
    script = step.revision
    try:
        created = _created_by(script, conn.dialect)
    except Exception as exc:  # the revision's own code, run offline
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        return AdoptionCheck(
            inconclusive=f"the database has tables but no version table, and whether "
            f"{script.revision} would create any of them could not be told (its upgrade() "
            f"does not run offline: {reason}); if the database was built without Alembic, "
            "run with --baseline REV"
        )
    if not created:
        return None
    tables = sorted(
        {_qualified(s, t) for s, t in created.tables if t.casefold() in existing_tables(s)}
    )
    # An index on a table the revision creates too is not worth naming again.
    creates = {(s, t.casefold()) for s, t in created.tables}
    indexes = sorted(
        {
            f"{_qualified(s, t)}.{name}"
            for s, t, name in created.indexes
            if (s, t.casefold()) not in creates
            and t.casefold() in existing_tables(s)
            and name in _index_names(insp, s, t)
        }
    )
    if not tables and not indexes:
        return AdoptionCheck()
    return AdoptionCheck(
        existing=ExistingObjects(
            revision=script.revision, tables=tuple(tables), indexes=tuple(indexes)
        )
    )


def _views(insp: sa.Inspector, schema: str | None) -> list[str]:
    try:
        return list(insp.get_view_names(schema=schema))
    except NotImplementedError:
        return []


def _index_names(insp: sa.Inspector, schema: str | None, table: str) -> set[str]:
    try:
        return {str(i["name"]) for i in insp.get_indexes(table, schema=schema)}
    except sa.exc.NoSuchTableError:
        return set()


def _qualified(schema: str | None, name: str) -> str:
    return f"{schema}.{name}" if schema else name


def needs_baseline(existing: ExistingObjects, scripts: Scripts, base: contract.Result) -> BadInput:
    """The refusal of a run over a database built without Alembic, with the fix."""
    what = describe(scripts.revision(existing.revision))
    listed: Sequence[str] = [*(f"table {t}" for t in existing.tables)] + [
        f"index {i}" for i in existing.indexes
    ]
    shown = ", ".join(listed[:5]) + (f" and {len(listed) - 5} more" if len(listed) > 5 else "")
    return BadInput(
        f"the database has no version table, but revision {existing.revision}"
        + (f" ({what})" if what else "")
        + f" would create what it already has: {shown}. It was built without Alembic "
        "(metadata.create_all(), or by hand), so running the revisions from base would fail "
        "on 'already exists'; nothing was run",
        hint="pass --baseline REV with the revision the existing schema matches: Revisor "
        "stamps it there and goes on from it (a database create_all() built from the current "
        f"models: --baseline head; the scripts' heads are {heads_text(scripts.heads())})",
        reason=Reason.NEEDS_BASELINE,
        context=replace(base, details={**base.details, **existing.to_details()}),
    )


def version_table_exists(conn: Connection, version_table: VersionTable) -> bool:
    """Whether the database has the version table at all (empty counts); ends the transaction."""
    found = sa.inspect(conn).has_table(version_table.table, schema=version_table.schema)
    conn.rollback()
    return found


def own_tables(project: Project) -> tuple[str, ...]:
    """The tables that are Revisor's and Alembic's, never the application's schema."""
    return (HISTORY_TABLE, SNAPSHOT_TABLE, project.version_table.table)


@dataclass(frozen=True)
class Start:
    """Where a plan starts: the database's heads, or the ``--baseline`` it will be stamped at."""

    heads: tuple[str, ...]
    has_version_table: bool
    baseline: BaselineDetails | None = None
    #: The ``--baseline`` to stamp before the first step (no version table yet).
    stamp: str | None = None


def starting_point(
    project: Project,
    conn: Connection,
    heads: tuple[str, ...],
    baseline: str | None,
    reporter: Reporter | None,
) -> Start:
    """The heads a plan starts from, given the database's and ``--baseline``.

    The baseline applies to a database with no version table at all; one
    that has a version table (even empty: Alembic was there) keeps its
    heads, and is told so. A bad baseline is refused either way.
    """
    has_table = bool(heads) or version_table_exists(conn, project.version_table)
    if baseline is None:
        return Start(heads=heads, has_version_table=has_table)
    ids = resolve_baseline(project.scripts, baseline)
    if has_table:
        if reporter is not None:
            reporter.info(
                f"--baseline {baseline} ignored: the database has a version table "
                f"(at {heads_text(heads)})"
            )
        return Start(heads, True, BaselineDetails(ids, "ignored"))
    return Start(ids, False, BaselineDetails(ids, "planned"), stamp=baseline)


def refuse_adoption(
    project: Project,
    conn: Connection,
    *,
    start: Start,
    plan: Plan,
    base: contract.Result,
    dry_run: bool = False,
    reporter: Reporter | None = None,
) -> contract.Result:
    """Refuse what adopting the database cannot do, before anything is written.

    A dry run cannot stamp a baseline (it writes nothing). Without a
    baseline, a database with no version table whose first revisions would
    create what it already has is refused (``NeedsBaseline``). Returns
    ``base``, with a warning when that could not be told.
    """
    if start.stamp is not None and dry_run:
        raise BadInput(
            f"--dry-run cannot stamp --baseline {start.stamp}: the database has no version "
            "table, and a dry run writes nothing; nothing was run",
            hint=f"stamp it first (revisor stamp {start.stamp}), then dry-run; or run without "
            "--dry-run",
            context=base,
        )
    if start.has_version_table or start.baseline is not None:
        return base
    check = check_existing_objects(
        conn, plan, schema=project.version_table.schema, own_tables=own_tables(project)
    )
    if check.existing is not None:
        raise needs_baseline(check.existing, project.scripts, base)
    if check.inconclusive is None:
        return base
    if reporter is not None:
        reporter.info(f"warning: {check.inconclusive}")
    return replace(base, warnings=(*base.warnings, check.inconclusive))
