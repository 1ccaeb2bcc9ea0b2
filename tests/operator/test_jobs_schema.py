"""spec.schema reaches the engine: every Job of a tenant's migration runs ``--schema``."""

from __future__ import annotations

from typing import Any

from revisor_operator.decisions.drift import check_request
from revisor_operator.decisions.jobs import Owner, build_job, engine_request
from revisor_operator.decisions.spec import parse_spec

from .factories import DEFAULTS, NAME, NAMESPACE, UID, raw_spec


def command(spec: dict[str, Any]) -> list[str]:
    job = build_job(
        owner=Owner(name=NAME, namespace=NAMESPACE, uid=UID, generation=1),
        spec=parse_spec(spec),
        name="shop-g1-abcdef",
        fingerprint="f" * 64,
        defaults=DEFAULTS,
    )
    argv: list[str] = job["spec"]["template"]["spec"]["containers"][0]["command"]
    return argv


def test_a_tenants_job_runs_in_its_schema() -> None:
    argv = command(raw_spec(schema="tenant_a"))
    assert "--schema=tenant_a" in argv
    assert argv.index("--schema=tenant_a") < argv.index("apply")  # a global option


def test_a_schema_that_reads_as_an_option_stays_its_value() -> None:
    assert "--schema=-odd Tenant" in command(raw_spec(schema="-odd Tenant"))


def test_the_version_table_schema_is_said_once() -> None:
    """spec.versionTable.schema may repeat spec.schema; the engine is given --schema only."""
    argv = command(raw_spec(schema="tenant_a", versionTable={"name": "v", "schema": "tenant_a"}))
    assert "--schema=tenant_a" in argv
    assert "--version-table-schema" not in argv
    assert argv[argv.index("--version-table") + 1] == "v"


def test_plans_and_drift_checks_run_in_the_schema_too() -> None:
    plan = engine_request(parse_spec(raw_spec(schema="tenant_a", mode="Plan")))
    assert plan.command == "plan" and plan.schema == "tenant_a"
    drift = check_request(parse_spec(raw_spec(schema="tenant_a")))
    assert drift.command == "drift" and "--schema=tenant_a" in drift.to_argv()


def test_without_a_schema_there_is_no_flag() -> None:
    assert not [arg for arg in command(raw_spec()) if arg.startswith("--schema")]
