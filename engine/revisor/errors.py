"""One small error hierarchy, caught in exactly one place: the CLI edge.

Every error carries the exit code of the Job contract, a message that says
what is wrong and where, and a hint that says how to fix it. Foreign errors
(Alembic, SQLAlchemy, drivers) are translated into these by the module that
talks to the foreign system, never further up.
"""

from __future__ import annotations

from revisor.contract import ExitCode, Result


class RevisorError(Exception):
    """Base class: ``exit_code`` decides the process exit status."""

    exit_code: ExitCode = ExitCode.BAD_INPUT

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        reason: str | None = None,
        context: Result | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        #: A finer condition reason than the exit code's (e.g. InvalidTarget).
        self.reason = reason
        #: What the run had learned before it refused (revisions, the plan and
        #: its hash), so the result can say it: a changed plan must reach the
        #: operator whole, or nobody could approve it.
        self.context = context

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nhint: {self.hint}"


class BadInput(RevisorError):
    """Arguments, URL, target or scripts are wrong; nothing was done.

    ``reason`` says which, for the operator's conditions
    (:class:`revisor.contract.Reason`: ``InvalidTarget``, ``InvalidScripts``,
    ``NotReversible``, ``PlanChanged``; default ``InvalidInput``).
    """

    exit_code = ExitCode.BAD_INPUT


class LockTimeout(RevisorError):
    """Another runner held the migration lock for longer than ``--lock-timeout``."""

    exit_code = ExitCode.LOCK_TIMEOUT


class DatabaseUnreachable(RevisorError):
    """The database could not be reached, or refused the credentials."""

    exit_code = ExitCode.UNREACHABLE
