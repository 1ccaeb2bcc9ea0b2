"""Start-up cost: ``revisor --help`` against ``alembic --help``, and where the time goes.

``--help`` does no work beyond importing the command line and printing, so
its CPU time is the import cost (plus the interpreter's own start, measured
as ``python -c pass`` in the same rounds and reported as the floor). The
three run as whole processes from the same virtualenv, in rotating order,
one uncounted warm-up round first; the headline is the median of the
per-round CPU ratios revisor/alembic, with quartiles.

Secondary rows, the same way on a small project (the example shop's three
revisions, a SQLite database at head): ``current``, ``heads`` and ``history``
of each tool.

Bytecode as in an image (``benchlib.bytecode_env``): every library's ``.pyc``
cached under a prefix the bench owns (filled by the warm-up), nothing written
during the counted rounds (``PYTHONDONTWRITEBYTECODE=1``), the revision files
compiled from source on each run.

Then ``python -X importtime -m revisor --help`` (and the same for alembic),
a few times: the median self and cumulative microseconds per module, the
top 20 of each, the self time summed per top-level package, and what Revisor
imports that Alembic's ``--help`` does not. Results go to
``bench/results/import_cost.json``.

    python bench/import_cost.py [--rounds 21] [--secondary-rounds 11] [--importtime-runs 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import benchlib
from benchlib import BIN, REPO, Sample, timed

SHOP = REPO / "examples" / "shop"


def rounds_of(
    commands: Mapping[str, Sequence[str]], env: Mapping[str, str], rounds: int
) -> dict[str, list[Sample]]:
    """Each command once per round, the order rotating; round 0 is not counted."""
    names = list(commands)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for round_ in range(rounds + 1):
        shift = round_ % len(names)
        order = names[shift:] + names[:shift]
        if round_ % 2:
            order.reverse()
        for name in order:
            sample = timed(commands[name], env)
            if round_:
                samples[name].append(sample)
    return samples


def parse_importtime(stderr: str) -> dict[str, tuple[int, int]]:
    """``module -> (self us, cumulative us)`` from ``-X importtime`` output (first import wins)."""
    found: dict[str, tuple[int, int]] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        self_us, cumulative_us, name = line[len("import time:") :].split("|", 2)
        found.setdefault(name.strip(), (int(self_us), int(cumulative_us)))
    return found


def importtime(argv: Sequence[str], env: Mapping[str, str], runs: int) -> dict[str, Any]:
    per_module: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for _ in range(runs):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", *argv],
            env=dict(env),
            capture_output=True,
            text=True,
            check=True,
        )
        for name, times in parse_importtime(proc.stderr).items():
            per_module[name].append(times)
    median = {
        name: (
            int(statistics.median(t[0] for t in times)),
            int(statistics.median(t[1] for t in times)),
        )
        for name, times in per_module.items()
    }
    by_package: dict[str, int] = defaultdict(int)
    for name, (self_us, _) in median.items():
        by_package[name.split(".")[0]] += self_us

    def top(index: int) -> list[dict[str, Any]]:
        ranked = sorted(median.items(), key=lambda item: item[1][index], reverse=True)[:20]
        return [
            {"module": n, "self_ms": s / 1000, "cumulative_ms": c / 1000} for n, (s, c) in ranked
        ]

    return {
        "argv": ["python", "-X", "importtime", *argv],
        "runs": runs,
        "modules": len(median),
        "total_self_ms": round(sum(s for s, _ in median.values()) / 1000, 1),
        "top20_cumulative": top(1),
        "top20_self": top(0),
        "self_ms_by_top_level_package": {
            k: round(v / 1000, 1)
            for k, v in sorted(by_package.items(), key=lambda kv: kv[1], reverse=True)
            if v >= 1000
        },
        "_median": median,
    }


def compare(profiles: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The two import profiles, and what Revisor's ``--help`` imports that Alembic's does not."""
    rev_modules, alembic_modules = (
        profiles["revisor"].pop("_median"),
        profiles["alembic"].pop("_median"),
    )
    only_revisor = {n: t for n, t in rev_modules.items() if n not in alembic_modules}
    only_alembic = {n: t for n, t in alembic_modules.items() if n not in rev_modules}
    by_package: dict[str, int] = defaultdict(int)
    for name, (self_us, _) in only_revisor.items():
        by_package[name.split(".")[0]] += self_us
    return {
        **profiles,
        "only_in_revisor": {
            "modules": len(only_revisor),
            "self_ms": round(sum(s for s, _ in only_revisor.values()) / 1000, 1),
            "self_ms_by_top_level_package": {
                k: round(v / 1000, 1)
                for k, v in sorted(by_package.items(), key=lambda kv: kv[1], reverse=True)
            },
            "top20_cumulative_ms": {
                n: round(c / 1000, 1)
                for n, (_, c) in sorted(only_revisor.items(), key=lambda kv: -kv[1][1])[:20]
            },
        },
        "only_in_alembic": {
            "modules": len(only_alembic),
            "self_ms": round(sum(s for s, _ in only_alembic.values()) / 1000, 1),
        },
    }


def summarise(report: dict[str, Any], path: Path) -> None:
    print(f"\nstart-up, CPU time (user+sys) of the whole process, medians; {path}")
    print(
        "| command | alembic | revisor | CPU ratio [quartiles] | wall ratio [quartiles] | target |"
    )
    print("|---|---|---|---|---|---|")
    rows = [("--help", report["help"], "≤ 0.7")] + [
        (f"{name} (shop, SQLite)", row, "") for name, row in report["secondary"].items()
    ]
    for label, row, target in rows:
        cmp = row["revisor_vs_alembic"]
        print(
            f"| {label} | {row['median_seconds']['alembic']['cpu']:.3f}s "
            f"| {row['median_seconds']['revisor']['cpu']:.3f}s | {benchlib.fmt_ratio(cmp['cpu'])} "
            f"| {benchlib.fmt_ratio(cmp['wall'])} | {target} |"
        )
    floor_cpu = report["help"]["median_seconds"]["python -c pass"]["cpu"]
    print(
        f"interpreter floor (python -c pass): {floor_cpu:.3f}s CPU; --help over the floor, "
        f"revisor/alembic: {report['help']['cpu_over_interpreter_floor_ratio_median_of_rounds']}"
    )
    for tool in ("revisor", "alembic"):
        prof = report["importtime"][tool]
        print(f"\n-X importtime, {tool} --help: {prof['modules']} modules, "
              f"{prof['total_self_ms']} ms self in total; top 10 cumulative:")  # fmt: skip
        for entry in prof["top20_cumulative"][:10]:
            print(f"  {entry['cumulative_ms']:8.1f} ms  {entry['module']}")
    only = report["importtime"]["only_in_revisor"]
    print(
        f"\nimported by revisor --help, not by alembic --help: {only['modules']} modules, "
        f"{only['self_ms']} ms self: {dict(list(only['self_ms_by_top_level_package'].items())[:8])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21, help="rounds of the --help row")
    parser.add_argument("--secondary-rounds", type=int, default=11)
    parser.add_argument("--importtime-runs", type=int, default=5)
    parser.add_argument("--out", help="results file (default bench/results/import_cost.json)")
    opts = parser.parse_args()

    report = benchlib.header(sys.argv)
    report.update(rounds=opts.rounds, secondary_rounds=opts.secondary_rounds, target=0.7)
    python, revisor, alembic = str(BIN / "python"), str(BIN / "revisor"), str(BIN / "alembic")
    with tempfile.TemporaryDirectory(prefix="revisor-bench-") as tmp_:
        tmp = Path(tmp_)
        prefix = tmp / "pycache"
        shutil.copytree(SHOP / "migrations", tmp / "migrations")
        db = tmp / "shop.sqlite"
        ini = tmp / "alembic.ini"
        ini.write_text(
            "[alembic]\nscript_location = %(here)s/migrations\npath_separator = os\n"
            f"sqlalchemy.url = sqlite:///{db}\n"
        )
        warm = benchlib.bytecode_env(prefix, write_bytecode=True)
        timed([alembic, "-c", str(ini), "upgrade", "head"], warm)
        rv = [revisor, "--scripts", str(tmp / "migrations"), "--database-url", f"sqlite:///{db}"]
        al = [alembic, "-c", str(ini)]
        help_commands = {
            "alembic": [alembic, "--help"],
            "revisor": [revisor, "--help"],
            "python -c pass": [python, "-c", "pass"],
        }
        secondary = {
            "current": ("current",),
            "heads": ("heads",),
            "history": ("history",),
        }
        # Fill the bytecode cache (libraries, both tools' every code path here), then freeze it.
        for argv in [*help_commands.values(), *([*rv, *a] for a in secondary.values()),
                     *([*al, *a] for a in secondary.values())]:  # fmt: skip
            timed(argv, warm)
        benchlib.forget_bytecode(prefix, tmp / "migrations")
        env = benchlib.bytecode_env(prefix, write_bytecode=False)

        print(f"--help, {opts.rounds} rounds ...")
        samples = rounds_of(help_commands, env, opts.rounds)
        floor = samples["python -c pass"]
        over_floor = [
            (r.cpu - f.cpu) / (a.cpu - f.cpu)
            for a, r, f in zip(samples["alembic"], samples["revisor"], floor, strict=True)
        ]
        report["help"] = {
            "median_seconds": {name: benchlib.medians(s) for name, s in samples.items()},
            "revisor_vs_alembic": benchlib.paired(samples["alembic"], samples["revisor"]),
            "cpu_over_interpreter_floor_ratio_median_of_rounds": round(
                statistics.median(over_floor), 3
            ),
            "samples_wall_user_sys": {name: benchlib.raw(s) for name, s in samples.items()},
        }
        report["secondary"] = {}
        for name, args in secondary.items():
            print(f"{name}, {opts.secondary_rounds} rounds ...")
            pair = {"alembic": [*al, *args], "revisor": [*rv, *args]}
            got = rounds_of(pair, env, opts.secondary_rounds)
            report["secondary"][name] = {
                "argv": {tool: " ".join(a).replace(str(tmp), "$TMP") for tool, a in pair.items()},
                "median_seconds": {tool: benchlib.medians(s) for tool, s in got.items()},
                "revisor_vs_alembic": benchlib.paired(got["alembic"], got["revisor"]),
                "samples_wall_user_sys": {tool: benchlib.raw(s) for tool, s in got.items()},
            }

        print(f"-X importtime, {opts.importtime_runs} runs each ...")
        profiles = {
            "revisor": importtime(["-m", "revisor", "--help"], env, opts.importtime_runs),
            "alembic": importtime(["-m", "alembic", "--help"], env, opts.importtime_runs),
        }
    report["importtime"] = compare(profiles)
    path = benchlib.write("import_cost", report, opts.out)

    summarise(report, path)


if __name__ == "__main__":
    main()
