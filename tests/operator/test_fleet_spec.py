"""A DatabaseMigrationSet's spec: what it means, and every mistake said with its fix."""

from __future__ import annotations

from typing import Any

import pytest
from revisor_operator.decisions.fleet.spec import (
    DatabaseListTargets,
    SchemaTargets,
    SecretSelectorTargets,
    parse_set_spec,
)
from revisor_operator.decisions.fleet.targets import assign_waves, resolve
from revisor_operator.decisions.spec import InvalidSpec, PartsDatabase, UrlDatabase

from .fleet_factories import TEMPLATE, raw_set_spec


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidSpec) as caught:
        parse_set_spec(raw)
    return [p.text for p in caught.value.problems]


def test_defaults_are_one_at_a_time_halting_and_a_rest_wave() -> None:
    spec = parse_set_spec(raw_set_spec())
    assert spec.max_parallel == 1
    assert spec.failure_policy == "Halt"
    assert spec.max_failures is None
    assert not spec.paused
    assert [(w.name, w.is_rest, w.max_parallel) for w in spec.waves] == [("rest", True, 1)]
    assert spec.migration.target == "head"
    assert (spec.successful_jobs_kept, spec.failed_jobs_kept) == (10, 20)


def test_targets_no_wave_chooses_go_to_a_last_rest_wave() -> None:
    spec = parse_set_spec(
        raw_set_spec(
            maxParallel=4,
            waves=[{"name": "canary", "targets": ["acme"]}, {"name": "x", "targets": ["b*"]}],
        )
    )
    assert [w.name for w in spec.waves] == ["canary", "x", "rest"]
    targets = resolve(spec, secrets=["acme", "beta", "bob", "zed"]).targets
    waves = assign_waves(spec, targets)
    assert [[t.name for t in w.targets] for w in waves] == [["acme"], ["beta", "bob"], ["zed"]]
    assert waves[-1].max_parallel == 4


def test_an_explicit_rest_wave_takes_the_rest_wherever_it_stands() -> None:
    spec = parse_set_spec(
        raw_set_spec(waves=[{"name": "all-but-acme"}, {"name": "last", "targets": ["acme"]}])
    )
    waves = assign_waves(spec, resolve(spec, secrets=["acme", "beta"]).targets)
    assert [[t.name for t in w.targets] for w in waves] == [["beta"], ["acme"]]


def test_a_target_chosen_twice_is_in_the_first_wave_that_chooses_it() -> None:
    spec = parse_set_spec(raw_set_spec(waves=[{"targets": ["a*"]}, {"targets": ["acme"]}]))
    waves = assign_waves(spec, resolve(spec, secrets=["acme"]).targets)
    assert [len(w.targets) for w in waves] == [1, 0, 0]


def test_secret_selector_targets_hold_urls_or_parts() -> None:
    urls = parse_set_spec(raw_set_spec(targets={"secretSelector": {
        "matchLabels": {"app": "shop"}, "urlKey": "dsn",
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                             {"key": "retired", "operator": "DoesNotExist"}],
    }}))  # fmt: skip
    assert isinstance(urls.targets, SecretSelectorTargets)
    assert urls.targets.selector.query() == "app=shop,tier in (a,b),!retired"
    url = urls.targets.database("acme-db")
    assert isinstance(url, UrlDatabase)
    assert (url.url.secret, url.url.key) == ("acme-db", "dsn")
    parts = parse_set_spec(raw_set_spec(targets={"secretSelector": {
        "matchLabels": {"app": "shop"}, "secretRef": {"passwordKey": "pw"}, "driver": "postgresql"
    }}))  # fmt: skip
    assert isinstance(parts.targets, SecretSelectorTargets)
    database = parts.targets.database("acme-db")
    assert isinstance(database, PartsDatabase)
    assert database.keys["password"] == "pw" and database.driver == "postgresql"


def test_databases_are_named_by_their_secret_unless_named() -> None:
    spec = parse_set_spec(raw_set_spec(targets={"databases": [
        {"urlSecretRef": {"name": "acme-db"}},
        {"name": "Globex Corp", "secretRef": {"name": "globex"}},
    ]}))  # fmt: skip
    assert isinstance(spec.targets, DatabaseListTargets)
    assert [d.name for d in spec.targets.databases] == ["acme-db", "Globex Corp"]


def test_schemas_by_name_or_by_query() -> None:
    database = {"urlSecretRef": {"name": "shop-db"}}
    names = parse_set_spec(
        raw_set_spec(targets={"schemas": {"database": database, "names": ["t1", "Tenant$2"]}})
    )
    assert isinstance(names.targets, SchemaTargets)
    assert [(t.name, t.schema) for t in resolve(names).targets] == [
        ("Tenant$2", "Tenant$2"),
        ("t1", "t1"),
    ]
    query = parse_set_spec(raw_set_spec(targets={"schemas": {
        "database": database, "query": "SELECT name FROM tenants", "queryInterval": "5m"}}))  # fmt: skip
    assert isinstance(query.targets, SchemaTargets)
    assert query.targets.query_interval_seconds == 300
    unanswered = resolve(query)
    assert unanswered.targets == () and not unanswered.complete
    assert [t.name for t in resolve(query, schemas=["b", "a"]).targets] == ["a", "b"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"template": None}, "spec.template: is required"),
        (
            {"template": {**TEMPLATE, "database": {"urlSecretRef": {"name": "x"}}}},
            "spec.template.database: is not allowed: the targets name each database",
        ),
        (
            {"template": {**TEMPLATE, "target": "head+"}},
            "spec.template.target: 'head+' is not an Alembic target",
        ),
        ({"template": {"target": "head"}}, "spec.template.source: is required"),
        ({"targets": {}}, "spec.targets: needs exactly one kind of target"),
        (
            {"targets": {"secretSelector": {}}},
            "spec.targets.secretSelector: selects every Secret of the namespace",
        ),
        (
            {"targets": {"secretSelector": {"matchLabels": {"bad key!": "x"}}}},
            "'bad key!' is not a label key",
        ),
        (
            {
                "targets": {
                    "databases": [{"urlSecretRef": {"name": "a"}}, {"urlSecretRef": {"name": "a"}}]
                }
            },
            "spec.targets.databases[1].name: 'a' is also spec.targets.databases[0]",
        ),
        (
            {
                "targets": {
                    "databases": [{"secretRef": {"name": "a"}, "urlSecretRef": {"name": "a"}}]
                }
            },
            "spec.targets.databases[0]: needs exactly one of urlSecretRef or secretRef",
        ),
        (
            {"targets": {"schemas": {"database": {"urlSecretRef": {"name": "d"}}}}},
            "spec.targets.schemas: needs exactly one of names or query",
        ),
        (
            {
                "targets": {
                    "schemas": {"database": {"urlSecretRef": {"name": "d"}}, "names": ["x" * 64]}
                }
            },
            "is longer than 63 bytes",
        ),
        (
            {
                "targets": {
                    "schemas": {"database": {"urlSecretRef": {"name": "d"}}, "names": ["a"]}
                },
                "waves": [{"selector": {"matchLabels": {"a": "b"}}}],
            },
            "spec.waves[0].selector: cannot choose schemas: they have no Secret of their own",
        ),
        (
            {
                "targets": {
                    "schemas": {"database": {"urlSecretRef": {"name": "d"}}, "names": ["a"]}
                },
                "template": {**TEMPLATE, "versionTable": {"schema": "public"}},
            },
            "spec.template.versionTable.schema: is not allowed with spec.targets.schemas",
        ),
        ({"waves": [{"name": "a"}, {"name": "b"}]}, "spec.waves: waves a, b both take the rest"),
        ({"waves": [{"name": "a", "targets": ["x"]}, {"name": "a"}]}, "'a' names two waves"),
        (
            {"waves": [{"targets": ["x"], "selector": {"matchLabels": {"a": "b"}}}]},
            "spec.waves[0]: has both targets and selector",
        ),
        ({"maxParallel": 500}, "spec.maxParallel: must be at most 200"),
        ({"maxFailures": 2}, "spec.maxFailures: applies only with failurePolicy Continue"),
        ({"failurePolicy": "Panic"}, "spec.failurePolicy: 'Panic' is not one of Halt, Continue"),
    ],
)
def test_every_mistake_names_its_field_and_fix(overrides: dict[str, Any], expected: str) -> None:
    raw = raw_set_spec(**overrides)
    if overrides.get("template", 0) is None:
        del raw["template"]
    found = problems(raw)
    assert any(expected in text for text in found), found


def test_all_problems_at_once() -> None:
    found = problems(raw_set_spec(maxParallel=0, failurePolicy="x", targets={}))
    assert len(found) == 3
