"""What a run that moves the database is asked to do, and how it is bounded.

One object for every knob of ``apply``/``upgrade``/``downgrade``/``stamp``:
the target revision, what to do on failure, the lock and statement
timeouts, and who is running. Where the run works is the
:class:`~revisor.project.Project`'s business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RunCommand = Literal["apply", "upgrade", "downgrade"]


@dataclass(frozen=True)
class RunOptions:
    command: RunCommand
    #: The revision to reach, in Alembic's target syntax.
    target: str
    single_transaction: bool = False
    on_failure: Literal["stop", "rollback"] = "stop"
    dry_run: bool = False
    #: Refuse to run unless the plan computed under the lock has this hash (approval).
    expect_plan_hash: str | None = None
    require_reversible: bool = False
    #: Seconds to wait for the migration lock; 0 tries once, None waits forever.
    lock_timeout: float | None = 60.0
    statement_timeout: float | None = None
    ddl_lock_timeout: float | None = None
    #: Times a revision that timed out on a table lock is re-run as a whole.
    ddl_lock_retries: int = 0
    #: Who runs (a pod's name), recorded in ``revisor_history``.
    runner: str | None = None
    #: Stamp a database that has no version table at this revision first
    #: (adopting a database built without Alembic); ignored once it has one.
    baseline: str | None = None
