"""What a partially applied revision says on the resource, and what a person does about it.

On MySQL and MariaDB every DDL statement commits as it runs, so a revision
that fails half-way leaves its first statements in the database while the
version table still says the revision before it (exit 8,
``PartiallyApplied``). Running the Job again would trip over those
statements, and a rollback would run the ``downgrade()`` of the revisions
below it over them, so the operator does neither (no Secret-change retry,
no rollback window): the message names the revision, the statement that
failed and why, the statements that committed, and the two ways out. It is
built from the result's ``details.partiallyApplied``, falling back to the
engine's own error when a result had to drop its details to fit a
termination message. Pure.
"""

from __future__ import annotations

from revisor.contract import PartiallyApplied, Result, heads_text

#: A committed statement is shown cut to this many characters.
STATEMENT_CHARS = 120
#: The failed statement and its cause, each cut to this many.
FAILURE_CHARS = 200


def partially_applied_message(*, target: str, result: Result, limit: int) -> str:
    """The status message for a run that stopped at a partially applied revision.

    At most ``limit`` characters, the fix always whole at its end: what does
    not fit of the committed statements is left out with a count (the
    engine's error in ``lastRun.error`` and ``revisor_history`` keep them).
    """
    at = heads_text(result.to_revisions or result.from_revisions)
    partial = PartiallyApplied.from_details(result.details)
    if partial is None:
        fix = _fix("it", "`revisor stamp` with the revision the error names")
        head = (
            f"Migration to {target} stopped at a partially applied revision; the database "
            f"is at {at}: "
        )
        error = _cut(result.error or "no error message", max(limit - len(head) - len(fix) - 2, 40))
        return f"{head}{error}. {fix}"
    rev = partial.revision
    what = f"revision {rev}" if partial.direction == "upgrade" else f"the downgrade of {rev}"
    failed = (
        f'at "{_cut(partial.failed_statement, FAILURE_CHARS)}"'
        if partial.failed_statement
        else "between statements, in its Python code"
    )
    cause = f" with {_cut(partial.cause, FAILURE_CHARS)}" if partial.cause else ""
    head = (
        f"Migration to {target} stopped: {what} is partially applied. It failed {failed}{cause} "
        f"after {partial.committed} of its statement(s) had committed on their own "
        "(MySQL/MariaDB commits each DDL statement as it runs); the version table still "
        f"says {at}. Committed: "
    )
    fix = _fix(what, f"`revisor stamp {','.join(partial.stamp) or 'base'}`")
    room = limit - len(head) - len(fix) - 2
    return f"{head}{_listed(partial, room)}. {fix}"


def _fix(what: str, stamp: str) -> str:
    return (
        "Not retried, and nothing was rolled back over it: a person must undo those "
        f"statements by hand, or finish {what} by hand and run {stamp}; then a new value "
        "of the annotation revisor.dev/retry (or a change of the spec) runs it again"
    )


def _listed(partial: PartiallyApplied, room: int) -> str:
    """The committed statements, numbered as the engine numbers them, as many as fit."""
    marker = next((i for i, s in enumerate(partial.statements) if s.startswith("… ")), None)
    head = partial.statements if marker is None else partial.statements[:marker]
    tail = () if marker is None else partial.statements[marker + 1 :]
    first_of_tail = partial.committed - len(tail) + 1
    numbered = [(i, s) for i, s in enumerate(head, 1)]
    numbered += [(i, s) for i, s in enumerate(tail, first_of_tail)]
    shown: list[str] = []
    for number, text in numbered:
        item = f"({number}) {_cut(text, STATEMENT_CHARS)};"
        if len(" ".join([*shown, item])) + len(_more(partial.committed)) > room:
            break
        shown.append(item)
    if len(shown) < partial.committed:
        shown.append(_more(partial.committed - len(shown)))
    return " ".join(shown).rstrip(";")


def _more(count: int) -> str:
    return f"… {count} more (in lastRun.error and revisor history)"


def _cut(text: str, size: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= size else text[: size - 1] + "…"
