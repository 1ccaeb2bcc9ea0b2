"""Revision files from a container image: the init container copies them, the engine applies them.

With ``spec.source.image`` the Job's pod starts with an init container from
that image running ``cp -R <path>/. /scripts/`` into the emptyDir the engine
reads. On the process-kubelet an image is a directory in its registry (the
``images`` fixture), so the copy, the volume and the engine are the real
ones, and a new tag of the image is a new run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from tests.cluster.conftest import Images, Kube
from tests.support.operator_kit import (
    HEAD,
    REVS,
    create,
    create_secret,
    db_tables,
    db_version,
    jobs_of,
    listed,
    migration,
    patch_spec,
    ready,
    scripts,
    settled,
    unique_prefix,
)
from tests.support.projects import Rev

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.usefixtures("operator")]

PREFIX = unique_prefix("image")
IMAGE = "registry.example/shop-migrations"
PATH = "/app/migrations"


def _image_files(revs: Sequence[Rev]) -> dict[str, str]:
    """An application image's files: its code, and its revision files under PATH."""
    files = {f"{PATH}/{name}": text for name, text in scripts(revs).items()}
    # Beside PATH, so not copied; in /scripts the engine would refuse it (no revision id).
    files["/app/main.py"] = "print('the application')\n"
    return files


def _pod_of(kube: Kube, namespace: str, job: dict[str, Any]) -> dict[str, Any]:
    pods = listed(kube, "pods", namespace, f"job-name={job['metadata']['name']}")
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def _terminated(statuses: Sequence[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [s["state"].get("terminated") for s in statuses if s["name"] == name]
    assert found and found[0], statuses
    return dict(found[0])


def test_image_source_migrates_and_a_new_tag_upgrades_in_a_new_job(
    kube: Kube, ns: str, pg_url: str, images: Images
) -> None:
    """Tag 1.0 (two revisions) -> Succeeded at the second; tag 1.1 (three) -> a new Job upgrades."""
    images.add(f"{IMAGE}:1.0", _image_files(REVS[:2]))
    images.add(f"{IMAGE}:1.1", _image_files(REVS))
    create_secret(kube, ns, pg_url)
    source = {"image": {"image": f"{IMAGE}:1.0", "path": PATH}}
    create(kube, ns, migration("shop", source=source))

    first = settled(kube, ns, "shop")
    status = first["status"]
    assert status["phase"] == "Succeeded", status
    assert ready(first)["reason"] == "Migrated"
    assert status["currentRevision"] == REVS[1].id
    assert [s["revision"] for s in status["lastRun"]["applied"]] == [REVS[0].id, REVS[1].id]
    assert db_version(pg_url) == {REVS[1].id}

    generation = patch_spec(kube, ns, "shop", {"source": {"image": {"image": f"{IMAGE}:1.1"}}})
    assert generation == 2
    second = settled(kube, ns, "shop", generation=2, runs=2)
    status = second["status"]
    assert status["phase"] == "Succeeded", status
    assert status["currentRevision"] == HEAD
    assert status["previousRevision"] == REVS[1].id
    assert status["lastRun"]["direction"] == "upgrade"
    assert [s["revision"] for s in status["lastRun"]["applied"]] == [REVS[2].id]
    assert db_version(pg_url) == {HEAD}
    assert db_tables(pg_url) >= {"t1", "t2", "t3"}

    jobs = {
        j["metadata"]["annotations"]["revisor.dev/generation"]: j for j in jobs_of(kube, ns, "shop")
    }
    assert sorted(jobs) == ["1", "2"]
    for generation_key, tag in (("1", "1.0"), ("2", "1.1")):
        job = jobs[generation_key]
        [init] = job["spec"]["template"]["spec"]["initContainers"]
        assert init["image"] == f"{IMAGE}:{tag}"
        assert init["command"] == ["cp", "-R", f"{PATH}/.", "/scripts/"]
        pod = _pod_of(kube, ns, job)
        assert pod["status"]["phase"] == "Succeeded"
        copied = _terminated(pod["status"]["initContainerStatuses"], "scripts")
        assert (copied["exitCode"], copied["reason"]) == (0, "Completed"), copied
        engine = _terminated(pod["status"]["containerStatuses"], "revisor")
        assert engine["exitCode"] == 0, engine
