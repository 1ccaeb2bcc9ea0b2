"""A user applies a DatabaseMigration: what is accepted, and what each mistake says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from revisor.contract import parse_duration
from revisor_operator.decisions.spec import (
    ConfigMapSource,
    ImageSource,
    InvalidSpec,
    PartsDatabase,
    UrlDatabase,
    is_valid_target,
    parse_spec,
)

from .factories import raw_spec

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "manifests" / "crd" / "revisor.dev_databasemigrations.yaml"
HOOK_VALUES = REPO / "charts" / "revisor-migration" / "values.yaml"


def problems(spec: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidSpec) as caught:
        parse_spec(spec)
    return {p.field: p.text for p in caught.value.problems}


def test_minimal_spec_gets_the_documented_defaults() -> None:
    """Only database and source are required; the rest defaults as the CRD says."""
    spec = parse_spec(raw_spec())
    assert spec.database == UrlDatabase(url=spec.database.url)  # type: ignore[union-attr]
    assert isinstance(spec.source, ConfigMapSource)
    assert spec.target == "head"
    assert spec.mode == "Apply"
    assert spec.on_failure == "rollback"
    assert spec.lock_timeout_seconds == 60
    assert spec.job_deadline_seconds == 1800
    assert spec.runner.backoff_limit == 3
    assert not spec.plans_only


def test_full_spec_is_read_into_data() -> None:
    """Every documented field lands in the dataclasses, durations in seconds."""
    spec = parse_spec(
        raw_spec(
            database={
                "secretRef": {"name": "pg-app", "passwordKey": "pw"},
                "driver": "postgresql+psycopg",
            },
            source={"image": {"image": "registry/shop:1.4.2", "path": "/app/migrations"}},
            target="ae1027a6acf@+2",
            mode="DryRun",
            onFailure="Stop",
            lock={"timeoutSeconds": 5},
            timeouts={"statement": "10m", "ddlLock": "5s", "job": "1h30m"},
            runner={
                "image": "r:1",
                "backoffLimit": 2,
                "serviceAccountName": "migrator",
                "nodeSelector": {"pool": "batch"},
                "resources": {"limits": {"memory": "256Mi"}},
            },
            versionTable={"name": "alembic_version", "schema": "public"},
            rollback={"deploymentRef": {"name": "shop-web"}, "window": "15m"},
        )
    )
    assert isinstance(spec.database, PartsDatabase)
    assert spec.database.keys == {
        "host": "host",
        "port": "port",
        "name": "database",
        "user": "user",
        "password": "pw",
    }
    assert spec.source == ImageSource(
        image="registry/shop:1.4.2", path="/app/migrations", pull_policy="IfNotPresent"
    )
    assert spec.on_failure == "stop"
    assert spec.timeouts.statement_seconds == 600
    assert spec.timeouts.ddl_lock_seconds == 5
    assert spec.job_deadline_seconds == 5400
    assert spec.runner.service_account == "migrator"
    assert spec.rollback.deployment == "shop-web"
    assert spec.rollback.window_seconds == 900


def test_rollback_window_defaults_to_ten_minutes_as_the_crd_says() -> None:
    """A deploymentRef without a window: 10 minutes, the CRD's default for the field.

    The API server fills the CRD default in before the operator sees the object; the
    operator's own default covers an object stored before the field had one, and must
    be the same number.
    """
    spec = parse_spec(raw_spec(rollback={"deploymentRef": {"name": "shop-web"}}))
    assert spec.rollback.deployment == "shop-web"
    assert spec.rollback.window_seconds == 600
    crd = yaml.safe_load(CRD.read_text())
    rollback = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]["rollback"]
    window = rollback["properties"]["window"]
    assert window["default"] == "10m"
    assert parse_duration(window["default"]) == spec.rollback.window_seconds
    assert "Default 10m" in window["description"]
    # The hook chart passes its own value through: the same default.
    hook_values = yaml.safe_load(HOOK_VALUES.read_text())
    assert parse_duration(hook_values["rollback"]["window"]) == 600


@pytest.mark.parametrize(
    "target",
    [
        "head",
        "heads",
        "base",
        "3c9a1f0b2e44",
        "3c9a",
        "+1",
        "-2",
        "feature@head",
        "feature@+1",
        "ae1027a6acf@+2",
        "ae10+2",
        "0001_custom_id",
        "mybranch@base",
    ],
)
def test_alembic_target_syntax_is_accepted(target: str) -> None:
    """Everything Alembic accepts as a target passes validation."""
    assert is_valid_target(target)
    assert parse_spec(raw_spec(target=target)).target == target


@pytest.mark.parametrize("target", ["", "head+", "@head", "hea d", "+x", "a@b@c", "../etc", "-"])
def test_malformed_target_is_invalid_target_with_the_syntax_in_the_message(target: str) -> None:
    """A malformed target gets reason InvalidTarget and a message listing what is allowed."""
    with pytest.raises(InvalidSpec) as caught:
        parse_spec(raw_spec(target=target))
    assert caught.value.reason == "InvalidTarget"
    text = str(caught.value)
    assert text.startswith("spec.target:")
    assert "branch@head" in text and "+N" in text


def test_both_sources_is_one_clear_problem() -> None:
    """configMap and image together: the message names both and says to pick one."""
    found = problems(raw_spec(source={"configMap": {"name": "a"}, "image": {"image": "b"}}))
    assert found == {
        "spec.source": "spec.source: needs exactly one of configMap or image. Set exactly one of "
        "spec.source.configMap {name} or spec.source.image {image, path}."
    }


def test_no_source_is_a_problem() -> None:
    """Neither source: the same message."""
    assert "exactly one of configMap or image" in problems(raw_spec(source={}))["spec.source"]


def test_both_database_references_is_a_problem() -> None:
    """urlSecretRef and secretRef together are ambiguous."""
    found = problems(raw_spec(database={"urlSecretRef": {"name": "a"}, "secretRef": {"name": "b"}}))
    assert "exactly one of urlSecretRef or secretRef" in found["spec.database"]


def test_missing_database_is_a_problem() -> None:
    found = problems({"source": {"configMap": {"name": "a"}}})
    assert found["spec.database"].startswith("spec.database: is required.")


def test_bad_secret_name_says_what_a_name_may_contain() -> None:
    found = problems(raw_spec(database={"urlSecretRef": {"name": "Shop_DB"}}))
    assert found["spec.database.urlSecretRef.name"] == (
        "spec.database.urlSecretRef.name: 'Shop_DB' is not a valid Secret name. Use lower-case "
        "letters, digits, '-' and '.', starting and ending alphanumeric."
    )


def test_bad_duration_shows_the_accepted_form() -> None:
    found = problems(raw_spec(timeouts={"statement": "10 minutes"}))
    assert found["spec.timeouts.statement"] == (
        "spec.timeouts.statement: '10 minutes' is not a duration. "
        "Write a number with a unit: 500ms, 30s, 10m, 1h30m."
    )


def test_unknown_mode_lists_the_modes() -> None:
    found = problems(raw_spec(mode="Yolo"))
    assert (
        found["spec.mode"]
        == "spec.mode: 'Yolo' is not one of Apply, Plan, DryRun. Pick one of those."
    )


def test_negative_lock_timeout_is_a_problem() -> None:
    found = problems(raw_spec(lock={"timeoutSeconds": -1}))
    assert "must be at least 0" in found["spec.lock.timeoutSeconds"]


def test_relative_image_path_is_a_problem() -> None:
    found = problems(raw_spec(source={"image": {"image": "x", "path": "migrations"}}))
    assert "is not an absolute path" in found["spec.source.image.path"]


def test_malformed_plan_hash_says_to_copy_status_plan_hash() -> None:
    found = problems(raw_spec(approval={"required": True, "planHash": "XYZ"}))
    assert "Copy status.plan.hash" in found["spec.approval.planHash"]


def test_version_table_must_be_a_plain_identifier() -> None:
    found = problems(raw_spec(versionTable={"name": "alembic version; drop"}))
    assert "plain SQL identifier" in found["spec.versionTable.name"]


def test_every_problem_is_reported_at_once() -> None:
    """Several mistakes: all of them, so the user fixes them in one go; reason InvalidSpec."""
    with pytest.raises(InvalidSpec) as caught:
        parse_spec(raw_spec(target="@", mode="Nope", timeouts={"job": "soon"}))
    assert {p.field for p in caught.value.problems} == {
        "spec.target",
        "spec.mode",
        "spec.timeouts.job",
    }
    assert caught.value.reason == "InvalidSpec"


def test_approval_required_without_hash_plans_only() -> None:
    """Approval required and no hash yet: the run is a plan; with a hash, an apply."""
    assert parse_spec(raw_spec(approval={"required": True})).plans_only
    assert not parse_spec(raw_spec(approval={"required": True, "planHash": "ab" * 16})).plans_only
    assert parse_spec(raw_spec(mode="Plan")).plans_only


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("90s", 90), ("10m", 600), ("1h30m", 5400), ("1.5h", 5400)],
)
def test_durations_read_like_kubernetes_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
