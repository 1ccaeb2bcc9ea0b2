"""What the benches share: timing whole processes, paired statistics, the results file.

Every bench compares two commands in the same run, in alternating order, and
reports the median of the per-round ratios (the two runs of a round sit side
by side in time, so the slow spells of a shared machine fall on both sides of
most ratios), with its quartiles, next to the medians of each side. Results
carry the machine, the date and the load average before and after: compare
ratios within one run, not seconds across runs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Sample:
    """One whole process: wall seconds and the CPU seconds it used (user + sys)."""

    wall: float
    user: float
    sys: float

    @property
    def cpu(self) -> float:
        return self.user + self.sys


class CommandFailed(RuntimeError):
    pass


def timed(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: Path | None = None,
    ok: Sequence[int] = (0,),
) -> Sample:
    """Run ``argv`` to completion; its wall time and CPU time (RUSAGE_CHILDREN delta).

    The bench has one child at a time, so the delta is exactly that child's usage.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(
        list(argv), env=dict(env), cwd=cwd, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in ok:
        raise CommandFailed(
            f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-1000:]}{proc.stderr[-2000:]}"
        )
    return Sample(
        wall=wall,
        user=after.ru_utime - before.ru_utime,
        sys=after.ru_stime - before.ru_stime,
    )


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def paired(base: Sequence[Sample], other: Sequence[Sample]) -> dict[str, Any]:
    """``other`` against ``base``, round by round: ratios of CPU and of wall time."""
    out: dict[str, Any] = {}
    for of in ("cpu", "wall"):
        ratios = [getattr(o, of) / getattr(b, of) for b, o in zip(base, other, strict=True)]
        low, high = quartiles(ratios)
        out[of] = {
            "ratio_median_of_rounds": round(statistics.median(ratios), 3),
            "ratio_quartiles": [round(low, 3), round(high, 3)],
            "ratio_of_medians": round(
                statistics.median(getattr(o, of) for o in other)
                / statistics.median(getattr(b, of) for b in base),
                3,
            ),
            "round_ratios": [round(r, 3) for r in ratios],
        }
    return out


def medians(samples: Sequence[Sample]) -> dict[str, float]:
    return {
        of: round(statistics.median(getattr(s, of) for s in samples), 4)
        for of in ("wall", "cpu", "user", "sys")
    }


def raw(samples: Sequence[Sample]) -> list[list[float]]:
    """``[wall, user, sys]`` per run, for the JSON."""
    return [[round(s.wall, 4), round(s.user, 4), round(s.sys, 4)] for s in samples]


def versions() -> dict[str, str]:
    found = {}
    for name in ("revisor", "alembic", "sqlalchemy", "kopf", "kubernetes"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def machine() -> dict[str, Any]:
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "kernel": platform.release(),
        "versions": versions(),
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def git_head() -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    proc = subprocess.run(
        [git, "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    dirty = subprocess.run(
        [git, "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    )
    head = proc.stdout.strip() or None
    return f"{head}+dirty" if head and dirty.stdout.strip() else head


def header(command: Sequence[str]) -> dict[str, Any]:
    """What every results file starts with; ``loadavg_after`` is added by :func:`write`."""
    return {
        "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "command": " ".join(command),
        "git": git_head(),
        **machine(),
        "loadavg_before": loadavg(),
    }


def write(name: str, report: dict[str, Any], out: str | None = None) -> Path:
    report["loadavg_after"] = loadavg()
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)
    return path


def bytecode_env(prefix: Path, *, write_bytecode: bool) -> dict[str, str]:
    """The environment of both sides: bytecode cached under ``prefix``, never beside the sources.

    ``PYTHONPYCACHEPREFIX`` makes both tools read and write every ``.pyc``
    (standard library, site-packages, Revisor's own package, the revision
    files) in one tree the bench owns, so neither side profits from a cache
    the other lacks, and a source edited by someone else meanwhile (whose
    stale ``.pyc`` would be recompiled on every run under
    ``PYTHONDONTWRITEBYTECODE``) costs both the same once, in the warm-up.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(prefix)
    if not write_bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def forget_bytecode(prefix: Path, directory: Path) -> None:
    """Drop the cached bytecode of the sources under ``directory`` (kept under ``prefix``)."""
    shutil.rmtree(prefix / directory.resolve().relative_to("/"), ignore_errors=True)
    for cache in directory.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)


def fmt_ratio(row: Mapping[str, Any]) -> str:
    low, high = row["ratio_quartiles"]
    return f"**{row['ratio_median_of_rounds']:.3f}** [{low:.3f}-{high:.3f}]"
