"""A run with nothing to do: ``revisor upgrade head`` against ``alembic upgrade head``, at head.

For each chain length N (default 1,000 and 5,000 revisions, each creating a
table, written as ``alembic revision`` writes them), a SQLite database is
migrated to head once with plain Alembic. Then both tools run on it, as whole
processes from the same virtualenv over the same files, in alternating order,
one uncounted warm-up round first:

    revisor --scripts DIR --database-url sqlite:///DB upgrade head
    alembic -c INI upgrade head          (INI: script_location DIR, the same DB)

Both find the database at head and exit 0. The headline is the CPU time of
the child (user + sys), median of the per-round ratios revisor/alembic with
quartiles; wall time is reported beside it.

Bytecode, the same for both sides (``benchlib.bytecode_env``): every ``.pyc``
lives under one cache prefix the bench owns. Two modes:

- ``job`` (the headline): what a Kubernetes Job sees. The image has bytecode
  for every library (the Dockerfile compiles it), but the revision files come
  from a ConfigMap on a read-only filesystem with ``PYTHONDONTWRITEBYTECODE=1``,
  so every run compiles all N revision files from source.
- ``warm``: a developer's machine: the revision files' bytecode is cached too.

Results go to ``bench/results/noop_vs_alembic.json``.

    python bench/noop_vs_alembic.py [--revisions 1000 5000] [--rounds 9] [--modes job warm] [--no-profile]
"""

from __future__ import annotations

import argparse
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib
from benchlib import BIN, REPO, Sample, timed

sys.path.insert(0, str(REPO))

from tests.support.projects import chain, make_project

# The env.py of bench/upgrade_vs_alembic.py: one transaction per revision, as Revisor does.
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

MODES = {
    "job": "revision files compiled on every run (read-only, PYTHONDONTWRITEBYTECODE=1), "
    "libraries' bytecode cached: a Kubernetes Job",
    "warm": "every .pyc cached, revision files included: a developer's machine",
}
TOOLS = ("alembic", "revisor")


def profile(argv: list[str], env: dict[str, str], out: Path, top: int = 40) -> dict[str, Any]:
    """One run under cProfile (``python -m cProfile SCRIPT ARGS``): where its time goes.

    cProfile slows Python code several-fold: read the shares, not the seconds.
    """
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), *argv],
                   env=env, check=True, capture_output=True)  # fmt: skip
    stats = pstats.Stats(str(out))
    table = stats.stats  # type: ignore[attr-defined]
    total = max(ct for _, _, _, ct, _ in table.values())

    def rows(index: int) -> list[dict[str, Any]]:
        ranked = sorted(table.items(), key=lambda kv: kv[1][index], reverse=True)[:top]
        return [
            {"function": f"{'/'.join(Path(file).parts[-2:])}:{line}({func})" if line else func,
             "file": file, "calls": nc, "self_s": round(tt, 4), "cumulative_s": round(ct, 4),
             "cumulative_share": round(ct / total, 3)}
            for (file, line, func), (_, nc, tt, ct, _) in ranked
        ]  # fmt: skip

    return {"total_s": round(total, 3), "top_cumulative": rows(3), "top_self": rows(2)}


def bench_chain(
    n: int, rounds: int, modes: list[str], tmp: Path, *, with_profile: bool
) -> dict[str, Any]:
    root = tmp / f"chain{n}"
    started = time.perf_counter()
    project = make_project(root, chain(n)).with_env_py(ENV_PY)
    db = root / "bench.sqlite"
    ini = project.with_ini(url=f"sqlite:///{db}")
    written = time.perf_counter() - started
    prefix = tmp / f"pycache{n}"
    argv = {
        "alembic": [str(BIN / "alembic"), "-c", str(ini), "upgrade", "head"],
        "revisor": [str(BIN / "revisor"), "--scripts", str(project.scripts),
                    "--database-url", f"sqlite:///{db}", "upgrade", "head"],
    }  # fmt: skip
    # Migrate once, with plain Alembic (this also fills the bytecode cache for both).
    setup = timed(argv["alembic"], benchlib.bytecode_env(prefix, write_bytecode=True))
    timed(argv["revisor"], benchlib.bytecode_env(prefix, write_bytecode=True))
    print(
        f"  {n} revisions: files written in {written:.1f}s, migrated to head in {setup.wall:.1f}s"
    )
    result: dict[str, Any] = {
        "revisions": n,
        "files_written_seconds": round(written, 2),
        "alembic_upgrade_from_base_seconds": round(setup.wall, 2),
    }
    for mode in modes:
        env = benchlib.bytecode_env(prefix, write_bytecode=mode == "warm")
        if mode == "job":
            benchlib.forget_bytecode(prefix, project.scripts)
        samples: dict[str, list[Sample]] = {tool: [] for tool in TOOLS}
        load_before = benchlib.loadavg()
        # Round 0 warms the page cache (and, in warm mode, the revision files' bytecode).
        for round_ in range(rounds + 1):
            order = TOOLS if round_ % 2 else TOOLS[::-1]
            for tool in order:
                sample = timed(argv[tool], env)
                if round_:
                    samples[tool].append(sample)
        if mode == "job":
            leftover = list((prefix / project.scripts.resolve().relative_to("/")).rglob("*.pyc"))
            assert not leftover, f"job mode wrote bytecode for the revision files: {leftover[:3]}"
        result[mode] = {
            "what": MODES[mode],
            "loadavg_before": load_before,
            "loadavg_after": benchlib.loadavg(),
            "median_seconds": {tool: benchlib.medians(samples[tool]) for tool in TOOLS},
            "revisor_vs_alembic": benchlib.paired(samples["alembic"], samples["revisor"]),
            "samples_wall_user_sys": {tool: benchlib.raw(samples[tool]) for tool in TOOLS},
        }
    if with_profile:
        env = benchlib.bytecode_env(prefix, write_bytecode=False)
        benchlib.forget_bytecode(prefix, project.scripts)
        result["cprofile_job_mode"] = {
            tool: profile(argv[tool], env, tmp / f"{tool}{n}.prof") for tool in TOOLS
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revisions", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument(
        "--no-profile", action="store_true", help="skip the one cProfile run of each tool"
    )
    parser.add_argument("--out", help="results file (default bench/results/noop_vs_alembic.json)")
    opts = parser.parse_args()

    report = benchlib.header(sys.argv)
    report.update(rounds=opts.rounds, modes=MODES, targets={"1000": 0.5, "5000": 0.4})
    chains = []
    with tempfile.TemporaryDirectory(prefix="revisor-bench-") as tmp:
        for n in opts.revisions:
            chains.append(
                bench_chain(n, opts.rounds, opts.modes, Path(tmp), with_profile=not opts.no_profile)
            )
    report["chains"] = chains
    path = benchlib.write("noop_vs_alembic", report, opts.out)

    print(f"\nnothing to do (SQLite, at head), {opts.rounds} alternating rounds; {path}")
    print("| revisions | bytecode | alembic CPU | revisor CPU | CPU ratio [quartiles] "
          "| wall ratio [quartiles] | target |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for row in chains:
        for mode in opts.modes:
            m = row[mode]
            cmp = m["revisor_vs_alembic"]
            target = report["targets"].get(str(row["revisions"]))
            print(
                f"| {row['revisions']:,} | {mode} | {m['median_seconds']['alembic']['cpu']:.2f}s "
                f"| {m['median_seconds']['revisor']['cpu']:.2f}s | {benchlib.fmt_ratio(cmp['cpu'])} "
                f"| {benchlib.fmt_ratio(cmp['wall'])} | {'≤ ' + str(target) if target else ''} |"
            )


if __name__ == "__main__":
    main()
