"""The commands, as a Python API: each validates, wires the parts together, and stops.

Like Alembic's ``command.py``: the CLI is a thin layer over these functions,
so the API and the CLI cannot drift apart. Every command returns an
:class:`Outcome`: the contract :class:`~revisor.contract.Result` (for
``--output json`` and ``--result-file``) and the text a person reads.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script.revision import ResolutionError
from alembic.util import to_tuple
from sqlalchemy.engine import Connection

from revisor import __version__, contract, tenants, waiting
from revisor.adoption import own_tables, refuse_adoption, starting_point
from revisor.connection import run_with_connection
from revisor.contract import (
    SCHEMA_HASH,
    BaselineDetails,
    DriftDetails,
    ExitCode,
    Reason,
    heads_text,
    timestamp,
)
from revisor.drift import compare
from revisor.errors import BadInput
from revisor.history import History
from revisor.options import RunOptions
from revisor.outcome import Outcome, run_text
from revisor.output import Reporter
from revisor.project import Project
from revisor.runtime import (
    make_plan,
    migrate,
    read_heads,
    record_snapshot,
    snapshot_schema,
    stamp,
    with_lock,
)
from revisor.schema_snapshot import FORMAT as SNAPSHOT_FORMAT
from revisor.scripts import (
    MissingRevisions,
    Scripts,
    describe,
    down_revisions_text,
    file_checksum,
    is_downgrade_target,
    script_errors,
)
from revisor.snapshot_table import RecordedSnapshot, SnapshotTable, revision_key


def _steps_text(steps: Sequence[contract.Step]) -> str:
    return "\n".join(
        f"  {i}. {'upgrade' if s.direction == 'upgrade' else 'downgrade'} {s.revision}"
        + (f"  {s.description}" if s.description else "")
        + ("  (no-op: its downgrade() is only pass)" if s.noop else "")
        for i, s in enumerate(steps, 1)
    )


def _result(command: str, **kw: Any) -> contract.Result:
    return contract.Result(command=command, exit_code=ExitCode.OK, engine_version=__version__, **kw)


# -- commands that move the database -------------------------------------------------


def run(project: Project, options: RunOptions, reporter: Reporter) -> Outcome:
    """``apply`` / ``upgrade`` / ``downgrade``."""
    result = migrate(project, options, reporter)
    return Outcome(result, run_text(result))


def stamp_to(
    project: Project,
    revision: str,
    reporter: Reporter,
    *,
    lock_timeout: float | None,
    runner: str | None = None,
) -> Outcome:
    result = stamp(project, revision, reporter, lock_timeout=lock_timeout, runner=runner)
    return Outcome(result, f"stamped {heads_text(result.to_revisions)}")


# -- commands that read ----------------------------------------------------------------


def plan(
    project: Project, target: str, *, baseline: str | None = None, reporter: Reporter | None = None
) -> Outcome:
    """The steps from the current revision(s) to ``target``, up or down; changes nothing.

    With ``baseline``, a database without a version table is planned from
    there, as ``apply --baseline`` would run it (same steps, same hash). A
    plan that ``apply`` would refuse with ``NeedsBaseline`` is refused here.
    """
    scripts = project.scripts

    def work(conn: Connection) -> contract.Result:
        heads = read_heads(conn, project.version_table)
        start = starting_point(project, conn, heads, baseline, reporter)
        the_plan = make_plan(scripts, "apply", target, start.heads)
        base = _result(
            "plan",
            detail_reason=Reason.PLANNED,
            direction=the_plan.direction,
            target=target,
            from_revisions=heads,
            to_revisions=heads,
            plan=the_plan.contract_steps(),
            plan_hash=the_plan.hash(scripts),
            details=start.baseline.to_details() if start.baseline is not None else {},
        )
        return refuse_adoption(
            project, conn, start=start, plan=the_plan, base=base, reporter=reporter
        )

    result = run_with_connection(project.db, work)
    baseline_details = BaselineDetails.from_details(result.details)
    first, start = "", heads_text(result.from_revisions)
    if baseline_details is not None and baseline_details.outcome == "planned":
        start = heads_text(baseline_details.revisions)
        first = f"no version table: stamp baseline {start}, then "
    if not result.plan:
        return Outcome(
            result,
            f"at {heads_text(result.from_revisions)}: {first}nothing to do for {target}",
        )
    text = (
        f"{first}{result.direction} from {start} to {target}, "
        f"{len(result.plan)} step(s):\n{_steps_text(result.plan)}\nplan hash {result.plan_hash}"
    )
    return Outcome(result, text)


def current(project: Project) -> Outcome:
    heads = run_with_connection(project.db, lambda conn: read_heads(conn, project.version_table))
    scripts = project.scripts
    script_heads = set(scripts.heads())
    lines = []
    for rev in heads:
        try:
            doc = describe(scripts.revision(rev))
        except BadInput:
            doc = "(no script file for this revision)"
        mark = " (head)" if rev in script_heads else ""
        lines.append(f"{rev}{mark} {doc}".rstrip())
    result = _result("current", from_revisions=heads, to_revisions=heads)
    return Outcome(result, "\n".join(lines) or "base (no revision applied)")


def heads(project: Project) -> Outcome:
    scripts = project.scripts
    found = scripts.heads()
    lines = [f"{h} (head) {describe(scripts.revision(h))}".rstrip() for h in found]
    return Outcome(_result("heads", to_revisions=found), "\n".join(lines))


def history(project: Project, rng: str | None) -> Outcome:
    """Revisions in ``rng`` (``A:B``, ``A:``, ``:B``; default all), newest first.

    ``current`` on either side is the database's revision(s), as in Alembic;
    only then is a database needed.
    """
    scripts = project.scripts
    start, end = _history_range(rng)
    lower: str | tuple[str, ...] = start
    upper: str | tuple[str, ...] = end
    if "current" in (start, end):
        at = run_with_connection(project.db, lambda conn: read_heads(conn, project.version_table))
        if end == "current" and not at:
            # At base nothing is applied (Alembic would show every revision).
            return Outcome(_result("history", plan=()), "")
        if start == "current":
            lower = at or "base"
        if end == "current":
            upper = at
    with script_errors(scripts.dirs, reason=Reason.INVALID_TARGET):
        # walk_revisions takes several heads too, as Alembic's own history does.
        revisions = list(scripts.directory.walk_revisions(lower, upper))  # type: ignore[arg-type]
    lines = [
        f"{down_revisions_text(r) or '<base>'} -> {r.revision}"
        + (" (head)" if r.is_head else "")
        + (" (branchpoint)" if r.is_branch_point else "")
        + (" (mergepoint)" if r.is_merge_point else "")
        + f", {describe(r)}"
        for r in revisions
    ]
    steps = tuple(
        contract.Step(revision=r.revision, direction="upgrade", description=describe(r))
        for r in revisions
    )
    return Outcome(_result("history", plan=steps), "\n".join(lines))


def _history_range(rng: str | None) -> tuple[str, str]:
    """``A:B`` → (A, B) with Alembic's defaults, base and heads, for a missing side."""
    if rng is None:
        return "base", "heads"
    if rng.count(":") != 1:
        raise BadInput(
            f"history {rng!r}: a range is [start]:[end], [start]: or :[end]",
            hint="e.g. revisor history base:head, history 3c9a:, history :current",
            reason=Reason.INVALID_TARGET,
        )
    lower, upper = (part.strip() for part in rng.split(":"))
    return lower or "base", upper or "heads"


def runs(project: Project, limit: int) -> Outcome:
    """The runs recorded in ``revisor_history``, newest first."""
    table = History(project.version_table.schema)

    def work(conn: Connection) -> list[dict[str, Any]]:
        if not table.exists(conn):
            return []
        return [dict(row._mapping) for row in table.runs(conn, limit=limit)]

    rows = run_with_connection(project.db, work)
    lines = [
        f"{r['started_at']:%Y-%m-%d %H:%M:%S} {r['status']:<16} {_run_verb(r)} "
        f"{r['from_revision']} -> {r['to_revision']} ({(r['duration_seconds'] or 0):.2f}s)"
        f"{' by ' + r['runner'] if r['runner'] else ''}"
        for r in rows
    ]
    details = {"runs": [{k: str(v) for k, v in r.items() if v is not None} for r in rows[:10]]}
    return Outcome(_result("history", details=details), "\n".join(lines) or "no runs recorded")


def _run_verb(row: Mapping[str, Any]) -> str:
    """``upgrade``, ``stamp``, or ``apply (downgrade)``: the command, and the way it went."""
    command, direction = str(row["command"]), str(row["direction"])
    return command if direction in (command, "none") else f"{command} ({direction})"


def verify(project: Project) -> Outcome:
    """Applied revisions against the files: edited after applying, or missing.

    A file gone from the middle of the chain breaks Alembic's graph, but
    verify still answers from the files that are there: applied revisions
    whose file is gone are a mismatch (exit 7), named. A missing file that
    was never applied is a broken script directory (exit 2), as for upgrade.
    """
    gaps: MissingRevisions | None = None
    try:
        scripts = project.scripts
    except MissingRevisions as exc:
        scripts, gaps = exc.scripts, exc
        project = project.with_scripts(scripts)
    table = History(project.version_table.schema)

    def work(conn: Connection) -> tuple[tuple[str, ...], dict[str, str]]:
        heads_now = read_heads(conn, project.version_table)
        recorded = table.applied_checksums(conn) if table.exists(conn) else {}
        conn.rollback()
        return heads_now, recorded

    applied_heads, recorded = run_with_connection(project.db, work)
    if gaps is None:
        files, missing = _applied_files(scripts, applied_heads)
    else:
        files, missing = _applied_files_around_gaps(gaps, applied_heads)
        if not missing:
            raise gaps
    edited = [
        rev
        for rev, path in files.items()
        if rev in recorded and recorded[rev] != file_checksum(path)
    ]
    unrecorded = [rev for rev in files if rev not in recorded]
    details = {
        "checked": len(files),
        "edited": edited,
        "missing": missing,
        "unrecorded": len(unrecorded),
    }
    lines = [f"checked {len(files)} applied revision(s) at {heads_text(applied_heads)}"]
    lines += [f"edited after it was applied: {rev} ({files[rev]})" for rev in edited]
    lines += [
        f"applied but its script is missing: {rev}"
        + (f" (revised by {', '.join(gaps.missing[rev])})" if gaps and rev in gaps.missing else "")
        for rev in missing
    ]
    if gaps is not None:
        lines.append(
            "revisions below a missing file could not be followed: restore it to check them"
        )
    if unrecorded:
        lines.append(
            f"{len(unrecorded)} applied revision(s) have no recorded checksum "
            "(applied outside Revisor)"
        )
    result = _result(
        "verify", from_revisions=applied_heads, to_revisions=applied_heads, details=details
    )
    if edited or missing:
        problem = "; ".join(
            (
                [f"{len(edited)} revision(s) edited after they were applied: {', '.join(edited)}"]
                if edited
                else []
            )
            + (
                [f"{len(missing)} applied revision(s) missing: {', '.join(missing)}"]
                if missing
                else []
            )
        )
        result = replace(result, exit_code=ExitCode.MISMATCH, error=problem)
    return Outcome(result, "\n".join(lines))


def _applied_files(
    scripts: Scripts, applied_heads: Sequence[str]
) -> tuple[dict[str, Path], list[str]]:
    """Each applied revision's file, through Alembic's graph; heads with no file apart."""
    missing = [h for h in applied_heads if not _known(scripts, h)]
    present = tuple(h for h in applied_heads if h not in missing)
    files: dict[str, Path] = {}
    if present:
        with script_errors(scripts.dirs):
            for script in scripts.directory.revision_map.iterate_revisions(
                present, "base", inclusive=True, assert_relative_length=False
            ):
                files[script.revision] = Path(scripts.revision(script.revision).path)
    return files, missing


def _applied_files_around_gaps(
    gaps: MissingRevisions, applied_heads: Sequence[str]
) -> tuple[dict[str, Path], list[str]]:
    """Walk down from the applied heads over the files that loaded, noting the holes.

    Alembic's graph could not be built, so this follows ``down_revision``
    itself; what lies below a missing file is out of reach.
    """
    files: dict[str, Path] = {}
    missing: list[str] = []
    todo, seen = list(applied_heads), set()
    while todo:
        rev = todo.pop(0)
        if rev in seen:
            continue
        seen.add(rev)
        script = gaps.found.get(rev)
        if script is None:
            missing.append(rev)
            continue
        files[rev] = Path(script.path)
        todo += to_tuple(script.down_revision, default=())
    return files, missing


def _known(scripts: Scripts, rev: str) -> bool:
    try:
        return scripts.directory.revision_map.get_revision(rev) is not None
    except ResolutionError:
        return False


def check(project: Project) -> Outcome:
    """Differences between the project's SQLAlchemy ``MetaData`` (``--metadata``) and the schema."""
    from alembic.autogenerate import compare_metadata

    metadata = project.target_metadata
    if metadata is None:
        raise BadInput(
            "check needs the models to compare with: --metadata MODULE:ATTR",
            hint="e.g. revisor check --metadata myapp.models:Base.metadata",
        )
    metadata_ref = project.metadata
    skip = set(own_tables(project))

    def include_name(name: str | None, type_: str, _parent: Any) -> bool:
        return not (type_ == "table" and name in skip)

    def work(conn: Connection) -> list[Any]:
        ctx = MigrationContext.configure(
            connection=conn, opts={"compare_type": True, "include_name": include_name}
        )
        diffs = list(compare_metadata(ctx, metadata))
        conn.rollback()
        return diffs

    diffs = run_with_connection(project.db, work)
    described = [_describe_diff(d) for d in diffs]
    result = _result("check", details={"differences": described[:20], "count": len(described)})
    if described:
        result = replace(
            result,
            exit_code=ExitCode.MISMATCH,
            error=f"{len(described)} difference(s) between {metadata_ref} and the database",
        )
        return Outcome(result, "\n".join(described))
    return Outcome(result, f"no differences between {metadata_ref} and the database")


def _describe_diff(diff: Any) -> str:
    if isinstance(diff, list):
        return "; ".join(_describe_diff(d) for d in diff)
    kind, *rest = diff
    names = []
    for part in rest:
        name = getattr(part, "name", None)
        if name is not None:
            table = getattr(getattr(part, "table", None), "name", None)
            names.append(f"{table}.{name}" if table and table != name else str(name))
        elif isinstance(part, str):
            names.append(part)
    return f"{kind} {' '.join(names)}".strip()


def drift(
    project: Project,
    reporter: Reporter,
    *,
    ignore: Sequence[str] = (),
    accept: str | None = None,
    record: bool = False,
    lock_timeout: float | None = 60.0,
) -> Outcome:
    """The live schema against the snapshot recorded for the database's revision.

    Runs under the migration lock, so a run in flight is waited for rather
    than mistaken for drift, and reads only. ``record`` saves the live schema
    as the current revision's instead (a database migrated by plain Alembic,
    or stamped). ``accept``: the live schema's hash a person acknowledged;
    drift with that hash exits 0.
    """
    if record and (ignore or accept):
        raise BadInput(
            "drift --record records the whole schema as it is; --ignore and --accept only "
            "apply to a comparison",
            hint="run revisor drift --record alone, then revisor drift with --ignore/--accept",
        )
    table = project.version_table
    store = SnapshotTable(table.schema)

    def work(conn: Connection, _dialect: Any) -> Outcome:
        heads = read_heads(conn, table)
        at = heads_text(heads)
        base = _result("drift", from_revisions=heads, to_revisions=heads)
        try:
            recorded = store.latest(conn, revision_key(heads))
        except ValueError as exc:
            raise BadInput(
                f"the schema snapshot recorded for {at} cannot be read ({exc})",
                hint="record it again: revisor drift --record",
                reason=Reason.NO_SNAPSHOT,
                context=base,
            ) from None
        conn.rollback()
        if record:
            snapshot = record_snapshot(project, conn, heads=heads, recorded_by="record")
            assert snapshot is not None
            replaced = (
                f", replacing the one recorded {recorded.recorded_at} by "
                f"{recorded.recorded_by} (hash {recorded.hash})"
                if recorded is not None
                else ""
            )
            result = replace(
                base, detail_reason=Reason.SNAPSHOT_RECORDED, details={SCHEMA_HASH: snapshot.hash}
            )
            text = (
                f"recorded the schema at {at}: {snapshot.tables} table(s){replaced}\n"
                f"schema hash {snapshot.hash}"
            )
            return Outcome(result, text)
        if recorded is None or recorded.format != SNAPSHOT_FORMAT:
            raise _no_snapshot(at, recorded, base)
        live = snapshot_schema(project, conn)
        found = compare(recorded.snapshot, live, ignore=ignore)
        accepted = found.drifted and accept == found.live_hash
        details = DriftDetails.bounded(
            differences=found.differences,
            drifted=found.drifted,
            hash=found.live_hash,
            recorded_hash=found.recorded_hash,
            recorded_at=recorded.recorded_at,
            recorded_by=recorded.recorded_by,
            accepted=accepted,
        )
        result = replace(base, details=details.to_details())
        when = f"recorded {recorded.recorded_at} by {recorded.recorded_by}"
        if not found.drifted:
            result = replace(result, detail_reason=Reason.NO_DRIFT)
            return Outcome(
                result,
                f"no drift at {at}: the schema is the one {when}\nschema hash {found.live_hash}",
            )
        listed = "\n".join(found.differences)
        text = (
            f"drift at {at}: {len(found.differences)} difference(s) from the schema {when}\n"
            f"{listed}\nlive schema hash {found.live_hash} (recorded {found.recorded_hash})"
        )
        if accepted:
            result = replace(result, detail_reason=Reason.DRIFT_ACCEPTED)
            return Outcome(result, text + "\naccepted: --accept names this schema's hash")
        error = (
            f"schema drift at {at}: {len(found.differences)} difference(s) from the schema "
            f"{when}; fix the schema or write a revision for it, or accept it: revisor drift "
            f"--accept {found.live_hash}"
        )
        if accept is not None:
            error += (
                f" (the accepted hash {accept} is not the live schema's: it changed since it "
                "was accepted)"
            )
        result = replace(
            result, exit_code=ExitCode.MISMATCH, detail_reason=Reason.DRIFTED, error=error
        )
        return Outcome(result, text)

    outcome: Outcome = with_lock(project, work, lock_timeout=lock_timeout, reporter=reporter)
    return outcome


def _no_snapshot(at: str, recorded: RecordedSnapshot | None, base: contract.Result) -> BadInput:
    """Nothing to compare with: none recorded for this revision, or one of another format."""
    if recorded is None:
        message = (
            f"no schema snapshot is recorded for revision {at}, so there is nothing to "
            "compare the live schema with (the database was migrated before Revisor recorded "
            "snapshots, by plain Alembic, or stamped)"
        )
    else:
        message = (
            f"the schema snapshot recorded for {at} is in format {recorded.format}, and this "
            f"Revisor compares format {SNAPSHOT_FORMAT}"
        )
    return BadInput(
        message,
        hint="once the schema is as it should be, record it: revisor drift --record (every "
        "migration run records one too)",
        reason=Reason.NO_SNAPSHOT,
        context=base,
    )


def wait_for(
    project: Project, reporter: Reporter, *, revision: str | None, timeout: float | None
) -> Outcome:
    """Wait until the database is at or past ``revision`` (default: the scripts' heads)."""
    result = waiting.wait_for(project, reporter, revision=revision, timeout=timeout)
    waited = result.details.get("waitedSeconds", 0)
    return Outcome(
        result, f"at {heads_text(result.to_revisions)} (waited {waited}s for {result.target})"
    )


def schemas(
    project: Project, *, query: str, after: str | None, statement_timeout: float | None
) -> Outcome:
    """The schemas ``query`` names, read-only: every one after ``after`` as text, a page as result.

    The result holds the first page that fits a termination message
    (:class:`~revisor.contract.SchemaPage`); the operator asks again
    ``--after`` its last name until none remain.
    """
    started = timestamp()
    names = tenants.query_names(project, query, statement_timeout=statement_timeout)
    finished = timestamp()

    def result(page: contract.SchemaPage) -> contract.Result:
        return _result(
            "schemas",
            detail_reason=Reason.SCHEMAS_LISTED,
            started_at=started,
            finished_at=finished,
            details=page.to_details(),
        )

    page_result = tenants.fit_page(names, after=after, result=result)
    listed = [name for name in names if after is None or name > after]
    return Outcome(page_result, "\n".join(listed))


def offline_sql(project: Project, rng: str, dialect: str) -> Outcome:
    """The SQL for ``A:B`` (or base to ``B``), without a database.

    With ``--schema``, the script starts by setting the search_path to that
    schema, as the online run's session does, so its unqualified names land
    in the tenant's schema when a person runs it with psql.
    """
    if project.schema is not None and dialect != "postgresql":
        raise BadInput(
            f"--schema is for PostgreSQL; sql --dialect {dialect} has no search_path",
            hint="leave out --schema, or use --dialect postgresql",
        )
    scripts = project.scripts
    start_text, _, end = rng.rpartition(":")
    start = start_text or None
    if not end:
        raise BadInput(f"sql {rng!r}: expected a range FROM:TO or a target, e.g. base:head")
    with script_errors(scripts.dirs):
        if start in (None, "base"):
            start_heads: tuple[str, ...] = ()
        elif start in ("head", "heads"):
            start_heads = scripts.heads()
        else:
            found = scripts.directory.revision_map.get_revisions(start)
            start_heads = tuple(r.revision for r in found if r and not isinstance(r, str))
        down = is_downgrade_target(scripts, end, start_heads)
    if down and not start_heads:
        raise BadInput(f"sql {rng!r}: a downgrade needs its starting revision, e.g. head:{end}")
    buffer = io.StringIO()

    def fn(rev: Any, _ctx: Any) -> Any:
        return scripts.downgrade_steps(end, rev) if down else scripts.upgrade_steps(end, rev)

    with (
        script_errors(scripts.dirs),
        EnvironmentContext(
            scripts.config,
            scripts.directory,
            fn=fn,
            as_sql=True,
            starting_rev=start if start not in (None, "base") else None,
            destination_rev=end,
        ) as env,
    ):
        env.configure(
            dialect_name=dialect,
            output_buffer=buffer,
            literal_binds=True,
            transaction_per_migration=True,
            version_table=project.version_table.table,
            version_table_schema=project.version_table.schema,
            target_metadata=project.target_metadata,
        )
        with env.begin_transaction():
            env.run_migrations()
    text = buffer.getvalue()
    if project.schema is not None:
        quoted = '"' + project.schema.replace('"', '""') + '"'
        text = f"SET search_path TO {quoted};\n\n{text}"
    result = _result(
        "sql",
        direction="downgrade" if down else "upgrade",
        target=end,
        details={"bytes": len(text)},
    )
    return Outcome(result, text.rstrip("\n"))


__all__ = [
    "Outcome",
    "RunOptions",
    "check",
    "current",
    "drift",
    "heads",
    "history",
    "offline_sql",
    "plan",
    "run",
    "runs",
    "schemas",
    "stamp_to",
    "verify",
    "wait_for",
]
