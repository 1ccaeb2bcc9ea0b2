"""One migration run: lock, plan, apply step by step, record, and undo on failure.

The order is what makes a run safe:

1. open the one connection, take the advisory lock on it, set the session up;
2. read the current heads and plan *under the lock* (a second runner that
   waited finds nothing to do and exits 0 without writing anything);
3. refuse bad plans before writing anything (unknown target, irreversible
   steps under ``--on-failure rollback``, autocommit scripts in a dry run,
   a plan that is not the approved one);
4. run the steps through Alembic with a generator ``fn``: Alembic wraps
   each step it pulls from ``fn`` in that step's transaction, so the code
   after each ``yield`` runs once the step has committed, and progress is
   only reported for committed work (``on_version_apply`` callbacks run
   before the commit);
5. on failure, optionally run the committed steps backwards; where DDL is
   not transactional (MySQL, MariaDB) and the failed revision had committed
   some of its statements, stop instead and say exactly what is left
   (exit 8, ``PartiallyApplied``): running anything over a half-applied
   revision could only make it worse;
6. still under the lock, record the schema the run left in ``revisor_schema``
   (:func:`record_snapshot`), which ``revisor drift`` compares with later: a
   run that changed nothing records one only if its revision has none yet.

A database without a version table is stamped first when ``--baseline`` is
given (:func:`starting_point`); without it, a run whose first revision would
create tables the database already has is refused (:mod:`revisor.adoption`).

The connection is committed before Alembic is configured, so Alembic owns
its transactions: handed a connection inside a transaction, Alembic would
take it for the caller's and commit nothing on its own. A dry run uses that
on purpose: one outer transaction, rolled back at the end.
"""

from __future__ import annotations

import datetime as dt
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.runtime.migration import (
    MigrationContext,
    MigrationInfo,
    RevisionStep,
)
from sqlalchemy.engine import Connection

from revisor import __version__, contract
from revisor.adoption import own_tables, refuse_adoption, starting_point
from revisor.connection import run_with_connection
from revisor.contract import (
    SCHEMA_HASH,
    BaselineDetails,
    ExitCode,
    Reason,
    VersionTable,
    heads_text,
    timestamp,
)
from revisor.dialects import (
    Backoff,
    DialectSupport,
    StatementLog,
    StatementsRan,
    lock_key,
    support_for,
)
from revisor.environment import run_environment
from revisor.errors import DatabaseUnreachable, RevisorError
from revisor.history import (
    APPLIED,
    FAILED,
    INTERRUPTED,
    PARTIAL,
    RETRIED,
    ROLLBACK_FAILED,
    ROLLBACK_INCOMPLETE,
    ROLLED_BACK,
    SUCCEEDED,
    History,
    new_run,
    utcnow,
)
from revisor.options import RunCommand, RunOptions
from revisor.output import Reporter, revision_output
from revisor.preflight import refuse_unsafe
from revisor.project import Project
from revisor.redaction import scrub
from revisor.schema_snapshot import SchemaSnapshot, take_snapshot
from revisor.scripts import (
    IRREVERSIBLE,
    DowngradeProblem,
    HeadsInMemory,
    Plan,
    Scripts,
    contract_step,
    describe,
    downgrade_problem,
    env_py_findings,
    plan_apply,
    plan_downgrade,
    plan_upgrade,
    problem_text,
    reversed_step,
    uses_autocommit,
)
from revisor.snapshot_table import SnapshotTable, revision_key
from revisor.stopping import Interrupted, stop_requested

#: Pauses between retries of a revision that timed out on a table lock (as
#: pgroll does: starting at about a second, growing to a minute).
DDL_RETRY_BACKOFF = Backoff(first=1.0, cap=60.0)


def read_heads(conn: Connection, version_table: VersionTable) -> tuple[str, ...]:
    """The revisions in the version table; ends the read transaction."""
    ctx = MigrationContext.configure(
        connection=conn,
        opts={"version_table": version_table.table, "version_table_schema": version_table.schema},
    )
    heads = tuple(ctx.get_current_heads())
    conn.rollback()
    return heads


def snapshot_schema(project: Project, conn: Connection) -> SchemaSnapshot:
    """The live schema in the version table's schema, without Revisor's and Alembic's tables."""
    return take_snapshot(conn, schema=project.version_table.schema, skip=own_tables(project))


def record_snapshot(
    project: Project,
    conn: Connection,
    *,
    heads: Sequence[str],
    recorded_by: str,
    run_id: str | None = None,
    only_if_missing: bool = False,
) -> SchemaSnapshot | None:
    """Snapshot the schema and save it as revision ``heads``'s; hold the lock to call it.

    ``only_if_missing``: a run that changed nothing records one only when its
    revision has none yet (a database migrated before Revisor recorded
    snapshots); returns None when it had one. Commits.
    """
    store = SnapshotTable(project.version_table.schema)
    key = revision_key(heads)
    if only_if_missing and store.has(conn, key):
        conn.rollback()
        return None
    snapshot = snapshot_schema(project, conn)
    store.save(
        conn,
        key,
        snapshot,
        recorded_by=recorded_by,
        run_id=run_id,
        engine_version=__version__,
    )
    conn.commit()
    return snapshot


def make_plan(scripts: Scripts, command: RunCommand, target: str, heads: Sequence[str]) -> Plan:
    planner = {"apply": plan_apply, "upgrade": plan_upgrade, "downgrade": plan_downgrade}[command]
    return planner(scripts, target, heads)


def with_lock(
    project: Project,
    work: Callable[[Connection, DialectSupport], Any],
    *,
    lock_timeout: float | None,
    statement_timeout: float | None = None,
    ddl_lock_timeout: float | None = None,
    reporter: Reporter | None = None,
) -> Any:
    """Open the connection, hold the advisory lock around ``work``, release it.

    ``reporter`` hears it when the run has to wait for another runner's lock.
    """
    db, table = project.db, project.version_table

    def locked(conn: Connection) -> Any:
        dialect = support_for(db)
        key = lock_key(db, schema=table.schema, table=table.table)
        dialect.acquire_lock(
            conn,
            key=key,
            timeout=lock_timeout,
            on_wait=reporter.info if reporter is not None else None,
        )
        try:
            dialect.prepare_session(
                conn, statement_timeout=statement_timeout, ddl_lock_timeout=ddl_lock_timeout
            )
            with revision_output():
                return work(conn, dialect)
        finally:
            with suppress(sa.exc.DBAPIError, OSError):
                if conn.in_transaction():
                    conn.rollback()
                dialect.release_lock(conn, key=key)

    return run_with_connection(db, locked)


def migrate(project: Project, options: RunOptions, reporter: Reporter) -> contract.Result:
    """Move the database to ``options.target``; the outcome is a contract Result."""
    started = utcnow()
    table = project.version_table

    def work(conn: Connection, dialect: DialectSupport) -> contract.Result:
        heads = read_heads(conn, table)
        start = starting_point(project, conn, heads, options.baseline, reporter)
        plan = make_plan(project.scripts, options.command, options.target, start.heads)
        planned = plan.contract_steps()
        base = contract.Result(
            command=options.command,
            exit_code=ExitCode.OK,
            direction=plan.direction,
            target=options.target,
            from_revisions=heads,
            to_revisions=heads,
            plan=planned,
            plan_hash=plan.hash(project.scripts),
            dry_run=options.dry_run,
            started_at=timestamp(started),
            engine_version=__version__,
            runner=options.runner,
            details=start.baseline.to_details() if start.baseline is not None else {},
        )
        refuse_unsafe(
            scripts=project.scripts,
            backend=project.db.backend,
            options=options,
            plan=plan,
            base=base,
            dialect=dialect,
        )
        base = refuse_adoption(
            project,
            conn,
            start=start,
            plan=plan,
            base=base,
            dry_run=options.dry_run,
            reporter=reporter,
        )
        # Only now, past every refusal, may the run write anything.
        history = History(table.schema)
        if not options.dry_run and history.exists(conn):
            stale = history.mark_interrupted(conn)
            conn.commit()
            if stale:
                reporter.info(f"marked {stale} run(s) left by a stopped runner as interrupted")
        if start.stamp is not None:
            _stamp_locked(
                project, conn, start.stamp, heads=(), runner=options.runner, reporter=reporter
            )
            stamped = BaselineDetails(start.heads, "stamped")
            base = replace(base, details={**base.details, **stamped.to_details()})
        if not plan.steps:
            reporter.info(f"already at {options.target} ({heads_text(start.heads)}); nothing to do")
            done = _finished(base, to=read_heads(conn, table) if start.stamp else None)
            if options.dry_run:
                return done
            return _with_snapshot(
                project, conn, done, recorded_by=options.command, run_id=None,
                only_if_missing=True, reporter=reporter,
            )  # fmt: skip
        invalid = dialect.invalid_indexes(conn)
        if invalid:
            warning = _invalid_indexes_warning(invalid)
            reporter.info(f"warning: {warning}")
            base = replace(base, warnings=(*base.warnings, warning))
        base = _with_env_py_note(project, base, reporter)
        reporter.planned(planned, dry_run=options.dry_run)
        run = _Run(
            project=project,
            options=options,
            reporter=reporter,
            history=history,
            conn=conn,
            dialect=dialect,
            invalid_before=invalid,
            plan=plan,
            base=base,
        )
        result = run.execute()
        if options.dry_run:
            return result
        return _with_snapshot(
            project, conn, result, recorded_by=options.command, run_id=run.run.run_id,
            # A run that committed nothing changed nothing.
            only_if_missing=not result.applied, reporter=reporter,
        )  # fmt: skip

    result: contract.Result = with_lock(
        project,
        work,
        lock_timeout=options.lock_timeout,
        statement_timeout=options.statement_timeout,
        ddl_lock_timeout=options.ddl_lock_timeout,
        reporter=reporter,
    )
    return result


@dataclass
class _Progress:
    applied: list[contract.Step] = field(default_factory=list)
    committed: list[RevisionStep] = field(default_factory=list)
    current: RevisionStep | None = None
    #: ``current`` as the contract (and the progress lines) describe it.
    described: contract.Step | None = None
    index: int = 0
    started_mono: float = 0.0
    started_at: dt.datetime = field(default_factory=utcnow)
    #: ``current`` ran all its statements; only its COMMIT is left (or under way).
    committing: bool = False


class StepFailed(Exception):
    def __init__(
        self,
        step: RevisionStep | None,
        cause: BaseException,
        *,
        committed: StatementsRan | None = None,
    ) -> None:
        super().__init__(str(cause))
        self.step = step
        self.cause = cause
        #: What the failed step had committed on its own (no transactional DDL).
        self.committed = committed


class _Run:
    """The steps of one plan, and the way back if they fail."""

    def __init__(
        self,
        *,
        project: Project,
        options: RunOptions,
        reporter: Reporter,
        history: History,
        conn: Connection,
        dialect: DialectSupport,
        invalid_before: frozenset[str],
        plan: Plan,
        base: contract.Result,
    ) -> None:
        self.project, self.options, self.reporter = project, options, reporter
        self.history, self.conn, self.plan, self.base = history, conn, plan, base
        self.dialect = dialect
        #: INVALID indexes that were there before this run (left by another).
        self.invalid_before = invalid_before
        self.run = new_run(
            command=options.command,
            direction=plan.direction,
            from_heads=plan.from_heads,
            target=options.target,
            runner=options.runner,
            engine_version=__version__,
        )
        self.record = not options.dry_run
        #: Where DDL is not transactional, what each step runs: a step that
        #: fails after some of it committed must say so (None elsewhere).
        self.statements = (
            None if dialect.transactional_ddl else StatementLog(dialect.commits_implicitly)
        )

    def execute(self) -> contract.Result:
        if self.statements is None:
            return self._execute()
        self.statements.attach(self.conn)
        try:
            return self._execute()
        finally:
            self.statements.detach(self.conn)

    def _execute(self) -> contract.Result:
        created = False
        if self.record:
            created = self.history.ensure(self.conn)
            self.history.start_run(self.conn, self.run)
            self.conn.commit()
        progress = _Progress()
        try:
            failure = self._run_with_retries(progress)
            if failure is not None:
                return self._failed(failure, progress)
        except Interrupted as stopped:
            self.reporter.info(str(stopped.message))
            return self._finish(
                INTERRUPTED,
                code=ExitCode.MIGRATION_FAILED,
                applied=progress.applied,
                error=stopped.message,
                reason=Reason.INTERRUPTED,
            )
        except RevisorError as refused:
            # env.py refused to run (its own error, a wrong database, offline
            # mode) before any revision did: like every other refusal, it
            # leaves nothing behind, so the run's row (and the history table,
            # if this run made it) is taken back. Anything later is recorded,
            # never left "running" for the next runner to call interrupted.
            # Unless the session is gone (_session_lost): then nothing can be
            # written, and the next runner will.
            if refused.context is None:
                refused.context = self.base
            if self.conn.invalidated:
                raise
            with suppress(sa.exc.DBAPIError):
                if self.conn.in_transaction():
                    self.conn.rollback()
                if self.record and progress.index == 0:
                    self.history.forget_run(self.conn, self.run, drop_table=created)
                    self.conn.commit()
                else:
                    self._finish(FAILED, error=scrub(str(refused)))
            raise
        result = self._finish(SUCCEEDED, applied=progress.applied)
        if self.options.dry_run:
            self.reporter.info("dry run: every step ran and was rolled back")
        return result

    def _run_with_retries(self, progress: _Progress) -> StepFailed | None:
        """Run the plan; a step that timed out waiting for a table lock is tried again.

        With ``--ddl-lock-timeout``, a revision whose DDL waits longer than
        that for a table lock (:meth:`DialectSupport.is_lock_timeout`) is re-run
        as a whole, after a growing, jittered pause, up to ``--ddl-lock-retries``
        times: its transaction was rolled back, so nothing of it is left. A
        revision with an autocommit block is never re-run (part of it may have
        committed), nor one that committed statements before the timeout
        (DDL on MySQL): running it again would apply them twice.
        Each retry is logged and recorded in ``revisor_history`` (status
        ``retried``). Returns the failure that ended the run, or None.
        """
        steps, described = list(self.plan.steps), list(self.base.plan)
        retries = 0
        while True:
            done = 0 if self._all_or_nothing else len(progress.committed)
            if self._all_or_nothing:
                progress.applied.clear()
                progress.committed.clear()
            try:
                self._run_steps(
                    steps[done:],
                    described[done:],
                    progress,
                    dry_run=self.options.dry_run,
                    offset=done,
                    total=len(steps),
                )
            except StepFailed as failure:
                if not self._may_retry(failure, retries):
                    return failure
                retries += 1
                self._retry_later(failure, progress, retries)
                continue
            return None

    def _may_retry(self, failure: StepFailed, retries: int) -> bool:
        step = failure.step
        return (
            retries < self.options.ddl_lock_retries
            and step is not None
            and self.dialect.is_lock_timeout(failure.cause)
            and failure.committed is None
            and not uses_autocommit(step.revision)
        )

    def _retry_later(self, failure: StepFailed, progress: _Progress, attempt: int) -> None:
        with suppress(sa.exc.DBAPIError):
            self.conn.rollback()
        message = _failure_message(failure) + self._blockers_note(failure)
        pause = DDL_RETRY_BACKOFF.delay(attempt - 1)
        step = failure.step
        assert step is not None
        self.reporter.info(
            f"{step.revision.revision} waited too long for a table lock; retrying it in "
            f"{pause:.1f}s (retry {attempt} of {self.options.ddl_lock_retries}): {message}"
        )
        if self.record:
            self._record_failed_step(step, progress, message, status=RETRIED)
        time.sleep(pause)

    def _blockers_note(self, failure: StepFailed) -> str:
        """Who held the table lock a statement timed out on, when that was the failure."""
        if not self.dialect.is_lock_timeout(failure.cause):
            return ""
        statement = getattr(failure.cause, "statement", None) or ""
        try:
            blockers = self.dialect.lock_holders(self.conn, statement=str(statement))
        except sa.exc.DBAPIError:
            return ""
        return f"; {blockers}" if blockers else ""

    def _finish(
        self,
        status: str,
        *,
        code: ExitCode = ExitCode.OK,
        applied: Sequence[contract.Step] = (),
        error: str | None = None,
        rolled_back: bool = False,
        reason: str | None = None,
    ) -> contract.Result:
        """Read where the database is, close the run's history row, and say how it ended."""
        heads = read_heads(self.conn, self.project.version_table)
        if self.record:
            self.history.finish_run(self.conn, self.run, status=status, to_heads=heads, error=error)
            self.conn.commit()
        return replace(
            _finished(
                self.base,
                code=code,
                applied=tuple(applied),
                to=heads,
                error=error,
                rolled_back=rolled_back,
            ),
            detail_reason=reason,
        )

    def _failed(self, failure: StepFailed, progress: _Progress) -> contract.Result:
        if self.conn.invalidated:
            raise self._session_lost(failure, progress)
        with suppress(sa.exc.DBAPIError):
            self.conn.rollback()
        message = (
            _failure_message(failure)
            + self._blockers_note(failure)
            + self._invalid_indexes_note(failure)
        )
        step = failure.step
        partial = failure.committed if step is not None else None
        if step is not None and partial is not None:
            message += _partially_applied_note(step, partial)
        if step is not None:
            self.reporter.step_failed(
                progress.index, len(self.plan.steps), contract_step(step), message
            )
        if self.record and step is not None:
            self._record_failed_step(
                step,
                progress,
                message,
                status=FAILED if partial is None else PARTIAL,
                committed=partial,
            )
        committed = [] if self._all_or_nothing else list(progress.committed)
        rollback = self.options.on_failure == "rollback"
        if step is not None and partial is not None:
            return self._partially_applied(failure, committed, progress, message)
        if rollback and committed:
            return self._roll_back(committed, progress, message)
        # Nothing to undo: either --on-failure stop, or nothing had committed
        # (first step, or all or nothing), so the database is at the start.
        return self._finish(
            ROLLED_BACK if rollback else FAILED,
            code=ExitCode.MIGRATION_FAILED,
            applied=progress.applied if committed else (),
            error=message,
            rolled_back=rollback,
        )

    def _session_lost(self, failure: StepFailed, progress: _Progress) -> DatabaseUnreachable:
        """The connection broke under a step: stop here, and say where the database is.

        The session is gone, and with it the step's open transaction and the
        advisory lock. Nothing more is done: no rollback, no history row, since
        each would need a new session, which would not hold the lock (another
        runner may hold it by now; :func:`revisor.connection._one_session`
        refuses to open one). The run row stays ``running`` until the next
        runner, under the lock, marks it interrupted. Exit 6: a run again
        (the Job's retry) continues from where the database is. The result
        says where that is when it is known: after the revisions whose COMMIT
        the server confirmed. When the connection went during a COMMIT, the
        server may or may not have committed: the error names both places and
        the result claims neither.
        """
        cause = failure.cause
        orig = getattr(cause, "orig", None) or cause
        detail = " ".join(str(orig).split()).rstrip(".")
        step = failure.step
        where = ""
        if step is not None:
            what = describe(step.revision)
            where = f" during {step.revision.revision}" + (f" ({what})" if what else "")
        start = self.plan.from_heads
        if self.options.dry_run:
            committed: list[RevisionStep] = []
            unsure: list[RevisionStep] = []
        elif self.options.single_transaction:
            # One transaction: lost before its COMMIT (a step was running), or during it.
            committed, unsure = [], [] if step is not None else list(self.plan.steps)
        else:
            committed = list(progress.committed)
            unsure = [step] if step is not None and progress.committing else []
        at = _heads_after(start, committed)
        message = (
            f"lost the connection to the database{where}: {detail}. The session ended (the "
            "server restarted, crashed or ended it, or the network cut it), and with it the "
            "migration lock"
        )
        if unsure:
            maybe = _heads_after(start, committed + unsure)
            message += (
                f"; it went during the COMMIT of {', '.join(s.revision.revision for s in unsure)}"
                f", which the server may or may not have made: the database is at "
                f"{heads_text(at)} or at {heads_text(maybe)}"
            )
        else:
            running = f"; {step.revision.revision}'s open transaction was lost" if step else ""
            message += (
                f"{running}. {len(committed)} revision(s) of this run had committed: the "
                f"database is at {heads_text(at)}"
            )
        message = scrub(message + ". Nothing was rolled back")
        hint = (
            "run again once the database is reachable: the next run marks this one "
            "interrupted and continues from where the database is"
        )
        if step is not None:
            self.reporter.step_failed(
                progress.index, len(self.plan.steps), contract_step(step), message
            )
        if unsure:
            # Where the database is is not known: the result claims nothing.
            return DatabaseUnreachable(message, hint=hint)
        context = _finished(
            self.base,
            code=ExitCode.UNREACHABLE,
            applied=tuple(progress.applied) if committed else (),
            to=at,
            error=message,
        )
        return DatabaseUnreachable(message, hint=hint, context=context)

    def _partially_applied(
        self,
        failure: StepFailed,
        committed: list[RevisionStep],
        progress: _Progress,
        message: str,
    ) -> contract.Result:
        """Stop at a half-applied revision: exit 8, and no rollback over it.

        ``--on-failure rollback`` would run the downgrade() of the revisions
        before it while part of this one is still there (a table that
        references theirs, say): the downgrades could fail half-way too, or
        succeed and leave this revision's statements orphaned. The revisions
        this run applied stay applied, and the message says why.
        """
        step, partial = failure.step, failure.committed
        assert step is not None and partial is not None
        error = message
        if self.options.on_failure == "rollback" and committed:
            error += (
                f"; --on-failure rollback left the {len(committed)} revision(s) this run "
                f"applied before it in place: their downgrade() would run over "
                f"{step.revision.revision}'s committed statements; downgrade them once it is "
                "finished or undone"
            )
        cause = failure.cause
        statement = None
        if isinstance(cause, sa.exc.StatementError):
            statement = " ".join(str(cause.statement or "").split()) or None
            why = " ".join(str(cause.orig if cause.orig is not None else cause).split())
        else:
            why = f"{type(cause).__name__}: {' '.join(str(cause).split())}"
        details = contract.PartiallyApplied(
            revision=step.revision.revision,
            committed=partial.committed,
            statements=tuple(scrub(text) for text in partial.statements),
            direction="upgrade" if step.is_upgrade else "downgrade",
            failed_statement=scrub(statement) if statement else None,
            cause=scrub(why),
            stamp=tuple(step.to_revisions) or ("base",),
        ).to_details()
        result = self._finish(
            PARTIAL,
            code=ExitCode.PARTIALLY_APPLIED,
            applied=progress.applied if committed else (),
            error=scrub(error),
        )
        return replace(result, details={**result.details, **details})

    def _invalid_indexes_note(self, failure: StepFailed) -> str:
        """What a failed concurrent index build left behind, and how to clear it.

        An index this run left INVALID (its CREATE INDEX CONCURRENTLY failed
        in an autocommit block, which no rollback undoes) is named with the
        fix; so is an INVALID index an earlier run left that this run then
        tripped over ("already exists"), instead of failing obscurely.
        """
        try:
            now = self.dialect.invalid_indexes(self.conn)
        except sa.exc.DBAPIError:
            return ""
        left = sorted(now - self.invalid_before)
        notes = []
        if left:
            notes.append(
                f"it left INVALID index(es) {', '.join(left)} (a concurrent index build that "
                "failed half-way, which no rollback undoes): drop them with "
                + "; ".join(f"DROP INDEX CONCURRENTLY {name}" for name in left)
                + " before running again"
            )
        text = str(failure.cause)
        tripped = sorted(
            name
            for name in self.invalid_before & now
            if "already exists" in text and f'"{name.rpartition(".")[2]}"' in text
        )
        if tripped:
            notes.append(
                f"{', '.join(tripped)} is an INVALID index an earlier failed run left behind: "
                + "; ".join(f"DROP INDEX CONCURRENTLY {name}" for name in tripped)
                + ", then run again"
            )
        return "".join(f"; {note}" for note in notes)

    @property
    def _all_or_nothing(self) -> bool:
        return self.options.single_transaction or self.options.dry_run

    def _roll_back(
        self, committed: list[RevisionStep], progress: _Progress, message: str
    ) -> contract.Result:
        undo = list(reversed(committed))
        # As far back as the first step that cannot run backwards (no
        # downgrade(), or one that raises); a `pass` downgrade runs as a no-op.
        stop = next((i for i, s in enumerate(undo) if _irreversible(s) is not None), len(undo))
        possible = [reversed_step(s) for s in undo[:stop]]
        if possible:
            self.reporter.info(
                f"rolling back {len(possible)} step(s)"
                + (f" to {heads_text(self.plan.from_heads)}" if stop == len(undo) else "")
            )
        back = _Progress()
        try:
            if possible:
                self._run_steps(possible, [contract_step(s) for s in possible], back, dry_run=False)
        except StepFailed as again:
            second = _failure_message(again)
            if again.step is not None and again.committed is not None:
                second += _partially_applied_note(again.step, again.committed)
            if again.step is not None:
                self._record_failed_step(
                    again.step,
                    back,
                    second,
                    status=FAILED if again.committed is None else PARTIAL,
                    committed=again.committed,
                )
            return self._finish(
                ROLLBACK_FAILED,
                code=ExitCode.ROLLBACK_FAILED,
                applied=progress.applied,
                error=f"{message}; then the rollback failed: {second}",
            )
        if stop < len(undo):
            blocked = undo[stop]
            problem = _irreversible(blocked)
            assert problem is not None
            heads = read_heads(self.conn, self.project.version_table)
            why = problem_text(self.project.scripts, blocked.revision.revision, problem)
            return self._finish(
                ROLLBACK_INCOMPLETE,
                code=ExitCode.MIGRATION_FAILED,
                applied=progress.applied,
                error=f"{message}; rolled back {stop} of {len(undo)} step(s), to "
                f"{heads_text(heads)}, and stopped there: {why}",
                reason=Reason.ROLLBACK_INCOMPLETE,
            )
        return self._finish(
            ROLLED_BACK,
            code=ExitCode.MIGRATION_FAILED,
            applied=progress.applied,
            error=message,
            rolled_back=True,
        )

    def _record_failed_step(
        self,
        step: RevisionStep,
        progress: _Progress,
        message: str,
        *,
        status: str = FAILED,
        committed: StatementsRan | None = None,
    ) -> None:
        with suppress(sa.exc.DBAPIError):
            if self.conn.in_transaction():
                self.conn.rollback()
            self.history.ensure(self.conn)
            rev = step.revision.revision
            self.history.record_step(
                self.conn,
                self.run,
                direction="upgrade" if step.is_upgrade else "downgrade",
                revision=rev,
                from_revision=",".join(step.from_revisions) or "base",
                to_revision=",".join(step.to_revisions) or "base",
                description=describe(step.revision),
                started_at=progress.started_at,
                status=status,
                checksum=self.project.scripts.checksum(rev),
                error=message,
                statements_committed=committed.committed if committed is not None else None,
                statements=committed.statements if committed is not None else (),
            )
            self.conn.commit()

    def _run_steps(
        self,
        steps: list[RevisionStep],
        described: Sequence[contract.Step],
        progress: _Progress,
        *,
        dry_run: bool,
        offset: int = 0,
        total: int | None = None,
    ) -> None:
        """Run ``steps`` through Alembic on the locked connection.

        ``offset`` steps of the plan ran already (numbering goes on from
        there, out of ``total``) when a retry resumes it.

        ``described`` is ``steps`` as :func:`contract_step` gives them, built once
        per run rather than per step and per line (a thousand-step run reads
        each revision's docstring once).
        """
        conn, scripts = self.conn, self.project.scripts
        total = len(steps) if total is None else total
        expected_heads = read_heads(conn, self.project.version_table)
        per_migration = not (self.options.single_transaction or dry_run)

        def fn(heads: Sequence[str], _ctx: MigrationContext) -> Iterator[RevisionStep]:
            if set(heads) != set(expected_heads):
                raise RuntimeError(
                    f"the version table changed under the lock: expected "
                    f"{heads_text(expected_heads)}, found {heads_text(heads)}"
                )
            pairs = zip(steps, described, strict=True)
            for index, (step, planned) in enumerate(pairs, offset + 1):
                if stop_requested():
                    # Between revisions: the last one has committed, nothing is open.
                    raise Interrupted(
                        f"asked to stop (SIGTERM) before {planned.revision}: the run stopped "
                        f"between revisions, {index - 1} of {total} applied",
                        hint="run again to continue from there",
                        reason=Reason.INTERRUPTED,
                    )
                progress.current, progress.described, progress.index = step, planned, index
                progress.committing = False
                progress.started_mono, progress.started_at = time.monotonic(), utcnow()
                self.reporter.step_started(index, total, planned)
                if self.statements is not None:
                    self.statements.reset()
                yield step
                # Past the yield: this step's transaction has committed (or, all
                # or nothing, joined the one that commits at the end).
                seconds = time.monotonic() - progress.started_mono
                done = replace(planned, seconds=seconds)
                progress.applied.append(done)
                progress.committed.append(step)
                progress.current = progress.described = None
                self.reporter.step_finished(index, total, done)

        def on_version_apply(
            *, ctx: MigrationContext, step: MigrationInfo, heads: set[str], run_args: Any
        ) -> None:
            current, planned = progress.current, progress.described
            progress.committing = per_migration
            if not self.record or current is None or planned is None:
                return
            rev = planned.revision
            self.history.record_step(
                ctx.connection or conn,
                self.run,
                direction=planned.direction,
                revision=rev,
                from_revision=",".join(current.from_revisions) or "base",
                to_revision=",".join(current.to_revisions) or "base",
                description=planned.description,
                started_at=progress.started_at,
                status=APPLIED,
                checksum=scripts.checksum(rev),
                # Ours is the last callback; Alembic commits the step next.
                commit=per_migration,
            )

        outer = conn.begin() if dry_run else None
        try:
            run_environment(
                self.project,
                conn,
                fn=fn,
                per_migration=per_migration,
                on_version_apply=on_version_apply,
                keep_transaction=outer is not None,
            )
        except RevisorError:
            if outer is not None:
                outer.rollback()
            raise
        except Exception as exc:
            committed = None
            if self.statements is not None:  # first, before anything else runs on it
                step = progress.current
                autocommit = step is not None and uses_autocommit(step.revision)
                committed = self.statements.committed(autocommit=autocommit)
            if outer is not None:
                with suppress(sa.exc.DBAPIError):
                    outer.rollback()
            raise StepFailed(progress.current, exc, committed=committed) from exc
        if outer is not None:
            outer.rollback()


def _with_env_py_note(
    project: Project, base: contract.Result, reporter: Reporter
) -> contract.Result:
    """A hermetic run over scripts that ship an env.py says so once; a warning if it matters."""
    scripts = project.scripts
    if project.env_py or not scripts.has_env_py:
        return base
    findings = env_py_findings(scripts.env_py)
    if not findings:
        reporter.info(f"{scripts.env_py} not run (hermetic run; --env-py runs it)")
        return base
    warning = (
        f"{scripts.env_py} was not run (a hermetic run), but it {'; it '.join(findings)}: "
        "the schema may differ from what the project's own alembic builds; run it with "
        "--env-py (spec.source.envPy), or give its naming convention with --metadata "
        "MOD:ATTR (spec.metadata)"
    )
    if project.metadata is not None:
        warning = (
            f"{scripts.env_py} was not run (a hermetic run with --metadata "
            f"{project.metadata}); it {'; it '.join(findings)}: --env-py runs it"
        )
    reporter.info(f"warning: {warning}")
    return replace(base, warnings=(*base.warnings, warning))


def _partially_applied_note(step: RevisionStep, partial: StatementsRan) -> str:
    """What a half-applied step left behind, and the two ways out, for its error."""
    rev = step.revision.revision
    at = ",".join(step.from_revisions) or "base"
    done = ",".join(step.to_revisions) or "base"
    listed = partial.numbered()
    return scrub(
        f"; {rev} is partially applied: the database commits each DDL statement as it runs "
        f"(no transactional DDL), and {partial.committed} of its statement(s) had committed "
        f"before it failed: {listed} the version table still says {at}. Fix: undo them by "
        f"hand and run again, or finish {rev} by hand, then `revisor stamp {done}`"
    )


def _invalid_indexes_warning(names: frozenset[str]) -> str:
    listed = ", ".join(sorted(names))
    return (
        f"INVALID index(es) {listed} found, left by a concurrent index build that failed or "
        "was interrupted; a revision that creates one again fails with 'already exists': "
        + "; ".join(f"DROP INDEX CONCURRENTLY {name}" for name in sorted(names))
    )


def _heads_after(start: Sequence[str], steps: Sequence[RevisionStep]) -> tuple[str, ...]:
    """The version table after ``steps`` committed from ``start``, as Alembic updates it."""
    heads = HeadsInMemory(start)
    for step in steps:
        heads.update_to_step(step)
    return tuple(sorted(heads.heads))


def _irreversible(step: RevisionStep) -> DowngradeProblem | None:
    """Why committed ``step`` cannot be run backwards at all (None: it can)."""
    if not step.is_upgrade:
        return None  # undoing a downgrade is an upgrade, which always exists
    problem = downgrade_problem(step.revision)
    return problem if problem in IRREVERSIBLE else None


def _failure_message(failure: StepFailed) -> str:
    cause = failure.cause
    if isinstance(cause, sa.exc.StatementError):
        orig = cause.orig if cause.orig is not None else cause
        detail = " ".join(str(orig).split())
        statement = " ".join(str(cause.statement or "").split())
        if statement:
            detail += f" [SQL: {statement[:300]}]"
    else:
        detail = f"{type(cause).__name__}: {cause}"
    if failure.step is None:
        return scrub(detail)
    step = failure.step
    what = describe(step.revision)
    direction = "upgrade" if step.is_upgrade else "downgrade"
    label = f"{step.revision.revision}" + (f" ({what})" if what else "")
    at = _line_in(cause, step.revision.path)
    return scrub(f"{direction} {label} failed{f' at {at}' if at else ''}: {detail}")


def _line_in(exc: BaseException, path: str) -> str:
    """``path:line`` of the innermost frame of ``exc`` in the revision file ``path``."""
    target = Path(path).resolve()
    found = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == target:
            found = f"{path}:{frame.lineno}"
    return found


def _finished(
    base: contract.Result,
    *,
    code: ExitCode = ExitCode.OK,
    applied: tuple[contract.Step, ...] = (),
    to: Sequence[str] | None = None,
    error: str | None = None,
    rolled_back: bool = False,
) -> contract.Result:
    return replace(
        base,
        exit_code=code,
        applied=applied,
        to_revisions=tuple(to) if to is not None else base.to_revisions,
        error=error,
        rolled_back=rolled_back,
        finished_at=timestamp(utcnow()),
    )


def _stamp_locked(
    project: Project,
    conn: Connection,
    target: str,
    *,
    heads: tuple[str, ...],
    runner: str | None,
    reporter: Reporter,
) -> tuple[str, ...]:
    """Stamp ``target`` on the locked connection, recorded as a ``stamp`` run; the new heads."""
    table = project.version_table
    steps = project.scripts.stamp_steps(target, heads)
    history = History(table.schema)
    run = new_run(
        command="stamp",
        direction="stamp",
        from_heads=heads,
        target=target,
        runner=runner,
        engine_version=__version__,
    )
    created = history.ensure(conn)
    history.start_run(conn, run)
    conn.commit()
    try:
        run_environment(project, conn, fn=lambda _heads, _ctx: iter(steps), per_migration=True)
    except RevisorError:
        # env.py refused (a stamp runs it too, with --env-py): nothing was stamped.
        if not conn.invalidated:
            with suppress(sa.exc.DBAPIError):
                if conn.in_transaction():
                    conn.rollback()
                history.forget_run(conn, run, drop_table=created)
                conn.commit()
        raise
    after = read_heads(conn, table)
    history.finish_run(conn, run, status=SUCCEEDED, to_heads=after)
    conn.commit()
    reporter.info(f"stamped {heads_text(heads)} -> {heads_text(after)}")
    return after


def stamp(
    project: Project,
    target: str,
    reporter: Reporter,
    *,
    lock_timeout: float | None,
    runner: str | None = None,
) -> contract.Result:
    """Set the version table to ``target`` without running any script.

    No schema snapshot is recorded: a stamp says nothing about whether the
    schema is the revision's (``revisor drift --record`` records it once it is).
    """
    started = utcnow()

    def work(conn: Connection, _dialect: DialectSupport) -> contract.Result:
        heads = read_heads(conn, project.version_table)
        after = _stamp_locked(project, conn, target, heads=heads, runner=runner, reporter=reporter)
        return contract.Result(
            command="stamp",
            exit_code=ExitCode.OK,
            direction="stamp",
            target=target,
            from_revisions=heads,
            to_revisions=after,
            started_at=timestamp(started),
            finished_at=timestamp(utcnow()),
            engine_version=__version__,
            runner=runner,
        )

    result: contract.Result = with_lock(project, work, lock_timeout=lock_timeout, reporter=reporter)
    return result


def _with_snapshot(
    project: Project,
    conn: Connection,
    result: contract.Result,
    *,
    recorded_by: str,
    run_id: str | None,
    only_if_missing: bool,
    reporter: Reporter,
) -> contract.Result:
    """``result`` once the schema the run left is recorded (its hash in ``details``).

    Only where the database is at a clean revision: a run that succeeded or
    failed cleanly (exit 4: what failed left nothing, what committed is
    whole revisions), not a partially applied revision, a failed rollback or
    a runner asked to stop (it should stop now). A snapshot that cannot be
    taken never fails the run that changed the database: it is a warning.
    """
    clean = result.exit_code in (ExitCode.OK, ExitCode.MIGRATION_FAILED)
    if not clean or stop_requested():
        return result
    try:
        recorded = record_snapshot(
            project,
            conn,
            heads=result.to_revisions,
            recorded_by=recorded_by,
            run_id=run_id,
            only_if_missing=only_if_missing,
        )
    except Exception as exc:
        with suppress(sa.exc.DBAPIError):
            conn.rollback()
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        warning = scrub(f"the schema was not recorded for drift checks: {detail}")
        reporter.info(f"warning: {warning}")
        return replace(result, warnings=(*result.warnings, warning))
    if recorded is None:
        return result
    return replace(result, details={**result.details, SCHEMA_HASH: recorded.hash})


__all__ = [
    "RunCommand",
    "RunOptions",
    "make_plan",
    "migrate",
    "read_heads",
    "record_snapshot",
    "snapshot_schema",
    "stamp",
    "with_lock",
]
