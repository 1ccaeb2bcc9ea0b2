"""`revisor-operator wait dbmset/NAME` against a fake API: the whole rollout, or why not."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from revisor_operator import wait_cli
from revisor_operator.adapters.kube import FleetAPI
from revisor_operator.decisions.bodies import Job, JsonDict, Pod
from revisor_operator.decisions.helm_releases import RELEASES_ANNOTATION
from revisor_operator.decisions.references import ConfigMapCheck

from .fleet_factories import NAMESPACE, SCRIPTS, SET, raw_set_spec, rollout_of, set_body
from .test_wait_cli import Clock

LIVE = ConfigMapCheck("shop-migrations", True, SCRIPTS.split("\0", 1)[1])


class FakeFleet(FleetAPI):
    """Sets by name; ``operator`` (if set) plays the operator after each write."""

    def __init__(self, body: JsonDict | None = None) -> None:
        self.sets: dict[str, JsonDict] = {}
        if body is not None:
            self.sets[body["metadata"]["name"]] = copy.deepcopy(body)
        self.operator: Callable[[JsonDict], None] | None = None
        self.patches: list[JsonDict] = []

    def _played(self, name: str) -> JsonDict:
        if self.operator is not None:
            self.operator(self.sets[name])
        return copy.deepcopy(self.sets[name])

    def get_set(self, *, namespace: str, name: str) -> JsonDict | None:
        found = self.sets.get(name)
        return copy.deepcopy(found) if found is not None else None

    def apply_set(self, body: JsonDict, *, field_manager: str) -> JsonDict:
        name = body["metadata"]["name"]
        current = self.sets.get(name)
        if current is None:
            self.sets[name] = {
                **copy.deepcopy(body),
                "metadata": {**body["metadata"], "generation": 1},
            }
        elif current["spec"] != body["spec"]:
            current["spec"] = copy.deepcopy(body["spec"])
            current["metadata"]["generation"] += 1
        return self._played(name)

    def patch_set(self, *, namespace: str, name: str, patch: JsonDict) -> JsonDict:
        self.patches.append(copy.deepcopy(patch))
        current = self.sets[name]
        template = (patch.get("spec") or {}).get("template")
        if template:
            current["spec"]["template"].update(template)
            current["metadata"]["generation"] += 1
        annotations = (patch.get("metadata") or {}).get("annotations") or {}
        current["metadata"].setdefault("annotations", {}).update(annotations)
        return self._played(name)

    def patch_set_status(
        self, *, namespace: str, name: str, status: JsonDict, resource_version: str | None
    ) -> JsonDict:
        raise NotImplementedError

    def ensure_child(self, body: JsonDict, *, owner_uid: str, field_manager: str) -> str:
        raise NotImplementedError

    def delete_migration(self, *, namespace: str, name: str) -> bool:
        raise NotImplementedError

    def secret_names(self, *, namespace: str, selector: str) -> list[str]:
        raise NotImplementedError

    def list_set_jobs(self, *, namespace: str, set_label: str) -> list[Job]:
        raise NotImplementedError

    def delete_job(self, *, namespace: str, name: str) -> bool:
        raise NotImplementedError

    def list_pods(self, *, namespace: str, job: Job) -> list[Pod]:
        raise NotImplementedError

    def create_job(self, job: Job) -> bool:
        raise NotImplementedError

    def check_config_map(self, *, namespace: str, name: str) -> ConfigMapCheck:
        return LIVE

    def post_event(
        self, *, involved: JsonDict, type: str, reason: str, message: str, component: str
    ) -> None:
        raise NotImplementedError


def rolls_out(
    phase: str = "Succeeded", *, message: str = "all Ready"
) -> Callable[[JsonDict], None]:
    """An operator that at once brings the set's current rollout to ``phase``."""

    def operator(body: JsonDict) -> None:
        generation = body["metadata"]["generation"]
        body["status"] = {
            "observedGeneration": generation,
            "phase": phase,
            "rollout": {"hash": rollout_of(body), "generation": 1},
            "currentRevision": "3c9a1f0b2e44",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if phase == "Succeeded" else "False",
                    "reason": "RolloutComplete",
                    "message": message,
                }
            ],
        }

    return operator


def wait(kube: FakeFleet, **options: Any) -> tuple[int, list[str]]:
    said: list[str] = []
    clock = Clock()
    options.setdefault("timeout", 5.0)
    code = wait_cli.run_set(
        kube,
        namespace=NAMESPACE,
        name=SET,
        say=said.append,
        clock=clock,
        sleep=clock.sleep,
        **options,
    )
    return code, said


def manifest(tmp_path: Path, **spec: Any) -> Path:
    body = set_body(raw_set_spec(**spec))
    del body["metadata"]["uid"], body["metadata"]["resourceVersion"], body["metadata"]["generation"]
    path = tmp_path / "set.json"
    path.write_text(json.dumps(body))
    return path


def test_apply_then_ready_once_every_target_is(tmp_path: Path) -> None:
    kube = FakeFleet()
    kube.operator = rolls_out()
    code, said = wait(kube, apply=manifest(tmp_path), record=4)
    assert code == wait_cli.EXIT_READY
    assert said[0].startswith(f"databasemigrationset/{SET}: applied set.json (generation 1")
    assert any("all Ready" in line for line in said)
    recorded = json.loads(kube.sets[SET]["metadata"]["annotations"][RELEASES_ANNOTATION])
    assert recorded == {"4": "3c9a1f0b2e44"}


def test_a_halted_rollout_fails_at_once_with_its_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kube = FakeFleet()
    kube.operator = rolls_out("Halted", message="Halted at wave 1/2 (canary): target 'acme' failed")
    code, _ = wait(kube, apply=manifest(tmp_path))
    assert code == wait_cli.EXIT_FAILED
    assert "target 'acme' failed" in capsys.readouterr().err


def test_a_rollout_of_older_scripts_is_not_ready(capsys: pytest.CaptureFixture[str]) -> None:
    body = set_body()
    rolls_out()(body)
    body["status"]["rollout"]["hash"] = "an-older-rollout"
    code, said = wait(FakeFleet(body))
    assert code == wait_cli.EXIT_TIMEOUT
    assert "has not started" in said[0]


def test_rollback_to_a_release_sets_the_template_target(tmp_path: Path) -> None:
    body = set_body(annotations={RELEASES_ANNOTATION: json.dumps({"3": "9d2e7a11c0f3"})})
    kube = FakeFleet(body)
    kube.operator = rolls_out()
    code, said = wait(kube, rollback_to=3)
    assert code == wait_cli.EXIT_READY
    assert kube.sets[SET]["spec"]["template"]["target"] == "9d2e7a11c0f3"
    assert "template target set to 9d2e7a11c0f3" in said[0]
    code, _ = wait(FakeFleet(set_body()), rollback_to=7)
    assert code == wait_cli.EXIT_FAILED


def test_the_kind_is_read_from_the_resource_argument(capsys: pytest.CaptureFixture[str]) -> None:
    assert wait_cli._resource("dbmset/shop") == ("DatabaseMigrationSet", "shop")
    assert wait_cli._resource("databasemigrationset.revisor.dev/shop")[0] == "DatabaseMigrationSet"
    assert wait_cli._resource("dbm/shop") == ("DatabaseMigration", "shop")
    assert wait_cli._resource("shop") == ("DatabaseMigration", "shop")
    code = wait_cli.main(["deployment/shop", "--kubeconfig", "/nonexistent"])
    assert code == wait_cli.EXIT_TIMEOUT
    assert "only dbm/NAME (DatabaseMigration) or dbmset/NAME" in capsys.readouterr().err
