"""The container image, as far as it can be checked without a container engine.

The Dockerfile cannot be built here (no Docker engine); what it promises can
be: the programs it names are this distribution's console scripts and run,
it runs as the uid the chart and the Jobs expect, its bytecode is compiled at
build time (the root filesystem is read-only at run time), and its build
context holds what the build copies. Its supply chain: the base image is
pinned by digest, and pip installs only the wheels requirements/*.txt hash,
which cover every runtime dependency at the version constraints.txt pins.
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
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from revisor_operator.decisions.jobs import RUN_AS_USER

from tests.chart.render import REPO, only, template

DOCKERFILE = REPO / "Dockerfile"
IMAGE_REQUIREMENTS = REPO / "requirements" / "image.txt"
BUILD_REQUIREMENTS = REPO / "requirements" / "build.txt"
#: The extras the image installs (Dockerfile, scripts/lock-image-requirements.sh).
IMAGE_EXTRAS = ("operator", "async")


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


def test_base_image_is_pinned_by_digest() -> None:
    """Both stages start FROM the one ARG, a tag and a digest: the digest is what is pulled."""
    steps = instructions()
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", args["PYTHON_IMAGE"])
    froms = [a.split()[0] for k, a in steps if k == "FROM"]
    assert froms == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def _hashed(path: Path) -> dict[str, tuple[str, list[str]]]:
    """{normalized name: (version, [sha256, ...])} of a pip requirements file with hashes."""
    text = path.read_text().replace("\\\n", " ")
    found: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        requirement, *options = line.split()
        name, _, version = requirement.partition("==")
        assert version, f"{path.name}: {requirement!r} is not pinned exactly"
        hashes = [o.removeprefix("--hash=sha256:") for o in options]
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), line
        assert len(options) == len(hashes)
        found[canonicalize_name(name)] = (version, hashes)
    return found


def runtime_closure() -> set[str]:
    """Every distribution `pip install .[operator,async]` installs on Linux, Python 3.11.

    From pyproject.toml's requirements, then each dependency's own metadata as installed
    here (the suite runs on the pinned versions: see test_suite_runs_on_the_pinned_versions).
    """
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in IMAGE_EXTRAS:
        wanted += [Requirement(r) for r in project["optional-dependencies"][extra]]
    environment = {str(k): str(v) for k, v in default_environment().items()}
    environment |= {"sys_platform": "linux", "platform_system": "Linux"}
    seen: set[str] = set()
    queue = [(r, "") for r in wanted]
    while queue:
        requirement, extra = queue.pop()
        if requirement.marker and not requirement.marker.evaluate({**environment, "extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        extras = sorted(requirement.extras)
        if name in seen and not extras:
            continue
        seen.add(name)
        for text in importlib.metadata.requires(requirement.name) or []:
            dependency = Requirement(text)
            for asked in ["", *extras]:
                queue.append((dependency, asked))
    return seen


def test_image_requirements_cover_every_runtime_dependency_at_the_pinned_versions() -> None:
    """requirements/image.txt: the runtime closure, nothing more, each as constraints.txt pins
    it, each with its wheels' sha256. Stale after `make constraints`: rerun
    scripts/lock-image-requirements.sh."""
    hashed = _hashed(IMAGE_REQUIREMENTS)
    closure = runtime_closure()
    assert "kopf" in closure and "psycopg-binary" in closure and "asyncpg" in closure
    assert sorted(closure - set(hashed)) == [], "missing from requirements/image.txt"
    assert sorted(set(hashed) - closure) == [], "in requirements/image.txt, not a dependency"
    pins: dict[str, str] = {canonicalize_name(n): version for n, version in _pins().items()}
    stale = {
        name: (version, pins.get(name))
        for name, (version, _) in hashed.items()
        if pins.get(name) != version
    }
    assert not stale, f"(hashed, pinned) differ: {stale}; run scripts/lock-image-requirements.sh"


def test_packages_with_compiled_code_are_hashed_for_both_architectures() -> None:
    """A wheel per platform (x86_64 and aarch64): two hashes or more where code is compiled."""
    hashed = _hashed(IMAGE_REQUIREMENTS)
    for name in ("psycopg-binary", "asyncpg", "greenlet", "sqlalchemy", "pyyaml", "aiohttp"):
        assert len(hashed[name][1]) >= 2, (name, hashed[name])


def test_build_backend_is_hashed_and_satisfies_pyproject() -> None:
    """requirements/build.txt: the setuptools pyproject.toml's build-system asks for."""
    hashed = _hashed(BUILD_REQUIREMENTS)
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]
    assert build["build-backend"] == "setuptools.build_meta"
    for text in build["requires"]:
        requirement = Requirement(text)
        if requirement.name == "wheel":
            continue  # setuptools >= 70.1 builds wheels itself
        version, _ = hashed[canonicalize_name(requirement.name)]
        assert version in SpecifierSet(str(requirement.specifier)), (requirement, version)
    assert "setuptools" in (REPO / "requirements" / "build.in").read_text()


def test_every_pip_install_requires_hashes_or_installs_the_local_wheel() -> None:
    """No pip install in the Dockerfile resolves from an index without a hash."""
    runs = [a for k, a in instructions() if k == "RUN" and "pip" in a]
    installs = [
        command.strip()
        for run in runs
        for command in run.split("&&")
        if " install " in f" {command} " and "pip" in command
    ]
    assert len(installs) == 3, installs
    for command in installs:
        argv = shlex.split(command)
        if "--no-index" in argv:
            assert argv[-1] == "/wheels/revisor-*.whl"
        else:
            assert "--require-hashes" in argv and "--no-deps" in argv, command
            assert "--only-binary=:all:" in argv, command
            assert argv[argv.index("-r") + 1] in (
                "requirements/build.txt",
                "requirements/image.txt",
            )
    assert any("pip check" in r for r in runs)
    assert any("--no-build-isolation" in r for r in runs)


@pytest.mark.parametrize(
    "path", ["pyproject.toml", "requirements/", "README.md", "engine/", "operator/"]
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


def test_the_wheel_holds_every_package_of_the_source() -> None:
    """The image installs a built wheel, not this checkout: pyproject.toml must list every
    package directory (an editable install, as `make install` makes, would hide one missing)."""
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = tool.get("packages")
    if isinstance(packages, dict):  # packages = {find = {...}}: found, not listed
        return
    listed = set(packages)
    for package, directory in tool["package-dir"].items():
        for init in sorted((REPO / directory).rglob("__init__.py")):
            relative = init.parent.relative_to(REPO / directory)
            name = ".".join([package, *relative.parts])
            assert name in listed, f"pyproject.toml [tool.setuptools] packages lacks {name}"


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
