"""Where ``revisor upgrade head`` on 1,000 revisions spends what ``alembic upgrade head`` does not.

``bench/upgrade_vs_alembic.py`` gives the ratio; this gives its parts. Each
round runs Revisor on a fresh PostgreSQL database as a real process, with
the functions that carry Revisor's additions wrapped to add up their CPU
(``time.process_time``) and wall time inside that process: the history row
of each step (written with its step's COMMIT), the progress line of each
step, loading the scripts (every header read), the schema snapshot after the
run, the checksums of the planned files. ``run`` is the whole locked run
and ``process`` the whole process. Alembic runs beside it (whole process,
CPU and wall) for scale. Medians over the rounds; results go to
``bench/results/upgrade_phases.json``.

    python bench/upgrade_phases.py [--revisions 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import benchlib
from benchlib import BIN, REPO, timed

sys.path.insert(0, str(REPO))

from tests.support.postgres import throwaway_postgres
from tests.support.projects import chain, make_project

#: (module, attribute path, name in the report)
PHASES = [
    ("revisor.history", "History.record_step", "history rows (with the step's COMMIT)"),
    ("revisor.output", "ConsoleReporter.step_finished", "progress lines"),
    ("revisor.scripts", "load_scripts", "loading the scripts (headers read)"),
    ("revisor.runtime", "_with_snapshot", "schema snapshot after the run"),
    ("revisor.scripts", "Scripts.checksum", "checksums of planned files"),
    ("revisor.runtime", "with_lock", "run"),
]

#: Runs in the measured process: wraps each phase, runs the CLI, prints the sums.
PROBE = r"""
import importlib, json, sys, time
phases = json.loads(sys.argv.pop(1))
totals = {}

def wrap(module, path, name):
    owner = importlib.import_module(module)
    *parents, attribute = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    inner = getattr(owner, attribute)

    def timed(*args, **kwargs):
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            total = totals.setdefault(name, [0.0, 0.0])
            total[0] += time.process_time() - cpu
            total[1] += time.perf_counter() - wall

    setattr(owner, attribute, timed)

cpu0, wall0 = time.process_time(), time.perf_counter()
for module, path, name in phases:
    wrap(module, path, name)
# project.py holds its own reference to load_scripts.
importlib.import_module("revisor.project").load_scripts = importlib.import_module(
    "revisor.scripts").load_scripts
from revisor.cli import main
code = main(sys.argv[1:])
totals["process"] = [time.process_time() - cpu0, time.perf_counter() - wall0]
sys.stderr.write("PHASES " + json.dumps(totals) + "\n")
raise SystemExit(code)
"""

ENV_PY = (REPO / "bench" / "upgrade_vs_alembic.py").read_text().split('ENV_PY = """')[1]
ENV_PY = ENV_PY.split('"""')[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revisions", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    report: dict[str, Any] = {
        **benchlib.header(["bench/upgrade_phases.py", f"--revisions={args.revisions}"]),
        "revisions": args.revisions,
        "rounds": args.rounds,
    }
    revisor_rounds: list[dict[str, list[float]]] = []
    alembic_rounds: list[benchlib.Sample] = []
    with tempfile.TemporaryDirectory() as tmp, throwaway_postgres() as pg:
        project = make_project(Path(tmp) / "p", chain(args.revisions)).with_env_py(ENV_PY)
        for _ in range(args.rounds):
            db = pg.create_database("phases")
            done = subprocess.run(
                [sys.executable, "-c", PROBE, json.dumps(PHASES), "--scripts",
                 str(project.scripts), "--database-url", pg.url(db), "upgrade", "head"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            line = [x for x in done.stderr.splitlines() if x.startswith("PHASES ")][-1]
            revisor_rounds.append(json.loads(line.removeprefix("PHASES ")))
            pg.drop_database(db)
            db = pg.create_database("phases")
            ini = project.with_ini(url=pg.url(db))
            alembic = [str(BIN / "alembic"), "-c", str(ini), "upgrade", "head"]
            alembic_rounds.append(timed(alembic, dict(os.environ)))
            pg.drop_database(db)
    names = [name for *_, name in PHASES] + ["process"]
    report["revisor_seconds"] = {
        name: {
            "cpu": round(statistics.median(r.get(name, [0.0, 0.0])[0] for r in revisor_rounds), 3),
            "wall": round(statistics.median(r.get(name, [0.0, 0.0])[1] for r in revisor_rounds), 3),
        }
        for name in names
    }
    report["alembic_seconds"] = benchlib.medians(alembic_rounds)
    out = benchlib.write("upgrade_phases", report, args.out)
    print(f"{args.revisions} revisions on PostgreSQL, {args.rounds} rounds (medians):")
    print("| part of revisor upgrade head | CPU s | wall s |\n|---|---|---|")
    for name, row in report["revisor_seconds"].items():
        print(f"| {name} | {row['cpu']:.3f} | {row['wall']:.3f} |")
    a = report["alembic_seconds"]
    print(f"| alembic upgrade head (whole process) | {a['cpu']:.3f} | {a['wall']:.3f} |")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
