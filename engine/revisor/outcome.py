"""What a command hands back to the CLI: its result document and its line for stdout.

Stdlib only, so that a run answered without loading Alembic
(:mod:`revisor.at_target`) says what the full run says, in the same words.
"""

from __future__ import annotations

from dataclasses import dataclass

from revisor import contract
from revisor.contract import BaselineDetails, ExitCode, heads_text


@dataclass(frozen=True)
class Outcome:
    result: contract.Result
    text: str


def run_text(result: contract.Result) -> str:
    """The stdout line of ``apply`` / ``upgrade`` / ``downgrade``."""
    if result.exit_code is not ExitCode.OK:
        state = "rolled back to" if result.rolled_back else "left at"
        return f"failed; database {state} {heads_text(result.to_revisions)}"
    verb = "dry run reached" if result.dry_run else "at"
    baseline = BaselineDetails.from_details(result.details)
    stamped = (
        f"; stamped at baseline {heads_text(baseline.revisions)} first"
        if baseline is not None and baseline.outcome == "stamped"
        else ""
    )
    was = heads_text(result.from_revisions)
    return f"{verb} {heads_text(result.to_revisions)} (was {was}{stamped})"
