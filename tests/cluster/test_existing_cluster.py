"""Which cluster the suite runs on, and which kubectl it uses there; no cluster needed.

The suite starts its own control plane unless told to use an existing one:
``REVISOR_TEST_KUBECONFIG``, or ``KUBECONFIG`` with an explicit opt-in, so a
developer's everyday kubeconfig is never a test target by accident. On such a
cluster nothing may need the locally built binaries: kubectl comes from PATH.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# tests/cluster/conftest.py puts tools/ on sys.path when the Makefile has not.
from localkube.binaries import NAMES

from tests.support.kube import existing_kubeconfig, kubectl


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"REVISOR_TEST_KUBECONFIG": "/k/kind"}, "/k/kind"),
        ({"REVISOR_TEST_KUBECONFIG": "  "}, None),
        ({"REVISOR_TEST_KUBECONFIG": "~/.kube/config"}, str(Path.home() / ".kube/config")),
        # KUBECONFIG alone is the developer's own cluster: not used without the opt-in.
        ({"KUBECONFIG": "/k/a"}, None),
        ({"KUBECONFIG": "/k/a", "REVISOR_TEST_USE_KUBECONFIG": "0"}, None),
        ({"KUBECONFIG": "/k/a", "REVISOR_TEST_USE_KUBECONFIG": "no"}, None),
        ({"KUBECONFIG": "/k/a", "REVISOR_TEST_USE_KUBECONFIG": "1"}, "/k/a"),
        ({"KUBECONFIG": "/k/a", "REVISOR_TEST_USE_KUBECONFIG": "True"}, "/k/a"),
        ({"KUBECONFIG": "/k/a", "REVISOR_TEST_USE_KUBECONFIG": "yes"}, "/k/a"),
        ({"KUBECONFIG": f"/k/a{os.pathsep}/k/b", "REVISOR_TEST_USE_KUBECONFIG": "1"}, "/k/a"),
        ({"KUBECONFIG": f"{os.pathsep}/k/b", "REVISOR_TEST_USE_KUBECONFIG": "1"}, "/k/b"),
        ({"KUBECONFIG": "", "REVISOR_TEST_USE_KUBECONFIG": "1"}, None),
        ({"REVISOR_TEST_USE_KUBECONFIG": "1"}, None),
        # The explicit variable wins over the opt-in.
        (
            {
                "REVISOR_TEST_KUBECONFIG": "/k/explicit",
                "KUBECONFIG": "/k/a",
                "REVISOR_TEST_USE_KUBECONFIG": "1",
            },
            "/k/explicit",
        ),
    ],
)
def test_existing_cluster_is_chosen_only_when_asked_for(
    environ: dict[str, str], expected: str | None
) -> None:
    found = existing_kubeconfig(environ)
    assert (str(found) if found is not None else None) == expected


def _fake_kubectl(directory: Path) -> Path:
    directory.mkdir()
    tool = directory / "kubectl"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    return tool


def test_existing_cluster_uses_kubectl_from_path_without_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = _fake_kubectl(tmp_path / "bin")
    # Were the local binaries looked up, this cache would be found empty and a build begun.
    monkeypatch.setenv("REVISOR_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    environ = {"REVISOR_TEST_KUBECONFIG": "/k/kind", "PATH": str(tool.parent)}
    assert kubectl(environ) == str(tool)


def test_local_cluster_uses_the_pinned_kubectl_not_the_one_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path = _fake_kubectl(tmp_path / "bin")
    assets = tmp_path / "assets"
    assets.mkdir()
    for name in NAMES:
        (assets / name).write_text("#!/bin/sh\n")
        (assets / name).chmod(0o755)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))
    assert kubectl({"PATH": str(on_path.parent)}) == str(assets / "kubectl")
