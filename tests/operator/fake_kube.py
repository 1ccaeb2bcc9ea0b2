"""An in-memory stand-in for :class:`revisor_operator.adapters.kube.Kube`, for handler tests.

It keeps what a handler test asks about — the resource, its Jobs, the status
writes — and answers the way the API does where it matters: creating a Job
whose name exists answers "already exists" (``create_job`` returns False),
and a status write merges into the resource's status. ``unlisted`` Jobs exist
on the "server" but are missing from listings, as in a listing that raced
a creation; ``failures`` makes a method raise.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any, cast

from revisor_operator.adapters.kube import Kube
from revisor_operator.decisions.bodies import Job, JsonDict, Migration, Pod
from revisor_operator.decisions.jobs import MIGRATION_LABEL
from revisor_operator.decisions.references import ConfigMapCheck, SecretCheck
from revisor_operator.handlers import Runtime
from revisor_operator.settings import Settings

from .factories import DEFAULTS


class FakeKube:
    def __init__(
        self,
        migration: Migration | None = None,
        *,
        jobs: Iterable[Job] = (),
        unlisted: Iterable[Job] = (),
        pods: Mapping[str, list[Pod]] | None = None,
        failures: Mapping[str, Exception] | None = None,
    ) -> None:
        self.migration = copy.deepcopy(migration)
        self.jobs: dict[str, Job] = {j["metadata"]["name"]: j for j in jobs}
        self.unlisted: dict[str, Job] = {j["metadata"]["name"]: j for j in unlisted}
        self.pods = dict(pods or {})
        self.failures = dict(failures or {})
        self.created: list[Job] = []
        self.adopted: list[str] = []
        self.status_writes: list[JsonDict] = []

    def _maybe_fail(self, method: str) -> None:
        if method in self.failures:
            raise self.failures[method]

    def get_migration(self, *, namespace: str, name: str) -> Migration | None:
        self._maybe_fail("get_migration")
        return copy.deepcopy(self.migration)

    def list_jobs(self, *, namespace: str, migration: str) -> list[Job]:
        self._maybe_fail("list_jobs")
        return [
            copy.deepcopy(j)
            for j in self.jobs.values()
            if j["metadata"].get("labels", {}).get(MIGRATION_LABEL) == migration
        ]

    def list_pods(self, *, namespace: str, job: str) -> list[Pod]:
        return list(self.pods.get(job, []))

    def create_job(self, job: Job) -> bool:
        self._maybe_fail("create_job")
        name = job["metadata"]["name"]
        if name in self.jobs or name in self.unlisted:
            self.adopted.append(name)
            return False
        self.jobs[name] = copy.deepcopy(job)
        self.created.append(job)
        return True

    def patch_migration_status(
        self, *, namespace: str, name: str, status: JsonDict, resource_version: str | None
    ) -> Migration:
        self._maybe_fail("patch_migration_status")
        assert self.migration is not None
        self.status_writes.append(copy.deepcopy(status))
        merged = {**(self.migration.get("status") or {}), **status}
        self.migration["status"] = merged
        return copy.deepcopy(self.migration)

    def check_secret(self, *, namespace: str, name: str) -> SecretCheck:
        return SecretCheck(name=name, exists=True, keys=frozenset({"url"}))

    def check_config_map(self, *, namespace: str, name: str) -> ConfigMapCheck:
        return ConfigMapCheck(name=name, exists=True, fingerprint="c" * 64)

    def get_deployment(self, *, namespace: str, name: str) -> JsonDict | None:
        return None


def runtime(kube: FakeKube) -> Runtime:
    settings = Settings(runner_image=DEFAULTS.runner_image, metrics_port=0, liveness=None)
    return Runtime(settings=settings, kube=cast(Kube, kube))


def memo(kube: FakeKube) -> dict[str, Any]:
    """What kopf's ``memo`` holds for the handlers."""
    return {"runtime": runtime(kube)}
