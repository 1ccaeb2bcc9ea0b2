"""The CRD is the manual and agrees with the operator's own validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from revisor_operator import GROUP, KIND, PLURAL, VERSION
from revisor_operator.decisions.spec import (
    DEFAULT_BACKOFF_LIMIT,
    DURATION_PATTERN,
    MAX_BACKOFF_LIMIT,
    MAX_DDL_LOCK_RETRIES,
    MAX_JOB_SECONDS,
    METADATA_PATTERN,
    TARGET_PATTERN,
)

CRD = Path(__file__).parents[2] / "manifests" / "crd" / "revisor.dev_databasemigrations.yaml"


def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(CRD.read_text())
    return data


def schema() -> dict[str, Any]:
    version = load()["spec"]["versions"][0]
    result: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return result


def walk(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for key, child in (node.get("properties") or {}).items():
        out.append((f"{path}.{key}", child))
        out += walk(child, f"{path}.{key}")
        if "items" in child:
            out += walk(child["items"], f"{path}.{key}[]")
    return out


def test_crd_names_match_the_operator() -> None:
    crd = load()
    assert crd["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    assert crd["spec"]["names"]["kind"] == KIND
    assert crd["spec"]["names"]["shortNames"] == ["dbm"]
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["versions"][0]["name"] == VERSION
    assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_every_field_is_documented_for_kubectl_explain() -> None:
    undocumented = [
        p for p, node in walk(schema(), "") if p != ".metadata" and not node.get("description")
    ]
    assert undocumented == []


def test_printer_columns_are_the_documented_ones() -> None:
    columns = [c["name"] for c in load()["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Target", "Current", "Ready", "Phase", "Age", "Message"]


def test_target_rule_is_the_operators_pattern() -> None:
    """The CEL rule and spec.TARGET_PATTERN are the same expression (no drift)."""
    target = schema()["properties"]["spec"]["properties"]["target"]
    (rule,) = target["x-kubernetes-validations"]
    assert rule["rule"] == f"self.matches('{TARGET_PATTERN}')"
    assert target["default"] == "head"


def test_durations_use_the_operators_pattern() -> None:
    timeouts = schema()["properties"]["spec"]["properties"]["timeouts"]["properties"]
    durations = {name: t for name, t in timeouts.items() if t["type"] == "string"}
    assert set(durations) == {"statement", "ddlLock", "job"}
    assert {t["pattern"] for t in durations.values()} == {DURATION_PATTERN}


def test_bounds_of_the_crd_are_the_parsers() -> None:
    """The CRD refuses what the operator would refuse: retries and deadlines are bounded."""
    spec = schema()["properties"]["spec"]["properties"]
    runner = spec["runner"]["properties"]
    assert runner["backoffLimit"]["maximum"] == MAX_BACKOFF_LIMIT
    assert runner["backoffLimit"]["default"] == DEFAULT_BACKOFF_LIMIT
    assert runner["activeDeadlineSeconds"]["maximum"] == MAX_JOB_SECONDS
    assert spec["timeouts"]["properties"]["ddlLockRetries"]["maximum"] == MAX_DDL_LOCK_RETRIES
    assert spec["metadata"]["pattern"] == METADATA_PATTERN


def test_exactly_one_source_and_one_database_are_enforced_by_cel() -> None:
    spec = schema()["properties"]["spec"]["properties"]
    assert (
        spec["source"]["x-kubernetes-validations"][0]["rule"]
        == "has(self.configMap) != has(self.image)"
    )
    assert (
        spec["database"]["x-kubernetes-validations"][0]["rule"]
        == "has(self.urlSecretRef) != has(self.secretRef)"
    )


def test_defaults_match_the_operators_defaults() -> None:
    spec = schema()["properties"]["spec"]["properties"]
    assert spec["mode"]["default"] == "Apply"
    assert spec["onFailure"]["default"] == "Rollback"
    assert spec["lock"]["properties"]["timeoutSeconds"]["default"] == 60


def test_status_holds_every_field_the_operator_writes() -> None:
    """A structural schema prunes unknown status fields: each written field must be declared."""
    status = schema()["properties"]["status"]["properties"]
    written = {
        "phase",
        "observedGeneration",
        "conditions",
        "lastRun",
        "history",
        "plan",
        "currentRevision",
        "targetRevision",
        "previousRevision",
    }
    assert written <= set(status)
    last_run = set(status["lastRun"]["properties"])
    assert {
        "job",
        "command",
        "generation",
        "phase",
        "reason",
        "message",
        "direction",
        "from",
        "to",
        "applied",
        "exitCode",
        "startedAt",
        "finishedAt",
        "dryRun",
        "error",
    } <= last_run


SCHEMA_KEYS = {
    "type",
    "description",
    "properties",
    "items",
    "required",
    "default",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "maxLength",
    "minLength",
    "maxItems",
    "format",
    "additionalProperties",
    "x-kubernetes-validations",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
}


def test_schema_has_no_stray_keys() -> None:
    """A comma in a flow-style description once split it into bogus keys: never again."""
    stray = [
        (p, sorted(set(node) - SCHEMA_KEYS))
        for p, node in walk(schema(), "")
        if set(node) - SCHEMA_KEYS
    ]
    assert stray == []
