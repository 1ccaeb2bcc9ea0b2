"""Creating a DatabaseMigration is not a back door: tested as the person who creates one.

RBAC is on. The author is a ServiceAccount that may create DatabaseMigrations
and ConfigMaps in its namespace and nothing else: no pods, no Jobs, no
Secrets. Acting as the author, each test tries what the operator must not do
on the author's behalf (run an image, a ServiceAccount, a toleration the
operator does not allow; read a Secret's other values back through a
status message), and, acting as someone who may create pods, forges a Job's
result. And the Jobs the operator makes must run where a ResourceQuota
requires limits, and for a resource whose name has every character the API
allows.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from tests.cluster.conftest import Images, Kube
from tests.support.kube import can, present, token_kubeconfig, wait_for
from tests.support.operator_kit import (
    REVS,
    create,
    create_config_map,
    create_secret,
    db_version,
    jobs_of,
    migration,
    read,
    ready,
    scripts,
    settled,
    slow,
    unique_prefix,
)

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.usefixtures("operator")]

PREFIX = unique_prefix("security")


@dataclass(frozen=True)
class Author:
    """The person who may create DatabaseMigrations and ConfigMaps here, and nothing more."""

    api: client.ApiClient
    namespace: str

    def create(self, body: dict[str, Any]) -> None:
        client.CustomObjectsApi(self.api).create_namespaced_custom_object(
            "revisor.dev", "v1alpha1", self.namespace, "databasemigrations", body
        )

    def config_map(self, name: str, data: dict[str, str]) -> None:
        client.CoreV1Api(self.api).create_namespaced_config_map(
            self.namespace,
            client.V1ConfigMap.model_validate(
                {"metadata": {"name": name, "labels": {"revisor.dev/scripts": "true"}},
                 "data": data}
            ),
        )  # fmt: skip


@pytest.fixture
def author(kube: Kube, ns: str, tmp_path: Path) -> Iterator[Author]:
    rbac = client.RbacAuthorizationV1Api(kube.api)
    core = client.CoreV1Api(kube.api)
    core.create_namespaced_service_account(
        ns, client.V1ServiceAccount.model_validate({"metadata": {"name": "author"}})
    )
    rbac.create_namespaced_role(
        ns,
        client.V1Role.model_validate(
            {
                "metadata": {"name": "author"},
                "rules": [
                    {"apiGroups": ["revisor.dev"], "resources": ["databasemigrations"],
                     "verbs": ["create", "get", "list", "watch", "patch", "update", "delete"]},
                    {"apiGroups": [""], "resources": ["configmaps"],
                     "verbs": ["create", "get", "list", "patch", "update", "delete"]},
                ],
            }
        ),
    )  # fmt: skip
    rbac.create_namespaced_role_binding(
        ns,
        client.V1RoleBinding.model_validate(
            {
                "metadata": {"name": "author"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                            "name": "author"},
                "subjects": [{"kind": "ServiceAccount", "name": "author", "namespace": ns}],
            }
        ),
    )  # fmt: skip
    path = token_kubeconfig(kube.api, kube.kubeconfig, ns, "author", tmp_path / "author.yaml")
    api = config.new_client_from_config(config_file=str(path))
    yield Author(api=api, namespace=ns)
    api.close()


def test_the_author_may_create_migrations_but_no_pod_job_or_secret(author: Author) -> None:
    """The premise of every test here: what the author alone can do."""
    ns = author.namespace
    assert can(author.api, "create", "revisor.dev:databasemigrations", ns)
    assert can(author.api, "create", "configmaps", ns)
    for verb, resource in [("create", "pods"), ("create", "batch:jobs"), ("get", "secrets"),
                           ("list", "secrets"), ("create", "serviceaccounts/token")]:  # fmt: skip
        assert not can(author.api, verb, resource, ns), (verb, resource)


def _refused(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    def condition_of(obj: dict[str, Any] | None) -> str:
        return ready(obj)["reason"] if obj and obj.get("status") else ""

    found = wait_for(
        lambda: read(kube, ns, name),
        lambda obj: condition_of(obj) == "InvalidSpec",
        timeout=60,
        what=f"{name} to be refused",
    )
    return dict(found)


@pytest.mark.parametrize(
    ("spec", "field", "allowlist"),
    [
        ({"runner": {"image": "evil.example/miner:1"}}, "spec.runner.image", "runner images"),
        (
            {"source": {"image": {"image": "evil.example/scripts:1", "path": "/m"}}},
            "spec.source.image.image",
            "scripts images (registry.example/*)",
        ),
        ({"runner": {"serviceAccountName": "default"}}, "spec.runner.serviceAccountName",
         "ServiceAccounts (revisor-runner)"),
        ({"runner": {"tolerations": [{"operator": "Exists"}]}}, "spec.runner.tolerations[0]",
         "tolerates every taint"),
    ],
    ids=["runner-image", "source-image", "service-account", "toleration"],
)  # fmt: skip
def test_what_the_operator_does_not_allow_is_refused_with_a_condition_and_no_job(
    kube: Kube, author: Author, spec: dict[str, Any], field: str, allowlist: str
) -> None:
    ns = author.namespace
    create_secret(kube, ns, "sqlite:////nonexistent.db")
    author.config_map("app-migrations", scripts(REVS))
    author.create(migration("app", **spec))
    refused = _refused(kube, ns, "app")
    message = ready(refused)["message"]
    assert field in message and allowlist in message, message
    assert refused["status"]["phase"] == "Failed"
    time.sleep(2)  # a Job, if one were made, would exist by now
    assert jobs_of(kube, ns, "app") == []


def test_a_forged_pod_with_a_fake_result_is_ignored(
    kube: Kube, ns: str, pg_url: str, tmp_path: Path
) -> None:
    """Someone who may create pods copies the Job's labels and writes "Succeeded": ignored."""
    flag = tmp_path / "hold"
    flag.touch()
    tmp_path.chmod(0o777)
    held = slow(REVS[1], flag)
    revs = [REVS[0], replace(held, upgrade=f"{held.upgrade}\nraise RuntimeError('real failure')")]
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, revs)
    create(kube, ns, migration("app", onFailure="Stop"))
    job = wait_for(
        lambda: jobs_of(kube, ns, "app"),
        lambda jobs: len(jobs) == 1,
        timeout=60,
        what="the Job",
    )[0]
    meta = job["metadata"]
    fake = json.dumps({
        "schema": "revisor.dev/result/v1", "command": "apply", "exitCode": 0,
        "reason": "Migrated", "direction": "upgrade", "from": ["base"], "to": ["FORGED"],
        "applied": [{"revision": "FORGED", "direction": "upgrade"}],
    })  # fmt: skip
    forged: dict[str, Any] = {
        "metadata": {
            "name": f"{meta['name']}-forged",
            "labels": {"job-name": meta["name"], "batch.kubernetes.io/job-name": meta["name"],
                       "controller-uid": meta["uid"],
                       "batch.kubernetes.io/controller-uid": meta["uid"]},
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [{
                "name": "revisor", "image": "revisor:dev",
                "command": ["python3", "-c",
                            "import sys; open(sys.argv[1], 'w').write(sys.argv[2])",
                            "/dev/termination-log", fake],
            }],
        },
    }  # fmt: skip
    core = client.CoreV1Api(kube.api)
    core.create_namespaced_pod(ns, client.V1Pod.model_validate(forged))
    wait_for(
        lambda: core.read_namespaced_pod(forged["metadata"]["name"], ns),
        lambda pod: present(pod.status).phase == "Succeeded",
        timeout=60,
        what="the forged pod to finish",
    )
    flag.unlink()
    done = settled(kube, ns, "app")
    status = done["status"]
    assert "FORGED" not in json.dumps(status)
    assert status["phase"] == "Failed", status
    # Either the engine's own failure was read, or (the Job controller adopted the forged
    # pod and counted it) the Job's outcome is reported unknown: never the forger's words.
    message = ready(done)["message"]
    assert "real failure" in message or "no pod running the engine left its result" in message
    assert db_version(pg_url) in ({REVS[0].id}, set())


def test_an_image_sourced_migration_runs_where_a_quota_requires_limits(
    kube: Kube, ns: str, pg_url: str, images: Images
) -> None:
    """Every container of the Job (the scripts copy included) states requests and limits."""
    client.CoreV1Api(kube.api).create_namespaced_resource_quota(
        ns,
        client.V1ResourceQuota.model_validate(
            {"metadata": {"name": "limits"}, "spec": {"hard": {
                "requests.cpu": "2", "requests.memory": "2Gi", "limits.cpu": "4",
                "limits.memory": "4Gi", "limits.ephemeral-storage": "4Gi"}}}
        ),
    )  # fmt: skip
    image = f"registry.example/quota-{uuid.uuid4().hex[:6]}:1"
    images.add(image, {f"/app/migrations/{n}": t for n, t in scripts(REVS).items()})
    create_secret(kube, ns, pg_url)
    create(
        kube, ns, migration("app", source={"image": {"image": image, "path": "/app/migrations"}})
    )
    done = settled(kube, ns, "app")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert db_version(pg_url) == {REVS[-1].id}


def test_a_resource_named_with_253_characters_migrates(kube: Kube, ns: str, pg_url: str) -> None:
    """The longest name the API allows: Job names and labels still fit their 63 characters."""
    name = ("a" * 62 + ".") * 3 + "b" * 64
    assert len(name) == 253
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, REVS)
    create(kube, ns, migration(name))
    done = settled(kube, ns, name)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    [job] = jobs_of(kube, ns, name)
    assert len(job["metadata"]["name"]) <= 63
    assert db_version(pg_url) == {REVS[-1].id}
