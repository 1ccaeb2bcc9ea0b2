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
    if options.dry_run:
        if not dialect.transactional_ddl:
            raise BadInput(
                f"--dry-run needs transactional DDL, which {backend} lacks", context=base
            )
        autocommit = [s.revision.revision for s in plan.steps if uses_autocommit(s.revision)]
        if autocommit:
            raise BadInput(
                "--dry-run cannot undo autocommit_block() (it commits on its own), used by: "
                + ", ".join(autocommit),
                hint="review those revisions by hand, or run revisor sql for their SQL",
                context=base,
            )
