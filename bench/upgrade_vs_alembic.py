"""``revisor upgrade head`` against ``alembic upgrade head`` on the same 1,000-revision chain.

Both run as real processes against a throwaway PostgreSQL started here, on a
fresh database each, alternating which goes first, after one uncounted warm-up
round; the median of each and
their ratio are printed and written to ``bench/results/upgrade_vs_alembic.json``.
Alembic runs with ``transaction_per_migration=True`` so both do the same
transactional work; the difference is Revisor's extras (advisory lock,
history rows, checksums, progress). Ratios, not absolute times, are the point:
this machine is noisy, both sides share the noise within one run.

    python bench/upgrade_vs_alembic.py [--revisions 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.postgres import throwaway_postgres  # noqa: E402
from tests.support.projects import chain, make_project  # noqa: E402

ENV_PY = """
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
connectable = engine_from_config(
    config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
)
with connectable.connect() as connection:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
"""


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revisions", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--out", default=str(REPO / "bench" / "results" / "upgrade_vs_alembic.json")
    )
    opts = parser.parse_args()

    bindir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "0"}
    with tempfile.TemporaryDirectory() as tmp, throwaway_postgres() as server:
        project = make_project(Path(tmp), chain(opts.revisions)).with_env_py(ENV_PY)
        # Precompile once so both sides load the same cached bytecode.
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(project.scripts)], check=True)
        samples: dict[str, list[float]] = {
            "alembic": [],
            "revisor": [],
            "alembic_noop": [],
            "revisor_noop": [],
        }
        # Round 0 warms PostgreSQL and the page cache and is not counted; the
        # order alternates so neither tool always runs on the fresher server.
        for round_ in range(opts.rounds + 1):
            order = ("alembic", "revisor") if round_ % 2 else ("revisor", "alembic")
            for tool in order:
                db = server.create_database("bench")
                url = server.url(db)
                ini = project.with_ini(url=url)
                if tool == "alembic":
                    argv = [str(bindir / "alembic"), "-c", str(ini), "upgrade", "head"]
                else:
                    argv = [str(bindir / "revisor"), "--config", str(ini), "upgrade", "head"]
                fresh, noop = timed(argv, env), timed(argv, env)
                if round_:
                    samples[tool].append(fresh)
                    samples[f"{tool}_noop"].append(noop)
                server.drop_database(db)
    medians = {k: statistics.median(v) for k, v in samples.items()}
    # The fastest round is the least disturbed by other work on a shared machine.
    minimums = {k: min(v) for k, v in samples.items()}
    report = {
        "revisions": opts.revisions,
        "rounds": opts.rounds,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "median_seconds": {k: round(v, 3) for k, v in medians.items()},
        "min_seconds": {k: round(v, 3) for k, v in minimums.items()},
        "ratio_upgrade": round(medians["revisor"] / medians["alembic"], 3),
        "ratio_noop": round(medians["revisor_noop"] / medians["alembic_noop"], 3),
        "ratio_upgrade_min": round(minimums["revisor"] / minimums["alembic"], 3),
        "ratio_noop_min": round(minimums["revisor_noop"] / minimums["alembic_noop"], 3),
        "samples": {k: [round(x, 3) for x in v] for k, v in samples.items()},
    }
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{opts.revisions} revisions on PostgreSQL, {opts.rounds} alternating rounds (median / fastest):"
    )
    print("| command | alembic | revisor | ratio (median) | ratio (fastest) |")
    print("|---|---|---|---|---|")
    for label, key in (
        ("upgrade head, fresh database", ""),
        ("upgrade head, already at head", "_noop"),
    ):
        a, r = f"alembic{key}", f"revisor{key}"
        print(
            f"| {label} | {medians[a]:.2f}s / {minimums[a]:.2f}s | {medians[r]:.2f}s / {minimums[r]:.2f}s "
            f"| {medians[r] / medians[a]:.2f} | {minimums[r] / minimums[a]:.2f} |"
        )


if __name__ == "__main__":
    main()
