"""The DatabaseMigrationSet CRD is a manual, and its template is DatabaseMigration's spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from revisor_operator import GROUP, SET_KIND, SET_PLURAL, VERSION
from revisor_operator.decisions.fleet.spec import (
    DEFAULT_FAILED_JOBS_KEPT,
    DEFAULT_MAX_PARALLEL,
    DEFAULT_SUCCESSFUL_JOBS_KEPT,
    MAX_DATABASES,
    MAX_JOBS_KEPT,
    MAX_PARALLEL,
    MAX_QUERY_BYTES,
    MAX_SCHEMA_NAMES,
    MAX_WAVES,
)
from revisor_operator.decisions.spec import DURATION_PATTERN

from .fleet_factories import child, decide, failed, raw_set_spec, set_body
from .test_crd import walk

CRDS = Path(__file__).parents[2] / "manifests" / "crd"


def load(plural: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CRDS / f"revisor.dev_{plural}.yaml").read_text())
    return data


def schema(plural: str = SET_PLURAL) -> dict[str, Any]:
    result: dict[str, Any] = load(plural)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return result


def test_names_match_the_operator() -> None:
    crd = load(SET_PLURAL)
    assert crd["metadata"]["name"] == f"{SET_PLURAL}.{GROUP}"
    assert crd["spec"]["names"]["kind"] == SET_KIND
    assert crd["spec"]["names"]["shortNames"] == ["dbmset"]
    assert crd["spec"]["versions"][0]["name"] == VERSION
    assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_every_field_is_documented_for_kubectl_explain() -> None:
    fields = walk(schema(), "")
    assert len(fields) > 100
    undocumented = [p for p, node in fields if p != ".metadata" and not node.get("description")]
    assert undocumented == []


def test_printer_columns_show_how_far_the_rollout_is() -> None:
    columns = {
        c["name"]: c["jsonPath"]
        for c in load(SET_PLURAL)["spec"]["versions"][0]["additionalPrinterColumns"]
    }
    assert list(columns) == ["Target", "Ready", "Failed", "Wave", "Phase", "Age"]
    assert columns["Ready"] == ".status.readyTargets"
    assert columns["Failed"] == ".status.counts.failed"
    assert columns["Wave"] == ".status.wave.text"


def test_the_template_is_a_database_migrations_spec_without_database_and_schema() -> None:
    template = schema()["properties"]["spec"]["properties"]["template"]["properties"]
    migration = dict(schema("databasemigrations")["properties"]["spec"]["properties"])
    del migration["database"], migration["schema"]
    assert template == migration


def test_bounds_and_defaults_are_the_parsers() -> None:
    spec = schema()["properties"]["spec"]["properties"]
    assert spec["maxParallel"]["maximum"] == MAX_PARALLEL
    assert spec["maxParallel"]["default"] == DEFAULT_MAX_PARALLEL
    assert spec["waves"]["maxItems"] == MAX_WAVES
    assert spec["waves"]["items"]["properties"]["maxParallel"]["maximum"] == MAX_PARALLEL
    assert spec["failurePolicy"]["default"] == "Halt"
    assert spec["successfulJobsHistoryLimit"]["default"] == DEFAULT_SUCCESSFUL_JOBS_KEPT
    assert spec["failedJobsHistoryLimit"]["default"] == DEFAULT_FAILED_JOBS_KEPT
    assert spec["failedJobsHistoryLimit"]["maximum"] == MAX_JOBS_KEPT
    targets = spec["targets"]["properties"]
    assert targets["databases"]["maxItems"] == MAX_DATABASES
    schemas = targets["schemas"]["properties"]
    assert schemas["names"]["maxItems"] == MAX_SCHEMA_NAMES
    assert schemas["query"]["maxLength"] == MAX_QUERY_BYTES
    assert schemas["queryInterval"]["pattern"] == DURATION_PATTERN


def test_status_holds_every_field_the_operator_writes() -> None:
    """A structural schema prunes unknown status fields: each written one must be declared."""
    declared = schema()["properties"]["status"]["properties"]
    body = set_body(raw_set_spec(maxParallel=2))
    decision = decide(body, secrets=["a", "b", "c"], children=[failed(body, "a"), child(body, "b")])
    written = dict(decision.status or {})
    assert set(written) <= set(declared), set(written) - set(declared)
    for field in ("rollout", "counts", "wave"):
        assert set(written[field]) <= set(declared[field]["properties"]), field
    assert set(written["failedTargets"][0]) <= set(declared["failedTargets"]["items"]["properties"])
    assert set(written["waves"][0]) <= set(declared["waves"]["items"]["properties"])
    assert {"schemas", "schemaQuery"} <= set(declared)
