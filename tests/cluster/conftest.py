"""Fixtures for tests on a real Kubernetes API.

By default one local cluster (``localkube``: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, process-kubelet) is started for the
whole session. To run the same tests against an existing cluster (kind, k3d,
...), set ``REVISOR_TEST_KUBECONFIG=/path/to/kubeconfig``, or set
``REVISOR_TEST_USE_KUBECONFIG=1`` to use ``$KUBECONFIG``.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kopf.testing import KopfRunner
from kubernetes import client, config

from tests.support.kube import create_namespace, delete_namespace, existing_kubeconfig, present

PROCESS_KUBELET_LABEL = "localkube.dev/process-kubelet"
#: Where a process-kubelet's image registry is (``localkube.images``), on its Node.
IMAGES_DIR_ANNOTATION = "localkube.dev/images-dir"
# kopf fixes a timer's interval when revisor_operator.kopf_entry is first imported,
# whichever test module does it: set it for the whole session, before any does.
# tests.support.operator_kit.RESYNC_SECONDS checks it is this value.
os.environ["REVISOR_RESYNC_SECONDS"] = "10"
# The same for the progress timer (a running Job's log, read for its progress): a test
# watching progress should not wait the default 5 s between two reads.
os.environ["REVISOR_PROGRESS_POLL_SECONDS"] = "1"
# The operator's allowlist for scripts images (none by default): the images the
# process-kubelet's registry serves in these tests, and nothing else.
os.environ["REVISOR_ALLOWED_SOURCE_IMAGES"] = "registry.example/*"
_TOOLS = Path(__file__).resolve().parents[2] / "tools"
if str(_TOOLS) not in sys.path:
    sys.path.insert(0, str(_TOOLS))  # the Makefile exports this; bare `pytest` does not


@dataclass(frozen=True)
class Kube:
    """The cluster under test."""

    kubeconfig: Path
    api: client.ApiClient
    #: True when pods run on localkube's process-kubelet (commands run from this checkout).
    process_kubelet: bool
    #: Seconds the local cluster took to become ready (0 for an existing cluster).
    startup_seconds: float


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    """The cluster: a session-wide local one, or the one named by REVISOR_TEST_KUBECONFIG."""
    existing = existing_kubeconfig(os.environ)
    if existing is not None:
        api = config.new_client_from_config(config_file=str(existing))
        # A cluster from `make cluster-up` runs pods on this machine too: all tests apply.
        nodes = client.CoreV1Api(api).list_node().items
        local = bool(nodes) and all(
            (present(node.metadata).labels or {}).get(PROCESS_KUBELET_LABEL) == "true"
            for node in nodes
        )
        yield Kube(kubeconfig=existing, api=api, process_kubelet=local, startup_seconds=0.0)
        api.close()
        return
    from localkube import LocalCluster

    cluster = LocalCluster(tmp_path_factory.mktemp("localkube"))
    cluster.start()
    _startup_seconds.append(cluster.startup_seconds)
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield Kube(
            kubeconfig=cluster.kubeconfig,
            api=api,
            process_kubelet=True,
            startup_seconds=cluster.startup_seconds,
        )
    finally:
        api.close()
        cluster.stop()


_startup_seconds: list[float] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how long the local cluster took to start: it is most of a short run."""
    for seconds in _startup_seconds:
        terminalreporter.write_line(f"localkube: control plane + node ready in {seconds:.1f} s")


@pytest.fixture
def process_kubelet(kube: Kube) -> Kube:
    """The cluster, when its pods run on the process-kubelet (else the test is skipped)."""
    if not kube.process_kubelet:
        pytest.skip("needs localkube's process-kubelet (pods running this checkout's commands)")
    return kube


@dataclass
class Images:
    """The process-kubelet's image registry: an image is a directory (``localkube.images``)."""

    directory: Path
    added: list[Path] = field(default_factory=list)

    def _fresh(self, reference: str) -> Path:
        from localkube.images import image_dir

        path = image_dir(self.directory, reference)
        _remove(path)
        self.added.append(path)
        return path

    def add(self, reference: str, files: Mapping[str, str]) -> Path:
        """Image ``reference`` holding ``files`` (absolute path in the image -> text); its root."""
        root = self._fresh(reference)
        root.mkdir(parents=True)
        for name, text in files.items():
            target = root / name.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        return root

    def unpullable(self, reference: str, message: str) -> None:
        """Image ``reference`` fails to pull with ``message`` until it is ``add``-ed."""
        self._fresh(reference).write_text(message)

    def remove_added(self) -> None:
        for path in self.added:
            _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@pytest.fixture
def images(process_kubelet: Kube) -> Iterator[Images]:
    """The process-kubelet's image registry; what a test adds is removed after it."""
    nodes = client.CoreV1Api(process_kubelet.api).list_node().items
    found = {
        (present(node.metadata).annotations or {}).get(IMAGES_DIR_ANNOTATION) for node in nodes
    }
    directories = sorted(filter(None, found))
    if len(directories) != 1:
        pytest.skip(f"needs one process-kubelet image registry, the nodes name {directories}")
    registry = Images(Path(directories[0]))
    yield registry
    registry.remove_added()


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace with its default ServiceAccount, deleted after the test."""
    name = create_namespace(kube.api, "t", request.node.name)
    yield name
    delete_namespace(kube.api, name)


@pytest.fixture(scope="module")
def operator(kube: Kube, request: pytest.FixtureRequest) -> Iterator[KopfRunner]:
    """The operator, in this process, for the whole module.

    It watches the namespaces named ``<module's PREFIX>-*``, which is what
    the ``ns`` fixture creates, so each module's tests see only their operator.
    """
    from tests.support.operator_kit import install_crd, running_operator

    install_crd(kube)
    with running_operator(kube, f"{request.module.PREFIX}-*") as runner:
        yield runner
    print(runner.output)


@pytest.fixture
def ns(process_kubelet: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace ``<module's PREFIX>-<test>-<random>``, with the CRD installed."""
    from tests.support.operator_kit import install_crd

    install_crd(process_kubelet)
    name = create_namespace(process_kubelet.api, request.module.PREFIX, request.node.name)
    yield name
    delete_namespace(process_kubelet.api, name)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/cluster that uses the cluster carries the ``cluster`` marker."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if {"kube", "namespace", "process_kubelet"} & set(fixtures):
            item.add_marker(pytest.mark.cluster)
