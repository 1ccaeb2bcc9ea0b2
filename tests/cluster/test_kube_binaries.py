"""Without binaries, Go or KUBEBUILDER_ASSETS, the suite says what is missing and how to fix it.

``scripts/kube-binaries.sh`` is what ``make test`` runs first; on a machine
without Go it must fail at once with the two ways out (install Go, or point
``KUBEBUILDER_ASSETS`` at the binaries), and with a Go too old for the pinned
Kubernetes it must say so before a long download, not fail in ``go mod tidy``.
``find_binaries`` (what ``pytest tests/cluster`` calls without ``make``)
passes the script's reason on. No test here builds anything.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

# tests/cluster/conftest.py puts tools/ on sys.path when the Makefile has not.
from localkube.binaries import KUBE_VERSION, NAMES, BinariesMissingError, find_binaries

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kube-binaries.sh"


def _path_without_go() -> str:
    """This PATH minus every directory that holds a ``go``."""
    entries = os.environ.get("PATH", os.defpath).split(os.pathsep)
    return os.pathsep.join(e for e in entries if e and not (Path(e) / "go").exists())


@pytest.fixture
def bare_env(tmp_path: Path) -> dict[str, str]:
    """An environment with an empty cache, no KUBEBUILDER_ASSETS and no Go anywhere looked at."""
    env = {k: v for k, v in os.environ.items() if k not in {"KUBEBUILDER_ASSETS", "GO"}}
    (tmp_path / "goroot").mkdir()
    env.update(
        PATH=_path_without_go(),
        GOROOT=str(tmp_path / "goroot"),  # the script's last resort is $GOROOT/bin/go
        REVISOR_CACHE_DIR=str(tmp_path / "cache"),
    )
    return env


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT)], env=env, capture_output=True, text=True, check=False, timeout=60
    )


def _fake_go(directory: Path, version: str) -> None:
    """A ``go`` that reports ``version`` and fails loudly at anything else."""
    directory.mkdir(exist_ok=True)
    go = directory / "go"
    go.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = version ]; then echo "go version {version} linux/amd64"; exit 0; fi\n'
        'echo "fake go asked to: $*" >&2; exit 3\n'
    )
    go.chmod(0o755)


def test_without_go_or_assets_the_script_names_both_remedies(bare_env: dict[str, str]) -> None:
    done = _run(bare_env)
    assert done.returncode != 0
    assert done.stdout == ""  # stdout carries only a bin directory, and there is none
    message = done.stderr
    assert "no Go toolchain" in message
    assert f"{bare_env['REVISOR_CACHE_DIR']}/kube/{KUBE_VERSION}/bin" in message
    assert "install Go >= 1.24" in message
    assert "KUBEBUILDER_ASSETS" in message
    for name in NAMES:
        assert name in message
    # Nothing was started, so nothing was left in the cache.
    assert not (Path(bare_env["REVISOR_CACHE_DIR"]) / "kube").exists()


def test_too_old_go_is_refused_before_any_download(
    bare_env: dict[str, str], tmp_path: Path
) -> None:
    _fake_go(tmp_path / "old", "go1.21.13")
    env = {**bare_env, "PATH": f"{tmp_path / 'old'}{os.pathsep}{bare_env['PATH']}"}
    done = _run(env)
    assert done.returncode != 0
    assert "Go 1.21.13" in done.stderr
    assert "too old" in done.stderr
    assert "needs Go >= 1.24" in done.stderr
    assert "KUBEBUILDER_ASSETS" in done.stderr
    assert "fake go asked to" not in done.stderr  # refused before `go mod download`


@pytest.mark.parametrize("version", ["go1.24", "go1.24.0", "go1.26.8"])
def test_new_enough_go_passes_the_version_check(
    bare_env: dict[str, str], tmp_path: Path, version: str
) -> None:
    _fake_go(tmp_path / "new", version)
    env = {**bare_env, "PATH": f"{tmp_path / 'new'}{os.pathsep}{bare_env['PATH']}"}
    done = _run(env)
    # The fake fails at its first real job: proof the script got that far.
    assert "fake go asked to: mod download" in done.stderr
    assert "too old" not in done.stderr
    assert done.returncode != 0


def test_incomplete_kubebuilder_assets_names_what_is_missing(
    bare_env: dict[str, str], tmp_path: Path
) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    for name in ("etcd", "kube-apiserver", "kubectl"):  # what an envtest archive ships
        (assets / name).write_text("#!/bin/sh\n")
        (assets / name).chmod(0o755)
    done = _run({**bare_env, "KUBEBUILDER_ASSETS": str(assets)})
    assert done.returncode != 0
    assert "lacks: kube-controller-manager kube-scheduler" in done.stderr


def test_find_binaries_without_go_raises_with_the_scripts_reason(
    bare_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.delenv("GO", raising=False)
    for key in ("PATH", "GOROOT", "REVISOR_CACHE_DIR"):
        monkeypatch.setenv(key, bare_env[key])
    with pytest.raises(BinariesMissingError) as without_build:
        find_binaries(build=False)
    assert "make kube-binaries" in str(without_build.value)
    assert "KUBEBUILDER_ASSETS" in str(without_build.value)

    with pytest.raises(BinariesMissingError) as with_build:
        find_binaries()
    assert "no Go toolchain" in str(with_build.value)
    assert "KUBEBUILDER_ASSETS" in str(with_build.value)
