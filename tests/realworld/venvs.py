"""Virtualenvs for projects whose pins conflict with ours, made once and cached.

A project listed in :mod:`tests.realworld.projects` with a ``requirements``
file runs in its own virtualenv under
``${REVISOR_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/revisor}/realworld/``, named
after that file's content, so a new pin makes a new virtualenv and the old one
is never half-updated. It is built under an exclusive ``flock`` and marked
complete only when pip has finished, so parallel pytest sessions wait for one
build instead of racing, and a build that died is started again. pip installs
from PyPI only (``-r`` with exact pins); the Revisor engine is not installed:
it runs from this checkout (``PYTHONPATH``, see :func:`revisor_argv`), so the
cached virtualenv never goes stale against the code under test.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.projects import REPO

HERE = Path(__file__).resolve().parent
#: pip's own log of each build, kept beside the virtualenv for a failed build's post-mortem.
BUILD_LOG = "build.log"
#: A build of the largest set (Langflow, ~330 packages) takes 3-6 minutes from PyPI.
BUILD_TIMEOUT_SECONDS = 1800


def cache_root() -> Path:
    base = os.environ.get("REVISOR_CACHE_DIR") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "revisor"
    )
    return Path(base) / "realworld"


def venv_dir(requirements: Path) -> Path:
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    name = requirements.stem.removeprefix("requirements-")
    return cache_root() / f"{name}-py{sys.version_info.major}{sys.version_info.minor}-{digest}"


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def ensure_venv(requirements: Path) -> Path:
    """The virtualenv for ``requirements`` (a file under tests/realworld/), built if missing."""
    target = venv_dir(requirements)
    ready = target / ".complete"
    if ready.exists():
        return target
    with _exclusive(target.with_name(target.name + ".lock")):
        if ready.exists():  # another session built it while we waited
            return target
        # A build that died half-way left no marker: start again from nothing.
        shutil.rmtree(target, ignore_errors=True)
        started = time.monotonic()
        # sys.executable is the project's .venv python; the new venv must not nest in it.
        base_python = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base_python, "-m", "venv", str(target)], check=True)
        log = target / BUILD_LOG
        with log.open("w") as out:
            done = subprocess.run(
                [str(target / "bin" / "python"), "-m", "pip", "install",
                 "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
                 "-r", str(requirements)],
                stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_SECONDS, check=False,
            )  # fmt: skip
        if done.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(
                f"pip could not build the virtualenv for {requirements.name} "
                f"(exit {done.returncode}); the log is {log}:\n{tail}"
            )
        ready.write_text(f"built in {time.monotonic() - started:.0f}s\n")
    return target


def ensure_target(requirements: Path) -> Path:
    """A directory holding ``requirements`` (``pip install --target``), built if missing.

    For a package a history needs beside ours rather than instead of them
    (mysqlclient for Airflow on MariaDB): put on ``PYTHONPATH``, it adds to the
    interpreter's packages without a virtualenv of its own. Cached and locked
    as :func:`ensure_venv` is.
    """
    target = venv_dir(requirements)
    ready = target / ".complete"
    if ready.exists():
        return target
    with _exclusive(target.with_name(target.name + ".lock")):
        if ready.exists():
            return target
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        started = time.monotonic()
        log = target.with_name(target.name + "." + BUILD_LOG)
        with log.open("w") as out:
            done = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
                 "--no-input", "--progress-bar", "off", "--target", str(target),
                 "-r", str(requirements)],
                stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_SECONDS, check=False,
            )  # fmt: skip
        if done.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(
                f"pip could not install {requirements.name} into {target} (exit "
                f"{done.returncode}); a package built from source needs its C headers (for "
                f"mysqlclient: libmariadb-dev and pkg-config, which scripts/ensure-mariadb.sh "
                f"installs); the log is {log}:\n{tail}"
            )
        ready.write_text(f"built in {time.monotonic() - started:.0f}s\n")
    return target


def revisor_argv(venv: Path | None) -> list[str]:
    """How to start the engine: ours from .venv, or this checkout's in another virtualenv."""
    if venv is None:
        return [str(Path(sys.executable).with_name("revisor"))]
    return [str(venv / "bin" / "python"), "-m", "revisor"]


def revisor_env(venv: Path | None, env: dict[str, str]) -> dict[str, str]:
    """The environment for :func:`revisor_argv`: the checkout's engine first on the path."""
    if venv is None:
        return env
    return {**env, "PYTHONPATH": str(REPO / "engine")}
