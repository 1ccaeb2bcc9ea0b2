"""An in-memory :class:`revisor_operator.adapters.kube.KubeAPI`, for handler and ``wait`` tests.

It keeps what a test asks about — DatabaseMigrations by namespace and name,
their Jobs and pods, ConfigMaps, every write — and answers the way the API
does where it matters: creating a Job whose name exists answers "already
exists" (``create_job`` returns False), a status write merges into the
resource's status, an apply creates the resource or bumps its generation
when the spec changed, and a write to a resource that does not exist is
:class:`NotFound`. ``unlisted`` Jobs exist on the "server" but are missing
from listings, as in a listing that raced a creation; ``failures`` makes a
method raise; ``operator`` (if set) runs after each apply or patch, playing
the operator.

It subclasses the protocol, so mypy checks it has every call with the real
client's signature.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from revisor_operator.adapters.kube import KubeAPI, NotFound
from revisor_operator.decisions.bodies import Job, JsonDict, Migration, Pod
from revisor_operator.decisions.jobs import MIGRATION_LABEL, label_value
from revisor_operator.decisions.references import ConfigMapCheck, SecretCheck
from revisor_operator.handlers import Runtime
from revisor_operator.settings import Settings

from .factories import DEFAULTS, NAMESPACE

CONFIG_MAP = "shop-migrations"  # factories.raw_spec's source
#: What ``check_config_map`` answers for it unless a test says otherwise.
SCRIPTS = ConfigMapCheck(CONFIG_MAP, True, "f" * 64)


class FakeKube(KubeAPI):
    def __init__(
        self,
        migration: Migration | None = None,
        *,
        jobs: Iterable[Job] = (),
        unlisted: Iterable[Job] = (),
        pods: Mapping[str, list[Pod]] | None = None,
        config_maps: Mapping[tuple[str, str], ConfigMapCheck] | None = None,
        failures: Mapping[str, Exception] | None = None,
    ) -> None:
        self.migrations: dict[tuple[str, str], Migration] = {}
        if migration is not None:
            meta = migration["metadata"]
            self.migrations[meta["namespace"], meta["name"]] = copy.deepcopy(migration)
        self.jobs: dict[str, Job] = {j["metadata"]["name"]: j for j in jobs}
        self.unlisted: dict[str, Job] = {j["metadata"]["name"]: j for j in unlisted}
        self.pods = dict(pods or {})
        self.config_maps = dict(
            config_maps if config_maps is not None else {(NAMESPACE, CONFIG_MAP): SCRIPTS}
        )
        self.failures = dict(failures or {})
        self.operator: Callable[[Migration], None] | None = None
        self.gets = 0
        #: ``apply_migration`` and ``patch_migration`` calls: (verb, namespace, name, body).
        self.writes: list[tuple[str, str, str, JsonDict]] = []
        self.status_writes: list[JsonDict] = []
        self.created: list[Job] = []
        self.adopted: list[str] = []
        #: Pod name -> its engine container's whole log; ``read_pod_log`` tails it.
        self.logs: dict[str, str] = {}
        #: ``read_pod_log`` calls: (pod, tail_lines, limit_bytes).
        self.log_reads: list[tuple[str, int, int]] = []

    def _maybe_fail(self, method: str) -> None:
        if method in self.failures:
            raise self.failures[method]

    def _stored(self, namespace: str, name: str) -> Migration:
        """The stored resource itself (not a copy), for a write to change; NotFound if absent."""
        try:
            return self.migrations[namespace, name]
        except KeyError:
            raise NotFound(f"{name} not found", status=404, reason="NotFound") from None

    def _written(self, key: tuple[str, str]) -> Migration:
        if self.operator is not None:
            self.operator(self.migrations[key])
        return copy.deepcopy(self.migrations[key])

    # -- DatabaseMigrations ----------------------------------------------------------

    def apply_migration(self, body: JsonDict, *, field_manager: str) -> Migration:
        self._maybe_fail("apply_migration")
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        self.writes.append(("apply", *key, copy.deepcopy(body)))
        current = self.migrations.get(key)
        if current is None:
            created: Any = copy.deepcopy(body)
            created["metadata"]["generation"] = 1
            self.migrations[key] = created
        elif current["spec"] != body["spec"]:
            current["spec"] = copy.deepcopy(body["spec"])
            current["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        return self._written(key)

    def patch_migration(self, *, namespace: str, name: str, patch: JsonDict) -> Migration:
        self._maybe_fail("patch_migration")
        self.writes.append(("patch", namespace, name, copy.deepcopy(patch)))
        current = self._stored(namespace, name)
        if "spec" in patch:
            current["spec"].update(patch["spec"])
            current["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        annotations = (patch.get("metadata") or {}).get("annotations") or {}
        current["metadata"].setdefault("annotations", {}).update(annotations)
        return self._written((namespace, name))

    def get_migration(self, *, namespace: str, name: str) -> Migration | None:
        self._maybe_fail("get_migration")
        self.gets += 1
        found = self.migrations.get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def patch_migration_status(
        self, *, namespace: str, name: str, status: JsonDict, resource_version: str | None
    ) -> Migration:
        self._maybe_fail("patch_migration_status")
        current = self._stored(namespace, name)
        self.status_writes.append(copy.deepcopy(status))
        current["status"] = {**(current.get("status") or {}), **status}
        return copy.deepcopy(current)

    # -- Jobs and pods ---------------------------------------------------------------

    def list_jobs(self, *, namespace: str, migration: str) -> list[Job]:
        self._maybe_fail("list_jobs")
        return [
            copy.deepcopy(j)
            for j in self.jobs.values()
            if j["metadata"].get("labels", {}).get(MIGRATION_LABEL) == label_value(migration)
        ]

    def list_pods(self, *, namespace: str, job: Job) -> list[Pod]:
        self._maybe_fail("list_pods")
        return list(self.pods.get(job.get("metadata", {}).get("name", ""), []))

    def read_pod_log(
        self, *, namespace: str, pod: str, container: str, tail_lines: int, limit_bytes: int
    ) -> str:
        """As the kubelet answers: the last ``tail_lines`` lines, then the first ``limit_bytes``."""
        self._maybe_fail("read_pod_log")
        self.log_reads.append((pod, tail_lines, limit_bytes))
        if pod not in self.logs:
            raise NotFound(f"pod {pod} not found", status=404, reason="NotFound")
        lines = self.logs[pod].splitlines(keepends=True)[-tail_lines:]
        return "".join(lines).encode()[:limit_bytes].decode(errors="replace")

    def create_job(self, job: Job) -> bool:
        self._maybe_fail("create_job")
        name = job["metadata"]["name"]
        if name in self.jobs or name in self.unlisted:
            self.adopted.append(name)
            return False
        self.jobs[name] = copy.deepcopy(job)
        self.created.append(job)
        return True

    # -- the application's rollout ---------------------------------------------------

    def get_deployment(self, *, namespace: str, name: str) -> JsonDict | None:
        self._maybe_fail("get_deployment")
        return None

    # -- references ------------------------------------------------------------------

    def check_secret(self, *, namespace: str, name: str) -> SecretCheck:
        self._maybe_fail("check_secret")
        return SecretCheck(name=name, exists=True, keys=frozenset({"url"}))

    def check_config_map(self, *, namespace: str, name: str) -> ConfigMapCheck:
        self._maybe_fail("check_config_map")
        return self.config_maps.get((namespace, name), ConfigMapCheck(name, False))


def runtime(kube: FakeKube) -> Runtime:
    settings = Settings(runner_image=DEFAULTS.runner_image, metrics_port=0, liveness=None)
    return Runtime(settings=settings, kube=kube)


def memo(kube: FakeKube) -> dict[str, Any]:
    """What kopf's ``memo`` holds for the handlers."""
    return {"runtime": runtime(kube)}
