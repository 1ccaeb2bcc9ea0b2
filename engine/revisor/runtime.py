"""One migration run: lock, plan, apply step by step, record, and undo on failure.

The order is what makes a run safe:

1. open the one connection, take the advisory lock on it, set the session up;
2. read the current heads and plan *under the lock* (a second runner that
   waited finds nothing to do and exits 0 without writing anything);
3. refuse bad plans before writing anything (unknown target, irreversible
   steps under ``--on-failure rollback``, autocommit scripts in a dry run,
   a plan that is not the approved one);
4. run the steps through Alembic with a generator ``fn``: the code after
   each ``yield`` runs once that step's transaction has committed, so
   progress is only reported for committed work (FIELD-NOTES);
5. on failure, optionally run the committed steps backwards.

The connection is committed before Alembic is configured, so Alembic owns
its transactions ("silent rollback trap"); a dry run is the deliberate use of
that trap: an outer transaction that is rolled back at the end.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext, MigrationInfo, RevisionStep
from sqlalchemy.engine import Connection

from revisor import __version__, contract
from revisor.connection import run_with_connection
from revisor.contract import ExitCode
from revisor.dialects import DialectSupport, lock_key, support_for
from revisor.environment import DEFAULT_VERSION_TABLE, Session, run_environment
from revisor.errors import BadInput, RevisorError
from revisor.history import (
    APPLIED,
    FAILED,
    ROLLBACK_FAILED,
    ROLLED_BACK,
    SUCCEEDED,
    History,
    new_run,
    utcnow,
)
from revisor.output import Reporter
from revisor.redaction import scrub
from revisor.scripts import (
    Plan,
    Scripts,
    describe,
    plan_apply,
    plan_downgrade,
    plan_upgrade,
    reversal_problems,
    script_errors,
    uses_autocommit,
)

RunCommand = Literal["apply", "upgrade", "downgrade"]


@dataclass(frozen=True)
class RunOptions:
    command: RunCommand
    target: str
    single_transaction: bool = False
    on_failure: Literal["stop", "rollback"] = "stop"
    dry_run: bool = False
    expect_plan_hash: str | None = None
    require_reversible: bool = False


def read_heads(conn: Connection, session: Session) -> tuple[str, ...]:
    """The revisions in the version table; ends the read transaction."""
    ctx = MigrationContext.configure(
        connection=conn,
        opts={
            "version_table": session.version_table,
            "version_table_schema": session.version_table_schema,
        },
    )
    heads = tuple(ctx.get_current_heads())
    conn.rollback()
    return heads


def make_plan(scripts: Scripts, command: RunCommand, target: str, heads: Sequence[str]) -> Plan:
    planner = {"apply": plan_apply, "upgrade": plan_upgrade, "downgrade": plan_downgrade}[command]
    return planner(scripts, target, heads)


def with_lock(
    session: Session,
    work: Callable[[Connection, DialectSupport], Any],
    *,
    reporter: Reporter | None = None,
) -> Any:
    """Open the connection, hold the advisory lock around ``work``, release it.

    ``reporter`` hears it when the run has to wait for another runner's lock.
    """

    def locked(conn: Connection) -> Any:
        dialect = support_for(session.db)
        key = lock_key(session.db, schema=session.version_table_schema, table=session.version_table)
        dialect.acquire_lock(
            conn,
            key=key,
            timeout=session.lock_timeout,
            on_wait=reporter.info if reporter is not None else None,
        )
        try:
            dialect.prepare_session(
                conn,
                statement_timeout=session.statement_timeout,
                ddl_lock_timeout=session.ddl_lock_timeout,
            )
            return work(conn, dialect)
        finally:
            with suppress(sa.exc.DBAPIError, OSError):
                if conn.in_transaction():
                    conn.rollback()
                dialect.release_lock(conn, key=key)

    return run_with_connection(session.db, locked)


def migrate(session: Session, options: RunOptions, reporter: Reporter) -> contract.Result:
    """Move the database to ``options.target``; the outcome is a contract Result."""
    started = utcnow()

    def work(conn: Connection, dialect: DialectSupport) -> contract.Result:
        heads = read_heads(conn, session)
        plan = make_plan(session.scripts, options.command, options.target, heads)
        planned = plan.contract_steps()
        base = contract.Result(
            command=options.command,
            exit_code=ExitCode.OK,
            direction=plan.direction,
            target=options.target,
            from_revisions=heads,
            to_revisions=heads,
            plan=planned,
            plan_hash=plan.hash(session.scripts),
            dry_run=options.dry_run,
            started_at=_iso(started),
            engine_version=__version__,
            runner=session.runner,
        )
        _refuse_unsafe(session, options, plan, base, dialect)
        # Only now, past every refusal, may the run write anything.
        history = History(session.version_table_schema)
        if not options.dry_run and history.exists(conn):
            stale = history.mark_interrupted(conn)
            conn.commit()
            if stale:
                reporter.info(f"marked {stale} run(s) left by a stopped runner as interrupted")
        if not plan.steps:
            reporter.info(f"already at {options.target} ({_heads_text(heads)}); nothing to do")
            return _finished(base)
        reporter.planned(planned, dry_run=options.dry_run)
        return _Run(
            session=session,
            options=options,
            reporter=reporter,
            history=history,
            conn=conn,
            plan=plan,
            base=base,
        ).execute()

    result: contract.Result = with_lock(session, work, reporter=reporter)
    return result


def _refuse_unsafe(
    session: Session,
    options: RunOptions,
    plan: Plan,
    base: contract.Result,
    dialect: DialectSupport,
) -> None:
    """Refuse, before anything is written, a run that must not start.

    Every refusal carries ``base`` (the revisions and the plan with its hash)
    so the result shows what would have run; for ``PlanChanged`` that is the
    new plan a person has to review and approve.
    """
    scripts = session.scripts
    plan_hash = base.plan_hash or ""
    # An empty plan changes nothing, so it needs no approval: "already at the
    # target" is the truth whatever hash was approved.
    approved = options.expect_plan_hash
    if approved is not None and approved != plan_hash and plan.steps:
        raise BadInput(
            f"the plan changed since it was approved: approved {approved}, "
            f"now {plan_hash} ({len(plan.steps)} step(s) from {_heads_text(plan.from_heads)})",
            hint="review the new plan and approve its hash",
            reason="PlanChanged",
            context=base,
        )
    if plan.direction == "downgrade":
        problems = reversal_problems(scripts, plan.revisions)
        if problems:
            raise BadInput(
                "cannot downgrade: " + "; ".join(problems),
                hint="write the downgrade() of these revisions; nothing was run",
                reason="NotReversible",
                context=base,
            )
    if plan.direction == "upgrade" and (
        options.on_failure == "rollback" or options.require_reversible
    ):
        problems = reversal_problems(scripts, plan.revisions)
        if problems:
            why = "--require-reversible" if options.require_reversible else "--on-failure rollback"
            raise BadInput(
                f"{why} needs every planned revision to be reversible: " + "; ".join(problems),
                hint="write their downgrade()"
                + ("" if options.require_reversible else ", or run with --on-failure stop"),
                reason="NotReversible",
                context=base,
            )
    if options.dry_run:
        if not dialect.transactional_ddl:
            raise BadInput(
                f"--dry-run needs transactional DDL, which {session.db.backend} lacks",
                context=base,
            )
        autocommit = [s.revision.revision for s in plan.steps if uses_autocommit(s.revision)]
        if autocommit:
            raise BadInput(
                "--dry-run cannot undo autocommit_block() (it commits on its own), used by: "
                + ", ".join(autocommit),
                hint="review those revisions by hand, or run revisor sql for their SQL",
                context=base,
            )


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


class StepFailed(Exception):
    def __init__(self, step: RevisionStep | None, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.step = step
        self.cause = cause


class _Run:
    """The steps of one plan, and the way back if they fail."""

    def __init__(
        self,
        *,
        session: Session,
        options: RunOptions,
        reporter: Reporter,
        history: History,
        conn: Connection,
        plan: Plan,
        base: contract.Result,
    ) -> None:
        self.session, self.options, self.reporter = session, options, reporter
        self.history, self.conn, self.plan, self.base = history, conn, plan, base
        self.run = new_run(
            command=options.command,
            direction=plan.direction,
            from_heads=plan.from_heads,
            target=options.target,
            runner=session.runner,
            engine_version=__version__,
        )
        self.record = not options.dry_run

    def execute(self) -> contract.Result:
        if self.record:
            self.history.ensure(self.conn)
            self.history.start_run(self.conn, self.run)
            self.conn.commit()
        progress = _Progress()
        try:
            self._run_steps(
                list(self.plan.steps), self.base.plan, progress, dry_run=self.options.dry_run
            )
        except StepFailed as failure:
            return self._failed(failure, progress)
        except RevisorError as refused:
            # env.py refused to run (its own error, a wrong database, offline
            # mode): the run row must not stay "running" for the next runner
            # to call interrupted.
            self._refused(refused)
            raise
        heads = read_heads(self.conn, self.session)
        if self.record:
            self.history.finish_run(self.conn, self.run, status=SUCCEEDED, to_heads=heads)
            self.conn.commit()
        if self.options.dry_run:
            self.reporter.info("dry run: every step ran and was rolled back")
        return _finished(self.base, applied=tuple(progress.applied), to=heads)

    def _refused(self, refused: RevisorError) -> None:
        if refused.context is None:
            refused.context = self.base
        if not self.record:
            return
        with suppress(sa.exc.DBAPIError):
            if self.conn.in_transaction():
                self.conn.rollback()
            heads = read_heads(self.conn, self.session)
            self.history.finish_run(
                self.conn, self.run, status=FAILED, to_heads=heads, error=scrub(str(refused))
            )
            self.conn.commit()

    def _failed(self, failure: StepFailed, progress: _Progress) -> contract.Result:
        with suppress(sa.exc.DBAPIError):
            self.conn.rollback()
        message = _failure_message(failure)
        step = failure.step
        if step is not None:
            self.reporter.step_failed(progress.index, len(self.plan.steps), step_of(step), message)
        if self.record and step is not None:
            self._record_failed_step(step, progress, message)
        heads = read_heads(self.conn, self.session)
        committed = [] if self._all_or_nothing else list(progress.committed)
        rollback = self.options.on_failure == "rollback"
        if rollback and committed:
            return self._roll_back(committed, progress, message)
        # Nothing to undo: either --on-failure stop, or nothing had committed
        # (first step, or all or nothing), so the database is at the start.
        if self.record:
            status = ROLLED_BACK if rollback else FAILED
            self.history.finish_run(
                self.conn, self.run, status=status, to_heads=heads, error=message
            )
            self.conn.commit()
        return _finished(
            self.base,
            code=ExitCode.MIGRATION_FAILED,
            applied=tuple(progress.applied) if committed else (),
            to=heads,
            error=message,
            rolled_back=rollback,
        )

    @property
    def _all_or_nothing(self) -> bool:
        return self.options.single_transaction or self.options.dry_run

    def _roll_back(
        self, committed: list[RevisionStep], progress: _Progress, message: str
    ) -> contract.Result:
        reverse = [
            RevisionStep(s.revision_map, s.revision, not s.is_upgrade) for s in reversed(committed)
        ]
        self.reporter.info(
            f"rolling back {len(reverse)} step(s) to {_heads_text(self.plan.from_heads)}"
        )
        back = _Progress()
        try:
            self._run_steps(reverse, [step_of(s) for s in reverse], back, dry_run=False)
        except StepFailed as again:
            second = _failure_message(again)
            if again.step is not None:
                self._record_failed_step(again.step, back, second)
            heads = read_heads(self.conn, self.session)
            error = f"{message}; then the rollback failed: {second}"
            self.history.finish_run(
                self.conn, self.run, status=ROLLBACK_FAILED, to_heads=heads, error=error
            )
            self.conn.commit()
            return _finished(
                self.base,
                code=ExitCode.ROLLBACK_FAILED,
                applied=tuple(progress.applied),
                to=heads,
                error=error,
            )
        heads = read_heads(self.conn, self.session)
        self.history.finish_run(
            self.conn, self.run, status=ROLLED_BACK, to_heads=heads, error=message
        )
        self.conn.commit()
        return _finished(
            self.base,
            code=ExitCode.MIGRATION_FAILED,
            applied=tuple(progress.applied),
            to=heads,
            error=message,
            rolled_back=True,
        )

    def _record_failed_step(self, step: RevisionStep, progress: _Progress, message: str) -> None:
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
                status=FAILED,
                checksum=self.session.scripts.checksum(rev),
                error=message,
            )
            self.conn.commit()

    def _run_steps(
        self,
        steps: list[RevisionStep],
        described: Sequence[contract.Step],
        progress: _Progress,
        *,
        dry_run: bool,
    ) -> None:
        """Run ``steps`` through Alembic on the locked connection.

        ``described`` is ``steps`` as :func:`step_of` gives them, built once
        per run rather than per step and per line (a thousand-step run reads
        each revision's docstring once).
        """
        conn, session = self.conn, self.session
        total = len(steps)
        expected_heads = read_heads(conn, session)
        per_migration = not (self.options.single_transaction or dry_run)

        def fn(heads: Sequence[str], _ctx: MigrationContext) -> Iterator[RevisionStep]:
            if set(heads) != set(expected_heads):
                raise RuntimeError(
                    f"the version table changed under the lock: expected "
                    f"{_heads_text(expected_heads)}, found {_heads_text(heads)}"
                )
            for index, (step, planned) in enumerate(zip(steps, described, strict=True), 1):
                progress.current, progress.described, progress.index = step, planned, index
                progress.started_mono, progress.started_at = time.monotonic(), utcnow()
                self.reporter.step_started(index, total, planned)
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
                checksum=session.scripts.checksum(rev),
                # Ours is the last callback; Alembic commits the step next.
                commit=per_migration,
            )

        outer = conn.begin() if dry_run else None
        try:
            run_environment(
                session,
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
            if outer is not None:
                with suppress(sa.exc.DBAPIError):
                    outer.rollback()
            raise StepFailed(progress.current, exc) from exc
        if outer is not None:
            outer.rollback()


def step_of(step: RevisionStep, *, seconds: float | None = None) -> contract.Step:
    return contract.Step(
        revision=step.revision.revision,
        direction="upgrade" if step.is_upgrade else "downgrade",
        description=describe(step.revision),
        seconds=seconds,
    )


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
    return scrub(f"{direction} {label} failed: {detail}")


def _heads_text(heads: Sequence[str]) -> str:
    return ", ".join(heads) if heads else "base"


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


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
        finished_at=_iso(utcnow()),
    )


def stamp(session: Session, target: str, reporter: Reporter) -> contract.Result:
    """Set the version table to ``target`` without running any script."""
    started = utcnow()

    def work(conn: Connection, _dialect: DialectSupport) -> contract.Result:
        heads = read_heads(conn, session)
        with script_errors(session.scripts.dirs):
            steps = session.scripts.directory._stamp_revs(target, heads)
        history = History(session.version_table_schema)
        run = new_run(
            command="stamp",
            direction="stamp",
            from_heads=heads,
            target=target,
            runner=session.runner,
            engine_version=__version__,
        )
        history.ensure(conn)
        history.start_run(conn, run)
        conn.commit()
        run_environment(session, conn, fn=lambda _heads, _ctx: iter(steps), per_migration=True)
        after = read_heads(conn, session)
        history.finish_run(conn, run, status=SUCCEEDED, to_heads=after)
        conn.commit()
        reporter.info(f"stamped {_heads_text(heads)} -> {_heads_text(after)}")
        return contract.Result(
            command="stamp",
            exit_code=ExitCode.OK,
            direction="stamp",
            target=target,
            from_revisions=heads,
            to_revisions=after,
            started_at=_iso(started),
            finished_at=_iso(utcnow()),
            engine_version=__version__,
            runner=session.runner,
        )

    result: contract.Result = with_lock(session, work, reporter=reporter)
    return result


__all__ = [
    "DEFAULT_VERSION_TABLE",
    "RunOptions",
    "Session",
    "migrate",
    "read_heads",
    "stamp",
    "with_lock",
]
