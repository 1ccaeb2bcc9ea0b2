"""A DatabaseMigrationSet over PostgreSQL schemas of one database, on a real control plane.

Schema-per-tenant: each tenant is a schema, migrated by ``revisor --schema`` with
its tables, version table and ``revisor_history`` in it and a lock of its own.
The schemas are listed in the spec, or returned by a read-only query that the
operator runs as a Job (it never connects to a database itself).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from kopf.testing import KopfRunner

from tests.cluster.conftest import Kube
from tests.support.fleet_kit import (
    children,
    create_set,
    install_set_crd,
    kubectl_get,
    migration_set,
    ready_message,
    set_reaches,
)
from tests.support.operator_kit import (
    HEAD,
    REVS,
    create_config_map,
    create_secret,
    install_crd,
    running_operator,
)
from tests.support.sql import execute

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

PREFIX = "fleetpg"


@pytest.fixture(scope="module")
def schema_operator(kube: Kube) -> Iterator[KopfRunner]:
    install_crd(kube)
    install_set_crd(kube)
    with running_operator(kube, f"{PREFIX}-*") as runner:
        yield runner
    print(runner.output)


def schema_state(url: str, schema: str) -> tuple[set[str], set[str]]:
    """The tables of ``schema`` and the revisions its own version table holds."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names(schema=schema))
            if "alembic_version" not in tables:
                return tables, set()
            rows = conn.execute(sa.text(f'SELECT version_num FROM "{schema}".alembic_version'))
            return tables, {row[0] for row in rows}
    finally:
        engine.dispose()


def schema_targets(**how: object) -> dict[str, object]:
    return {"schemas": {"database": {"urlSecretRef": {"name": "app-db", "key": "url"}}, **how}}


@pytest.mark.usefixtures("schema_operator")
def test_listed_schemas_are_migrated_each_in_itself_wave_by_wave(
    process_kubelet: Kube, ns: str, pg_url: str
) -> None:
    kube = process_kubelet
    names = ["acme", "beta", "gamma"]
    execute(pg_url, *(f'CREATE SCHEMA "{n}"' for n in names))
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, REVS)
    waves = [
        {"name": "canary", "targets": ["acme"], "maxParallel": 1},
        {"name": "rest", "maxParallel": 2},
    ]
    body = migration_set("tenants", targets=schema_targets(names=names), waves=waves)
    create_set(kube, ns, body)
    done = set_reaches(kube, ns, "tenants", "Succeeded", "Halted", "Failed")
    assert done["status"]["phase"] == "Succeeded", ready_message(done)
    assert done["status"]["readyTargets"] == "3/3"
    for name in names:
        tables, version = schema_state(pg_url, name)
        assert {"t1", "t2", "alembic_version", "revisor_history"} <= tables, (name, tables)
        assert version == {HEAD}, name
    assert schema_state(pg_url, "public")[0] == set(), "nothing lands in the default schema"
    listed = children(kube, ns, "tenants")
    assert sorted(c["spec"]["schema"] for c in listed) == names
    assert "3/3" in kubectl_get(kube, ns, "dbmset")


@pytest.mark.usefixtures("schema_operator")
def test_schemas_a_query_returns_are_the_fleet(process_kubelet: Kube, ns: str, pg_url: str) -> None:
    """The query runs in a Job; its answer is kept in status; inactive tenants stay out."""
    kube = process_kubelet
    execute(
        pg_url,
        'CREATE SCHEMA "t_one"',
        'CREATE SCHEMA "t_two"',
        'CREATE SCHEMA "t_off"',
        "CREATE TABLE public.tenants (name text, active boolean)",
        "INSERT INTO public.tenants VALUES ('t_one', true), ('t_two', true), ('t_off', false)",
    )
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, REVS)
    query = "SELECT name FROM public.tenants WHERE active"
    create_set(kube, ns, migration_set("tenants", targets=schema_targets(query=query)))
    done = set_reaches(kube, ns, "tenants", "Succeeded", "Halted", "Failed")
    assert done["status"]["phase"] == "Succeeded", ready_message(done)
    assert done["status"]["schemas"]["count"] == 2
    assert sorted(c["spec"]["schema"] for c in children(kube, ns, "tenants")) == [
        "t_one",
        "t_two",
    ]
    assert schema_state(pg_url, "t_one")[1] == {HEAD}
    assert schema_state(pg_url, "t_two")[1] == {HEAD}
    assert schema_state(pg_url, "t_off") == (set(), set()), "an inactive tenant is not migrated"
