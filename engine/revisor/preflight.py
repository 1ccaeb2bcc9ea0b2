"""Refuse, before anything is written, a run that must not start.

The runtime asks once, under the lock, with the plan in hand. Every refusal
carries the run's ``base`` result (the revisions and the plan with its hash)
so the result document shows what would have run; for ``PlanChanged`` that
is the new plan a person has to review and approve.
"""

from __future__ import annotations

from revisor import contract
from revisor.contract import Reason, heads_text
from revisor.dialects import DialectSupport
from revisor.errors import BadInput
from revisor.options import RunOptions
from revisor.scripts import (
    IRREVERSIBLE,
    DowngradeProblem,
    Plan,
    Scripts,
    reversal_problems,
    uses_autocommit,
)

STRICT: frozenset[DowngradeProblem] = frozenset({"missing", "noop", "raises"})


def refuse_unsafe(
    *,
    scripts: Scripts,
    backend: str,
    options: RunOptions,
    plan: Plan,
    base: contract.Result,
    dialect: DialectSupport,
) -> None:
    """Raise :class:`BadInput` if ``plan`` must not run under ``options``; else return."""
    plan_hash = base.plan_hash or ""
    # An empty plan changes nothing, so it needs no approval: "already at the
    # target" is the truth whatever hash was approved.
    approved = options.expect_plan_hash
    if approved is not None and approved != plan_hash and plan.steps:
        raise BadInput(
            f"the plan changed since it was approved: approved {approved}, "
            f"now {plan_hash} ({len(plan.steps)} step(s) from {heads_text(plan.from_heads)})",
            hint="review the new plan and approve its hash",
            reason=Reason.PLAN_CHANGED,
            context=base,
        )
    # As in Alembic, a downgrade that is only `pass` runs as a no-op; one
    # that is missing or raises cannot run at all, so it is refused before
    # the first step rather than found half-way. --require-reversible is
    # stricter: no-ops count as irreversible, in both directions.
    strict = options.require_reversible
    if plan.direction == "downgrade":
        problems = reversal_problems(scripts, plan.revisions, of=STRICT if strict else IRREVERSIBLE)
        if problems:
            raise BadInput(
                "cannot downgrade: " + "; ".join(problems),
                hint="write the downgrade() of these revisions; nothing was run",
                reason=Reason.NOT_REVERSIBLE,
                context=base,
            )
    if plan.direction == "upgrade" and strict:
        problems = reversal_problems(scripts, plan.revisions, of=STRICT)
        if problems:
            raise BadInput(
                "--require-reversible needs every planned revision to be reversible: "
                + "; ".join(problems),
                hint="write their downgrade(), or run without --require-reversible "
                "(empty downgrades then run as no-ops, as in Alembic)",
                reason=Reason.NOT_REVERSIBLE,
                context=base,
            )
    if not dialect.transactional_ddl:
        _refuse_all_or_nothing(backend, options, plan, base)
    if options.dry_run:
        autocommit = [s.revision.revision for s in plan.steps if uses_autocommit(s.revision)]
        if autocommit:
            raise BadInput(
                "--dry-run cannot undo autocommit_block() (it commits on its own), used by: "
                + ", ".join(autocommit),
                hint="review those revisions by hand, or run revisor sql for their SQL",
                context=base,
            )


#: How messages name the servers without transactional DDL.
_SERVERS = {"mysql": "MySQL", "mariadb": "MariaDB"}


def _refuse_all_or_nothing(
    backend: str, options: RunOptions, plan: Plan, base: contract.Result
) -> None:
    """``--dry-run`` and ``--single-transaction`` promise what such a server cannot keep.

    Both roll a whole run back; where every DDL statement commits as it
    runs, a dry run would apply its DDL for real and a failed
    "single transaction" would leave the revisions before the failure
    committed while reporting none of them.
    """
    server = _SERVERS.get(backend, backend)
    target = base.target or "head"
    relative = any(sign in target for sign in "+-") or len(plan.from_heads) > 1
    span = "FROM:TO" if relative else f"{heads_text(plan.from_heads)}:{target}"
    if options.dry_run:
        raise BadInput(
            f"--dry-run cannot be rolled back on {server}: each DDL statement commits as it "
            "runs (no transactional DDL), so a dry run would change the database; nothing "
            "was run",
            hint=f"read the SQL with revisor sql {span} --dialect {backend}, or run on a "
            "copy of the database",
            context=base,
        )
    if options.single_transaction:
        raise BadInput(
            f"--single-transaction cannot be all or nothing on {server}: each DDL statement "
            "commits as it runs (no transactional DDL); nothing was run",
            hint="run without it: one transaction per revision, and --on-failure rollback "
            "undoes the revisions a failed run applied",
            context=base,
        )
