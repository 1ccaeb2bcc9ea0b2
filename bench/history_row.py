"""What one step's history row costs, by the way it is sent.

A step's transaction here is what psycopg sends for a trivial revision
without the DDL: BEGIN, one statement, COMMIT. Each variant adds the row:

- ``sqlalchemy``: ``conn.execute(insert, params)`` and a separate COMMIT
  (how Revisor wrote it before, and still does on other drivers);
- ``one round trip``: the INSERT and COMMIT queued in psycopg's pipeline
  mode, one wait, as :meth:`revisor.history.History.record_step` does on
  psycopg;
- ``client-bound message``: ``INSERT ...; COMMIT`` bound on the client
  (psycopg's ClientCursor) and sent as one simple query, a way tried and
  left: the quoting costs more than the pipeline's bookkeeping.

Variants alternate within each round; the median over rounds is printed as
milliseconds per step over the bare transaction. Writes
``bench/results/history_row.json``.

    python bench/history_row.py [--steps 1000] [--rounds 8]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from revisor.history import History, new_run, utcnow  # noqa: E402

from tests.support.postgres import throwaway_postgres  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "history_row.json"))
    opts = parser.parse_args()

    history = History(None)
    run = new_run(command="upgrade", direction="upgrade", from_heads=(), target="head",
                  runner="bench-pod", engine_version="bench")  # fmt: skip
    with throwaway_postgres() as server:
        db = server.create_database("row")
        engine = sa.create_engine(server.url(db), poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            history.ensure(conn)
            conn.commit()
            raw = conn.connection.dbapi_connection
            assert isinstance(raw, psycopg.Connection)
            cursor = raw.cursor()
            client_bound = psycopg.ClientCursor(raw)
            columns = [c.name for c in history.table.columns if c.name != "id"]
            statement = f"{history._insert.compile(conn, column_keys=columns)}; COMMIT"

            def row(n: int, *, commit: bool) -> None:
                history.record_step(
                    conn, run, direction="upgrade", revision=f"{n:012d}",
                    from_revision=f"{n - 1:012d}", to_revision=f"{n:012d}",
                    description=f"create t{n}", started_at=utcnow(), status="applied",
                    checksum="0" * 64, commit=commit,
                )  # fmt: skip

            def client_bound_message(n: int) -> None:
                now = dt.datetime.now(dt.UTC)
                # Columns the row leaves empty (the table gains nullable ones over time).
                empty = dict.fromkeys(columns)
                client_bound.execute(statement, empty | {
                    "run_id": run.run_id, "kind": "step", "command": "upgrade",
                    "direction": "upgrade", "from_revision": f"{n - 1:012d}",
                    "to_revision": f"{n:012d}", "revision": f"{n:012d}",
                    "description": f"create t{n}", "started_at": now, "finished_at": now,
                    "duration_seconds": 0.001, "status": "applied", "error": None,
                    "checksum": "0" * 64, "runner": "bench-pod", "engine_version": "bench",
                })  # fmt: skip

            variants: dict[str, Callable[[int], None]] = {
                "bare transaction": lambda n: None,
                "sqlalchemy": lambda n: row(n, commit=False),
                "one round trip": lambda n: row(n, commit=True),
                "client-bound message": client_bound_message,
            }
            seconds: dict[str, list[float]] = {name: [] for name in variants}
            for round_ in range(opts.rounds + 1):
                names = list(variants) if round_ % 2 else list(reversed(variants))
                for name in names:
                    work = variants[name]
                    started = time.perf_counter()
                    for n in range(opts.steps):
                        cursor.execute("SELECT 1")  # the step's own statement
                        work(n)
                        conn.commit()  # Alembic's commit, through SQLAlchemy ...
                        raw.commit()  # ... and psycopg's; a no-op once the server is idle
                    if round_:  # round 0 warms up
                        seconds[name].append(time.perf_counter() - started)
        engine.dispose()
    base = statistics.median(seconds["bare transaction"])
    per_step = {
        name: round((statistics.median(v) - base) / opts.steps * 1000, 3)
        for name, v in seconds.items()
    }
    report = {"steps": opts.steps, "rounds": opts.rounds, "ms_per_step_over_bare": per_step,
              "bare_transaction_ms": round(base / opts.steps * 1000, 3)}  # fmt: skip
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"bare transaction (BEGIN, SELECT 1, COMMIT): {report['bare_transaction_ms']} ms")
    for name, ms in per_step.items():
        if name != "bare transaction":
            print(f"+ history row, {name}: {ms:.3f} ms per step")


if __name__ == "__main__":
    main()
