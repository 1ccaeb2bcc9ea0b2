"""Find the Kubernetes binaries that ``scripts/kube-binaries.sh`` builds or locates.

The shell script is the one place that knows how to build them; this module
only looks where the script puts them (``KUBEBUILDER_ASSETS``, then the
per-version cache) and, inside a checkout, runs the script when they are
missing, so ``pytest tests/cluster`` works without ``make``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

NAMES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
_HERE = Path(__file__).resolve().parent
KUBE_VERSION = (_HERE / "kube-version.txt").read_text().strip()
_SCRIPT = _HERE.parent.parent / "scripts" / "kube-binaries.sh"


class BinariesMissingError(RuntimeError):
    """The binaries are neither cached nor buildable here."""


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of the five programs a local control plane needs."""

    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name

    @property
    def etcd(self) -> Path:
        return self.path("etcd")

    @property
    def kube_apiserver(self) -> Path:
        return self.path("kube-apiserver")

    @property
    def kube_controller_manager(self) -> Path:
        return self.path("kube-controller-manager")

    @property
    def kube_scheduler(self) -> Path:
        return self.path("kube-scheduler")

    @property
    def kubectl(self) -> Path:
        return self.path("kubectl")


def cache_dir(version: str = KUBE_VERSION) -> Path:
    """``${REVISOR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/revisor}/kube/<version>/bin``."""
    root = os.environ.get("REVISOR_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(xdg) / "revisor")
    return Path(root) / "kube" / version / "bin"


def _complete(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in NAMES)


def find_binaries(*, build: bool = True) -> Binaries:
    """Return the binaries, running ``scripts/kube-binaries.sh`` if allowed and needed."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        if _complete(Path(assets)):
            return Binaries(Path(assets))
        raise BinariesMissingError(
            f"KUBEBUILDER_ASSETS={assets} must hold {', '.join(NAMES)} "
            "(envtest archives lack kube-controller-manager and kube-scheduler)"
        )
    cached = cache_dir()
    if _complete(cached):
        return Binaries(cached)
    reason = ""
    if build and _SCRIPT.exists():
        directory, reason = _run_script()
        if directory is not None and _complete(directory):
            return Binaries(directory)
    raise BinariesMissingError(
        reason
        or f"no Kubernetes {KUBE_VERSION} binaries in {cached}; run `make kube-binaries` "
        f"(needs Go) or set KUBEBUILDER_ASSETS to a directory holding {', '.join(NAMES)}"
    )


def _run_script() -> tuple[Path | None, str]:
    """Run the script, passing its progress on; return its directory, or why it failed.

    Its stderr is forwarded line by line (a first build talks for minutes) and
    its ``error:`` lines are kept, so the exception says what the script said.
    """
    with subprocess.Popen(
        [str(_SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as script:
        assert script.stdout is not None and script.stderr is not None
        errors: list[str] = []
        for line in script.stderr:
            sys.stderr.write(line)
            if errors or line.startswith("kube-binaries: error:"):
                errors.append(line.rstrip("\n"))
        out = script.stdout.read().strip()
    if script.returncode == 0 and out:
        return Path(out), ""
    return None, "\n".join(errors) or f"{_SCRIPT} exited with {script.returncode}"
