"""Pods whose image has a root filesystem in the process-kubelet's registry.

The container sees the image's files at their paths (command, args, env,
workingDir), as it would in a real runtime; an image registered as failing to
pull holds its container in ErrImagePull / ImagePullBackOff until it can be.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from kubernetes import client, watch

from tests.cluster.conftest import Images, Kube
from tests.support.kube import apply, pod_finished

pytestmark = pytest.mark.cluster

PYTHON = sys.executable
# Reads the files named by argv[1] and $DATA and ./local.txt; writes them to argv[2].
SHOW = (
    "import os, sys; parts = [open(p).read() for p in (sys.argv[1], os.environ['DATA'], "
    "'local.txt')]; open(sys.argv[2], 'w').write('|'.join(parts))"
)


def _pod(name: str, image: str, **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": image, **container}],
        },
    }


def _read(kube: Kube, namespace: str, name: str) -> Any:
    return client.CoreV1Api(kube.api).read_namespaced_pod(name, namespace)


def _finished(kube: Kube, namespace: str, name: str) -> Any:
    return pod_finished(kube.api, namespace, name)


def test_a_container_reads_its_images_files_at_their_paths(
    process_kubelet: Kube, namespace: str, images: Images
) -> None:
    images.add(
        "registry.example/tools:1.0",
        {"/opt/app/a.txt": "from args", "/etc/app/b.txt": "from env", "/srv/local.txt": "cwd"},
    )
    pod = _pod(
        "image-files",
        "registry.example/tools:1.0",
        command=[PYTHON, "-c", SHOW, "/opt/app/a.txt", "/dev/termination-log"],
        env=[{"name": "DATA", "value": "/etc/app/b.txt"}],
        workingDir="/srv",
    )
    apply(process_kubelet.api, pod, namespace=namespace)
    done = _finished(process_kubelet, namespace, "image-files")
    terminated = done.status.container_statuses[0].state.terminated
    assert done.status.phase == "Succeeded", terminated
    assert terminated.message == "from args|from env|cwd"


def test_an_image_that_cannot_be_pulled_holds_its_container_until_it_can(
    process_kubelet: Kube, namespace: str, images: Images
) -> None:
    """As the kubelet does: ErrImagePull, then ImagePullBackOff, retried until the pull works."""
    images.unpullable("registry.example/late:1.0", "manifest unknown")
    pod = _pod(
        "late-image",
        "registry.example/late:1.0",
        command=[PYTHON, "-c", "import sys; print(open(sys.argv[1]).read())", "/data.txt"],
    )
    apply(process_kubelet.api, pod, namespace=namespace)
    # Watched, not polled: each state lasts about a second, and a poll could miss one.
    waiting = []
    for event in watch.Watch().stream(
        client.CoreV1Api(process_kubelet.api).list_namespaced_pod,
        namespace,
        field_selector="metadata.name=late-image",
        timeout_seconds=30,
    ):
        statuses = event["object"].status.container_statuses or []
        state = statuses[0].state.waiting if statuses else None
        if state is not None and state.reason in {"ErrImagePull", "ImagePullBackOff"}:
            assert event["object"].status.phase == "Pending"
            waiting.append((state.reason, state.message))
            if state.reason == "ImagePullBackOff":
                break
    reasons = [reason for reason, _ in waiting]
    assert reasons[:1] == ["ErrImagePull"] and reasons[-1:] == ["ImagePullBackOff"], waiting
    assert all("manifest unknown" in message for _, message in waiting), waiting

    images.add("registry.example/late:1.0", {"/data.txt": "pulled at last"})
    done = _finished(process_kubelet, namespace, "late-image")
    assert done.status.phase == "Succeeded"
    assert (
        client.CoreV1Api(process_kubelet.api).read_namespaced_pod_log("late-image", namespace)
        == "pulled at last\n"
    )
