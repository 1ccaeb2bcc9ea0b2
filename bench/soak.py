"""A soak: 300 runs of the ``revisor`` CLI on one database, upgrade head and downgrade base in turn.

Each run is the real command in a process of its own, on a throwaway
PostgreSQL (``tests/support/postgres.py``), over a chain of revisions that
each create a table. After every run the bench counts the sessions left on
the database (``pg_stat_activity``, once the closed one has gone) and, at the
end, the advisory locks on the server (``pg_locks``). Each run's peak memory
is the process's own ``ru_maxrss`` (``os.wait4``; ``RUSAGE_CHILDREN`` keeps
only the maximum over all children, so its deltas cannot give it per run).

What it checks, and writes to ``bench/results/soak.json``:

- no leaked connection: the session count after every run is the count before
  the first;
- no lock left: no advisory lock once the last run has exited;
- RSS flat: the median peak RSS of the last 50 runs within 10% of the first
  50's. ``revisor_history`` grows by a run row and its step rows each run
  (about 1,800 rows at the end), so a run whose memory grew with the
  history it reads would show here.

Exits 1 when any check fails. ``tests/engine/test_faults.py`` runs a short
version (30 runs, in-process) in ``make test``.

    python bench/soak.py [--runs 300] [--revisions 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchlib import header, write  # noqa: E402

from tests.support.postgres import throwaway_postgres  # noqa: E402
from tests.support.soak import SoakReport, soak  # noqa: E402

WINDOW = 50
FLAT_TOLERANCE = 0.10


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--revisions", type=int, default=5)
    parser.add_argument(
        "--out", default=None, help="results file (default bench/results/soak.json)"
    )
    opts = parser.parse_args()
    window = min(WINDOW, opts.runs // 2)
    report_head = header(sys.argv)
    started = time.monotonic()

    def progress(done: int, report: SoakReport) -> None:
        if done % 25 == 0 or done == opts.runs:
            print(
                f"  {done}/{opts.runs} runs, {time.monotonic() - started:.0f}s, "
                f"peak RSS {report.max_rss_kib[-1] / 1024:.1f} MiB, "
                f"sessions left {report.max_connections_between_runs - report.connections_before}",
                flush=True,
            )

    with throwaway_postgres() as server, tempfile.TemporaryDirectory() as work:
        database = server.create_database("soak")
        print(f"soak: {opts.runs} runs, {opts.revisions} revisions each way", flush=True)
        report = soak(
            server.url(database),
            Path(work),
            runs=opts.runs,
            revisions=opts.revisions,
            progress=progress,
        )
    first, last = report.rss_median(first=window), report.rss_median(last=window)
    drift = (last - first) / first
    checks = {
        "no_failed_run": not report.failures,
        "no_leaked_connection": report.max_connections_between_runs == report.connections_before
        and report.connections_after == report.connections_before,
        "no_lock_left": report.locks_left == 0,
        "rss_flat": abs(drift) <= FLAT_TOLERANCE,
    }
    results = {
        **report_head,
        "runs": report.runs,
        "revisions": report.revisions,
        "seconds": round(time.monotonic() - started, 1),
        "checks": checks,
        "connections": {
            "before": report.connections_before,
            "max_between_runs": report.max_connections_between_runs,
            "after": report.connections_after,
        },
        "advisory_locks_after": report.locks_left,
        "max_rss_mib": {
            f"median_first_{window}": round(first / 1024, 2),
            f"median_last_{window}": round(last / 1024, 2),
            "drift": round(drift, 4),
            "tolerance": FLAT_TOLERANCE,
            "min": round(min(report.max_rss_kib) / 1024, 2),
            "max": round(max(report.max_rss_kib) / 1024, 2),
        },
        "wall_seconds_median": round(statistics.median(report.wall_seconds), 3),
        "failures": report.failures[:5],
        "max_rss_kib_per_run": report.max_rss_kib,
    }
    path = write("soak", results, opts.out)
    print(
        f"soak: {report.runs} runs in {results['seconds']}s; sessions before/max/after "
        f"{report.connections_before}/{report.max_connections_between_runs}/"
        f"{report.connections_after}; advisory locks after: {report.locks_left}; peak RSS "
        f"median first {window} {first / 1024:.1f} MiB, last {window} {last / 1024:.1f} MiB "
        f"({drift:+.1%}); {'ok' if all(checks.values()) else 'FAILED: ' + str(checks)}"
    )
    print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
