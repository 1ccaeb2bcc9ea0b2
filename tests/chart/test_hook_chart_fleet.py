"""The hook chart in fleet mode: a DatabaseMigrationSet applied and its whole rollout awaited."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.render import only, rule_set
from tests.chart.test_hook_chart_render import (
    NAMESPACE,
    WAIT_RULES,
    AppChart,
    app,  # noqa: F401 - the module fixture
    container,
    desired_migration,
)

FLEET: dict[str, Any] = {
    "fleet": {
        "enabled": True,
        "targets": {"secretSelector": {"matchLabels": {"app": "shop", "tenant": "true"}}},
        "waves": [
            {"name": "canary", "targets": ["acme"], "maxParallel": 1},
            {"name": "early", "selector": {"matchLabels": {"tier": "early"}}, "maxParallel": 10},
            {"name": "rest", "maxParallel": 25},
        ],
        "failurePolicy": "Continue",
        "maxFailures": 3,
    },
    "timeouts": {"ddlLock": "5s"},
}


def test_fleet_mode_applies_a_set_whose_template_is_the_migration_spec(app: AppChart) -> None:  # noqa: F811
    objects = app.template(FLEET)
    body = desired_migration(objects)
    assert body["kind"] == "DatabaseMigrationSet"
    spec = body["spec"]
    assert "database" not in spec["template"]
    assert spec["template"]["source"] == {"configMap": {"name": "shop-migrations"}}
    assert spec["template"]["timeouts"] == {"ddlLock": "5s"}
    assert spec["targets"] == FLEET["fleet"]["targets"]
    assert [w["name"] for w in spec["waves"]] == ["canary", "early", "rest"]
    assert (spec["failurePolicy"], spec["maxFailures"], spec["maxParallel"]) == ("Continue", 3, 1)
    assert body["metadata"]["annotations"] == {"revisor.dev/release": "1"}


def test_fleet_mode_hooks_wait_for_the_set(app: AppChart) -> None:  # noqa: F811
    objects = app.template(FLEET)
    migrate = container(only(objects, "Job", "shop-revisor-migrate"))
    assert migrate["command"][:3] == ["revisor-operator", "wait", "dbmset/shop"]
    assert migrate["command"][-4:] == [
        "--apply",
        "/etc/revisor/desired/databasemigration.json",
        "--record-release",
        "1",
    ]
    rollback = container(only(objects, "Job", "shop-revisor-rollback"))
    assert rollback["command"][:3] == ["revisor-operator", "wait", "dbmset/shop"]
    role = only(objects, "Role")
    fleet_rules = {
        (group, "databasemigrationsets" if r == "databasemigrations" else r, verb)
        for group, r, verb in WAIT_RULES
    }
    assert rule_set(role["rules"]) == fleet_rules
    assert only(objects, "RoleBinding")["subjects"][0]["namespace"] == NAMESPACE


def test_fleet_mode_without_targets_is_refused(app: AppChart) -> None:  # noqa: F811
    refused = app.refusal_or_render({"fleet": {"enabled": True}})
    assert refused.returncode != 0
    assert "fleet mode needs fleet.targets" in refused.stderr


@pytest.mark.parametrize(
    ("fleet", "path"),
    [
        ({"enabled": True, "targets": {"everything": {}}}, "fleet.targets"),
        ({"enabled": True, "maxParallel": 0}, "fleet.maxParallel"),
        ({"enabled": True, "failurePolicy": "Panic"}, "fleet.failurePolicy"),
    ],
)
def test_bad_fleet_values_are_refused_with_their_path(
    app: AppChart,  # noqa: F811
    fleet: dict[str, Any],
    path: str,
) -> None:
    refused = app.refusal_or_render({"fleet": fleet})
    assert refused.returncode != 0
    assert path.rsplit(".", maxsplit=1)[-1] in refused.stderr, refused.stderr
