"""``revisor upgrade head`` against ``alembic upgrade head`` on the same 1,000-revision chain.

Both run as real processes against a throwaway PostgreSQL started here, on a
fresh database each, after a CHECKPOINT (so neither pays for the other's
dirty buffers), alternating which goes first, after one uncounted warm-up
round. Alembic runs with ``transaction_per_migration=True`` so both do the
same transactional work; the difference is Revisor's extras (advisory lock,
history rows, checksums, progress).

The headline is the median of the per-round ratios: the two runs of a round
sit next to each other in time, so slow spells of a shared machine (one run
of the same tool varies by 10-20% here) fall on both sides of most ratios.
The ratio of the medians and of the fastest runs, and the CPU each side
used (the tool's process, and every PostgreSQL process), are reported too.
Results go to ``bench/results/upgrade_vs_alembic.json``.

    python bench/upgrade_vs_alembic.py [--revisions 1000] [--rounds 11]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.postgres import PostgresServer, throwaway_postgres  # noqa: E402
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


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float  # the tool's own process
    server_cpu: float  # every PostgreSQL process, ended backends included

    @property
    def total_cpu(self) -> float:
        return self.cpu + self.server_cpu


def postgres_cpu() -> float:
    """CPU seconds of the PostgreSQL processes (ended backends count in the postmaster's)."""
    ticks = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        name, fields = stat[stat.find("(") + 1 : stat.rfind(")")], stat[stat.rfind(")") + 2 :]
        if name.startswith("postgres"):
            utime, stime, cutime, cstime = (int(x) for x in fields.split()[11:15])
            ticks += utime + stime + cutime + cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def timed(argv: list[str], env: dict[str, str]) -> Sample:
    before, server_before = resource.getrusage(resource.RUSAGE_CHILDREN), postgres_cpu()
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    after, server_after = resource.getrusage(resource.RUSAGE_CHILDREN), postgres_cpu()
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Sample(wall=elapsed, cpu=cpu, server_cpu=server_after - server_before)


def checkpoint(server: PostgresServer) -> None:
    with psycopg.connect(server.libpq(), autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revisions", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument(
        "--out", default=str(REPO / "bench" / "results" / "upgrade_vs_alembic.json")
    )
    opts = parser.parse_args()

    bindir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "0"}
    kinds = ("fresh", "noop")
    samples: dict[str, dict[str, list[Sample]]] = {
        tool: {kind: [] for kind in kinds} for tool in ("alembic", "revisor")
    }
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp, throwaway_postgres() as server:
        project = make_project(Path(tmp), chain(opts.revisions)).with_env_py(ENV_PY)
        # Precompile once so both sides load the same cached bytecode.
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(project.scripts)], check=True)
        # Round 0 warms PostgreSQL and the page cache and is not counted; the
        # order alternates so neither tool always runs on the fresher server.
        for round_ in range(opts.rounds + 1):
            order = ("alembic", "revisor") if round_ % 2 else ("revisor", "alembic")
            for tool in order:
                db = server.create_database("bench")
                ini = project.with_ini(url=server.url(db))
                if tool == "alembic":
                    argv = [str(bindir / "alembic"), "-c", str(ini), "upgrade", "head"]
                else:
                    argv = [str(bindir / "revisor"), "--config", str(ini), "upgrade", "head"]
                checkpoint(server)
                fresh = timed(argv, env)
                noop = timed(argv, env)
                if round_:
                    samples[tool]["fresh"].append(fresh)
                    samples[tool]["noop"].append(noop)
                server.drop_database(db)

    def ratios(kind: str, of: str) -> list[float]:
        pairs = zip(samples["alembic"][kind], samples["revisor"][kind], strict=True)
        return [getattr(r, of) / getattr(a, of) for a, r in pairs]

    def median(tool: str, kind: str, of: str) -> float:
        return statistics.median(getattr(x, of) for x in samples[tool][kind])

    def fastest(tool: str, kind: str) -> float:
        return min(x.wall for x in samples[tool][kind])

    report: dict[str, object] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_before": load_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "revisions": opts.revisions,
        "rounds": opts.rounds,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    for kind in kinds:
        paired = ratios(kind, "wall")
        quartiles = statistics.quantiles(paired, n=4) if len(paired) > 1 else paired * 3
        report[kind] = {
            "ratio_median_of_rounds": round(statistics.median(paired), 3),
            "ratio_quartiles": [round(quartiles[0], 3), round(quartiles[2], 3)],
            "ratio_of_medians": round(
                median("revisor", kind, "wall") / median("alembic", kind, "wall"), 3
            ),
            "ratio_of_fastest": round(fastest("revisor", kind) / fastest("alembic", kind), 3),
            "ratio_cpu_tool_plus_server": round(statistics.median(ratios(kind, "total_cpu")), 3),
            "median_seconds": {
                tool: {of: round(median(tool, kind, of), 3) for of in ("wall", "cpu", "server_cpu")}
                for tool in samples
            },
            "round_ratios": [round(x, 3) for x in paired],
            "samples": {
                tool: [[round(x.wall, 3), round(x.cpu, 3), round(x.server_cpu, 3)]
                       for x in samples[tool][kind]]
                for tool in samples
            },
        }  # fmt: skip
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{opts.revisions} revisions on PostgreSQL, {opts.rounds} alternating rounds:")
    print(
        "| command | alembic (median) | revisor (median) | ratio: median of rounds "
        "[quartiles] | ratio of medians | ratio, CPU tool + server |"
    )
    print("|---|---|---|---|---|---|")
    for kind, label in (("fresh", "upgrade head, fresh database"), ("noop", "already at head")):
        row = report[kind]
        assert isinstance(row, dict)
        low, high = row["ratio_quartiles"]
        print(
            f"| {label} | {median('alembic', kind, 'wall'):.2f}s | "
            f"{median('revisor', kind, 'wall'):.2f}s | "
            f"**{row['ratio_median_of_rounds']:.3f}** [{low:.3f}-{high:.3f}] | "
            f"{row['ratio_of_medians']:.3f} | {row['ratio_cpu_tool_plus_server']:.3f} |"
        )


if __name__ == "__main__":
    main()
