"""Many runs of the real ``revisor`` CLI on one database, upgrade and downgrade in turn.

What a long-lived database sees from a migration tool over months, in
minutes: every run opens one connection, takes the lock, moves the schema
and goes. After each run this counts the sessions on the database and the
advisory locks on the server, and takes the run's peak memory from the
kernel (``os.wait4``: the child's own ``ru_maxrss``, which
``RUSAGE_CHILDREN`` cannot give per child, since it keeps the maximum over
all children rather than a sum).

Used by ``bench/soak.py`` (300 runs, each in its own process, the RSS trend,
``make bench``) and by ``tests/engine/test_faults.py`` (30 runs through the
CLI's entry point in the test's own process, in ``make test``).
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from tests.support.projects import chain, make_project

#: How long a closed session may take to leave ``pg_stat_activity`` (the backend
#: exits a moment after its client says goodbye): a bound, not a pause.
SETTLE_SECONDS = 10.0


@dataclass
class SoakReport:
    """What ``runs`` runs left behind, and what each cost."""

    runs: int = 0
    revisions: int = 0
    connections_before: int = 0
    connections_after: int = 0
    #: The most sessions left on the database once a run had exited (and settled).
    max_connections_between_runs: int = 0
    locks_left: int = 0
    #: Each run's peak resident set, KiB (the engine process itself).
    max_rss_kib: list[int] = field(default_factory=list)
    wall_seconds: list[float] = field(default_factory=list)
    #: Runs that did not exit 0: their number and the tail of their stderr.
    failures: list[str] = field(default_factory=list)

    def rss_median(self, first: int | None = None, last: int | None = None) -> float:
        """Median peak RSS (KiB) of the first or the last ``n`` runs."""
        values = self.max_rss_kib[:first] if first is not None else self.max_rss_kib
        if last is not None:
            values = self.max_rss_kib[-last:]
        return float(statistics.median(values))


def connections(url: str) -> int:
    """Sessions connected to ``url``'s database, other than the one counting."""
    return _count(
        url,
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )


def advisory_locks(url: str) -> list[int]:
    """The backends holding an advisory lock on ``url``'s server (granted ones), sorted."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND pid <> pg_backend_pid() ORDER BY pid"
                )
            )
            return [int(row[0]) for row in rows]
    finally:
        engine.dispose()


def _count(url: str, query: str) -> int:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(query)).scalar_one())
    finally:
        engine.dispose()


def _settled_connections(url: str, baseline: int) -> int:
    """The session count once it is back at ``baseline``, or what it is after SETTLE_SECONDS."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        count = connections(url)
        if count <= baseline or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def run_measured(argv: list[str], *, stderr: Path) -> tuple[int, int, float]:
    """Run ``argv``; its exit code, its own peak RSS (KiB) and its wall seconds."""
    started = time.perf_counter()
    with stderr.open("w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
    # wait4 reaps the child and returns its rusage; Popen must not reap it first.
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, int(usage.ru_maxrss), time.perf_counter() - started


def run_in_process(args: list[str]) -> tuple[int, str, float]:
    """``revisor ARGS`` through its entry point in this process: exit code, stderr, seconds.

    A connection the engine failed to close would stay open here, in a process
    that goes on: what a run in its own process cannot show, since its exit
    closes everything.
    """
    from revisor.cli import main
    from revisor.redaction import forget_secrets

    err = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(args)
    forget_secrets()
    return code, err.getvalue(), time.perf_counter() - started


def soak(
    url: str,
    workdir: Path,
    *,
    runs: int,
    revisions: int = 5,
    in_process: bool = False,
    progress: Callable[[int, SoakReport], None] | None = None,
) -> SoakReport:
    """``runs`` CLI runs on ``url``: ``upgrade head``, then ``downgrade base``, and so on.

    Each run is the ``revisor`` command in a process of its own (its peak RSS
    measured), or, ``in_process``, its entry point called in this process
    (no RSS: the process is shared).
    """
    project = make_project(workdir, chain(revisions, prefix="s"))
    args = [*project.args(), "--database-url", url]
    report = SoakReport(revisions=revisions)
    report.connections_before = connections(url)
    report.max_connections_between_runs = report.connections_before
    stderr = workdir / "run.stderr"
    for index in range(runs):
        command = ["upgrade", "head"] if index % 2 == 0 else ["downgrade", "base"]
        if in_process:
            code, text, wall = run_in_process([*args, *command])
        else:
            argv = [sys.executable, "-m", "revisor", *args, *command]
            code, rss, wall = run_measured(argv, stderr=stderr)
            report.max_rss_kib.append(rss)
            text = stderr.read_text(errors="replace") if code != 0 else ""
        report.runs += 1
        report.wall_seconds.append(wall)
        if code != 0:
            report.failures.append(
                f"run {index + 1} ({' '.join(command)}) exited {code}: {text[-1000:]}"
            )
        left = _settled_connections(url, report.connections_before)
        report.max_connections_between_runs = max(report.max_connections_between_runs, left)
        if progress is not None:
            progress(index + 1, report)
    report.connections_after = _settled_connections(url, report.connections_before)
    report.locks_left = len(advisory_locks(url))
    return report
