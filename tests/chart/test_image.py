"""The container image, as far as it can be checked without a container engine.

The Dockerfile cannot be built here (no Docker engine); what it promises can
be: the programs it names are this distribution's console scripts and run,
it runs as the uid the chart and the Jobs expect, its bytecode is compiled at
build time (the root filesystem is read-only at run time), and its build
context holds what the build copies.
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from revisor_operator.decisions.jobs import RUN_AS_USER

from tests.chart.render import REPO, only, template

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def console_scripts() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return dict(project["scripts"])


def test_image_runs_as_the_uid_of_the_chart_and_the_jobs() -> None:
    """USER is numeric, non-root, and the uid the Deployment and Job pods declare."""
    users = [args for keyword, args in final_stage() if keyword == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0  # runAsNonRoot can only verify a numeric uid
    assert int(uid) == RUN_AS_USER == 65532
    assert gid == uid
    pod = only(template(), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)


def test_programs_the_image_runs_are_console_scripts_that_start() -> None:
    """CMD and the docs name `revisor`/`revisor-operator`; both exist and answer --help."""
    scripts = console_scripts()
    assert set(scripts) == {"revisor", "revisor-operator"}
    (cmd,) = [args for keyword, args in final_stage() if keyword == "CMD"]
    assert cmd.startswith("[")  # exec form: no shell between the kubelet and Python
    assert cmd.strip('[]" ').split('"')[0] in scripts
    assert not [k for k, _ in final_stage() if k == "ENTRYPOINT"]  # Jobs set `command`
    text = DOCKERFILE.read_text()
    for name in scripts:
        assert f"run --rm ghcr.io/revisor-dev/revisor:0.1.0 {name} --help" in text
        done = subprocess.run(
            [str(Path(sys.executable).parent / name), "--help"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "usage:" in done.stdout


def test_deployment_command_is_in_the_image() -> None:
    """The chart's command is one of the image's programs, found on the image's PATH."""
    container = only(template(), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["revisor-operator"]
    envs = " ".join(args for keyword, args in final_stage() if keyword == "ENV")
    assert "PATH=/opt/revisor/bin:$PATH" in envs
    runs = " ".join(args for keyword, args in instructions() if keyword == "RUN")
    assert "python -m venv /opt/revisor" in runs


def test_bytecode_is_compiled_at_build_time() -> None:
    """compileall runs over the venv and the stdlib; nothing turns bytecode off at run time."""
    runs = [args for keyword, args in instructions() if keyword == "RUN"]
    compiled = [shlex.split(r) for r in runs if "compileall" in r]
    targets = {argv[-1] for argv in compiled}
    assert targets == {"/opt/revisor", "/usr/local/lib/python3.11"}
    for argv in compiled:
        assert "unchecked-hash" in argv
    assert "PYTHONDONTWRITEBYTECODE" not in DOCKERFILE.read_text().split("FROM", 1)[1]
    assert any("--no-compile" in r for r in runs)


def test_base_is_slim_python_311_in_both_stages() -> None:
    """Multi-stage: a build stage with pip, a runtime stage that only copies the venv."""
    steps = instructions()
    froms = [args for keyword, args in steps if keyword == "FROM"]
    assert len(froms) == 2
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    assert "--from=build /opt/revisor /opt/revisor" in [a for k, a in final_stage() if k == "COPY"]


@pytest.mark.parametrize(
    "path", ["pyproject.toml", "constraints.txt", "README.md", "engine/", "operator/"]
)
def test_build_context_holds_what_the_build_copies(path: str) -> None:
    """Each COPY source exists and .dockerignore lets it through."""
    copied = {
        source
        for keyword, args in instructions()
        if keyword == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    }
    assert path in copied, copied
    assert (REPO / path).exists()
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert f"!{path}" in ignore


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[name.strip()] = version.strip()
    return pins


def test_image_installs_the_versions_the_suite_ran_with() -> None:
    """The image's pip install is constrained by the same file as `make install`."""
    installs = [a for k, a in instructions() if k == "RUN" and "pip install" in a]
    assert installs and all("-c constraints.txt" in a for a in installs), installs


def test_suite_runs_on_the_pinned_versions() -> None:
    """What this suite imports is what constraints.txt pins (so the image gets what was tested)."""
    pins = _pins()
    for package in ("alembic", "SQLAlchemy", "psycopg", "kopf", "kubernetes", "structlog"):
        assert package in pins, f"constraints.txt does not pin {package}"
    drifted = {
        name: (pinned, installed)
        for name, pinned in pins.items()
        if (installed := _installed(name)) is not None and installed != pinned
    }
    assert not drifted, (
        f"installed versions differ from constraints.txt: {drifted}; run make install"
    )


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
