"""Schema-per-tenant on PostgreSQL: ``revisor --schema NAME``, and ``revisor schemas --query``.

As in Alembic's multi-tenancy recipe: the migration connection's search_path
is the tenant's schema, so its tables land there; its version table and
``revisor_history`` live in it; and its lock's key includes it, so two tenants
of one database migrate at the same time. ``revisor schemas`` lists the
tenants a read-only query returns, page by page, as the operator reads them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from revisor.contract import MAX_RESULT_BYTES, SchemaPage, decode_names

from tests.engine.test_locking import slow_chain
from tests.support.projects import chain, make_project

pytestmark = pytest.mark.postgres
HEAD = "0003t0000000"


def revisor(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "revisor", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def psql(url: str, *statements: str) -> None:
    libpq = sa.make_url(url).set(drivername="postgresql")
    with psycopg.connect(libpq.render_as_string(hide_password=False), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def tables_of(url: str, schema: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names(schema=schema))
    finally:
        engine.dispose()


def version_of(url: str, schema: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(f'SELECT version_num FROM "{schema}".alembic_version'))
            return {r[0] for r in rows}
    finally:
        engine.dispose()


def test_each_schema_is_migrated_on_its_own(pg_url: str, tmp_path: Path) -> None:
    psql(pg_url, 'CREATE SCHEMA "tenant_a"', 'CREATE SCHEMA "Tenant-B"')
    project = make_project(tmp_path, chain(3))
    for schema in ("tenant_a", "Tenant-B"):
        done = revisor(*project.args(), "--database-url", pg_url, f"--schema={schema}", "upgrade")
        assert done.returncode == 0, done.stderr
    for schema in ("tenant_a", "Tenant-B"):
        assert {"t1", "t2", "t3", "alembic_version", "revisor_history"} <= tables_of(pg_url, schema)
        assert version_of(pg_url, schema) == {HEAD}
    assert tables_of(pg_url, "public") == set()
    current = revisor(*project.args(), "--database-url", pg_url, "--schema", "tenant_a", "current")
    assert current.returncode == 0 and HEAD in current.stdout
    down = revisor(*project.args(), "--database-url", pg_url, "--schema", "Tenant-B",
                   "downgrade", "base")  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert version_of(pg_url, "Tenant-B") == set()
    assert version_of(pg_url, "tenant_a") == {HEAD}


def test_two_schemas_migrate_at_the_same_time(pg_url: str, tmp_path: Path) -> None:
    """Tenant a holds its lock inside a revision; tenant b migrates meanwhile, not waiting."""
    psql(pg_url, "CREATE SCHEMA a", "CREATE SCHEMA b")
    flag = tmp_path / "hold"
    flag.touch()
    held = make_project(tmp_path / "held", slow_chain(flag))
    log = tmp_path / "a.log"
    with log.open("w") as stderr:
        first = subprocess.Popen(
            [sys.executable, "-m", "revisor", *held.args(), "--database-url", pg_url,
             "--schema", "a", "upgrade", "--lock-timeout", "0"],
            stderr=stderr, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120  # a hang guard, not a measurement
        # t1 committed: a's runner holds a's lock, and its second revision (whose t2 is
        # not committed, so not seen) waits for the flag.
        while "t1" not in tables_of(pg_url, "a"):
            assert first.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        # b does not wait for a's lock: with --lock-timeout 0 it would fail at once
        # (exit 3) if the lock were shared.
        other = make_project(tmp_path / "other", chain(3))
        second = revisor(*other.args(), "--database-url", pg_url, "--schema", "b", "upgrade",
                         "--lock-timeout", "0")  # fmt: skip
        assert second.returncode == 0, second.stderr
        assert version_of(pg_url, "b") == {HEAD}
        assert first.poll() is None, "a's run must still hold its lock"
    finally:
        flag.unlink(missing_ok=True)
    first.communicate(timeout=120)
    assert first.returncode == 0, log.read_text()
    assert version_of(pg_url, "a") == {HEAD}


def test_the_same_schema_still_takes_turns(pg_url: str, tmp_path: Path) -> None:
    """Two runners of one tenant: the second cannot take the tenant's lock (exit 3)."""
    psql(pg_url, "CREATE SCHEMA a")
    flag = tmp_path / "hold"
    flag.touch()
    held = make_project(tmp_path / "held", slow_chain(flag))
    first = subprocess.Popen(
        [sys.executable, "-m", "revisor", *held.args(), "--database-url", pg_url,
         "--schema", "a", "upgrade"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "t1" not in tables_of(pg_url, "a"):  # committed: the runner holds a's lock
            assert first.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.1)
        second = revisor(*held.args(), "--database-url", pg_url, "--schema", "a", "upgrade",
                         "--lock-timeout", "0")  # fmt: skip
        assert second.returncode == 3, second.stderr
    finally:
        flag.unlink(missing_ok=True)
    first.communicate(timeout=120)
    assert first.returncode == 0


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--schema", "missing"], "schema 'missing' does not exist"),
        (["--schema", "a", "--version-table-schema", "public"], "--version-table-schema"),
    ],
)
def test_mistakes_are_refused_before_anything_runs(
    pg_url: str, tmp_path: Path, extra: list[str], words: str
) -> None:
    psql(pg_url, "CREATE SCHEMA IF NOT EXISTS a")
    project = make_project(tmp_path, chain(1))
    done = revisor(*project.args(), "--database-url", pg_url, *extra, "upgrade")
    assert done.returncode == 2, done.stderr
    assert words in done.stderr
    assert tables_of(pg_url, "a") == set() and tables_of(pg_url, "public") == set()


def test_schema_is_for_postgresql(tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(1))
    url = f"sqlite:///{tmp_path / 'app.db'}"
    done = revisor(*project.args(), "--database-url", url, "--schema", "a", "upgrade")
    assert done.returncode == 2
    assert "PostgreSQL" in done.stderr


# -- revisor schemas --query ---------------------------------------------------------------


def test_schemas_lists_what_the_query_returns_sorted_and_once(pg_url: str) -> None:
    psql(pg_url, "CREATE TABLE tenants (name text, active bool)",
         "INSERT INTO tenants VALUES ('b', true), ('a', true), ('a', true), ('z', false), "
         "(NULL, true)")  # fmt: skip
    query = "SELECT name FROM tenants WHERE active"
    text = revisor("--database-url", pg_url, "schemas", "--query", query)
    assert text.returncode == 0, text.stderr
    assert text.stdout.split() == ["a", "b"]
    done = revisor("--database-url", pg_url, "--output", "json", "schemas", "--query", query)
    result = json.loads(done.stdout)
    page = SchemaPage.from_details(result["details"])
    assert page is not None
    assert page.names == ("a", "b") and page.remaining == 0 and page.total == 2
    assert page.list_hash == SchemaPage.hash_of(["a", "b"])
    assert result["reason"] == "SchemasListed"


def test_a_long_list_comes_in_pages_that_fit_a_termination_message(pg_url: str) -> None:
    query = "SELECT 'tenant_' || md5(i::text) FROM generate_series(1, 3000) AS i"
    everything: list[str] = []
    after: list[str] = []
    pages = 0
    while True:
        done = revisor("--database-url", pg_url, "--output", "json", "schemas", "--query",
                       query, *after)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert len(done.stdout.encode()) <= MAX_RESULT_BYTES
        page = SchemaPage.from_details(json.loads(done.stdout)["details"])
        assert page is not None and page.total == 3000
        everything += page.names
        pages += 1
        if page.remaining == 0:
            break
        after = [f"--after={page.names[-1]}"]
    assert pages > 1
    assert everything == sorted(everything) and len(set(everything)) == 3000
    assert SchemaPage.hash_of(everything) == page.list_hash


def test_the_query_runs_read_only(pg_url: str) -> None:
    psql(pg_url, "CREATE TABLE tenants (name text)")
    done = revisor("--database-url", pg_url, "schemas", "--query",
                   "INSERT INTO tenants VALUES ('x') RETURNING name")  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "read-only" in done.stderr
    psql(pg_url, "INSERT INTO tenants VALUES ('seen')")
    listed = revisor("--database-url", pg_url, "schemas", "--query", "SELECT name FROM tenants")
    assert listed.stdout.split() == ["seen"]


def test_a_broken_query_says_why(pg_url: str) -> None:
    done = revisor("--database-url", pg_url, "--output", "json", "schemas", "--query",
                   "SELECT name FROM no_such_table")  # fmt: skip
    assert done.returncode == 2
    result = json.loads(done.stdout)
    assert "no_such_table" in result["error"]
    assert decode_names("") == []


def test_the_async_driver_and_a_quoted_name_work_alike(pg_url: str, tmp_path: Path) -> None:
    """asyncpg sets the search_path the same way; '%' and '"' are parts of the name."""
    schema = 'odd%"name'
    psql(pg_url, 'CREATE SCHEMA "odd%""name"')
    project = make_project(tmp_path, chain(3))
    url = pg_url.replace("+psycopg", "+asyncpg")
    for command in (["upgrade"], ["drift"], ["verify"], ["wait-for", "--timeout", "0"]):
        done = revisor(*project.args(), "--database-url", url, "--schema", schema, *command)
        assert done.returncode == 0, (command, done.stderr)
    assert {"t1", "t2", "t3", "alembic_version", "revisor_history"} <= tables_of(pg_url, schema)
    assert tables_of(pg_url, "public") == set()


def test_a_failing_query_keeps_its_secrets(pg_url: str) -> None:
    """PostgreSQL quotes the query's line in its error; what looks like a credential is masked."""
    done = revisor("--database-url", pg_url, "--output", "json", "schemas", "--query",
                   "SELECT 'password=Canary-s3cr3t' FROM no_such_table")  # fmt: skip
    assert done.returncode == 2
    assert "Canary-s3cr3t" not in done.stdout + done.stderr
    assert "no_such_table" in json.loads(done.stdout)["error"]


def test_an_invalid_index_warns_only_its_own_tenant(pg_url: str, tmp_path: Path) -> None:
    """A failed concurrent build in one tenant is that tenant's warning, not its neighbour's."""
    psql(pg_url, 'CREATE SCHEMA "tenant_a"', 'CREATE SCHEMA "tenant_b"')
    psql(
        pg_url,
        "CREATE TABLE tenant_b.dup (code int)",
        "INSERT INTO tenant_b.dup VALUES (1), (1)",
    )
    with pytest.raises(psycopg.errors.UniqueViolation):
        psql(pg_url, "CREATE UNIQUE INDEX CONCURRENTLY ix_dup ON tenant_b.dup (code)")
    project = make_project(tmp_path, chain(3))
    runs = {}
    for schema in ("tenant_a", "tenant_b"):
        runs[schema] = revisor(*project.args(), "--database-url", pg_url, f"--schema={schema}",
                               "--output", "json", "upgrade")  # fmt: skip
        assert runs[schema].returncode == 0, runs[schema].stderr
    warnings = {s: json.loads(r.stdout).get("warnings", []) for s, r in runs.items()}
    assert warnings["tenant_a"] == []
    assert len(warnings["tenant_b"]) == 1
    assert "INVALID index(es) tenant_b.ix_dup found" in warnings["tenant_b"][0]


def test_offline_sql_for_a_tenant_sets_its_search_path(pg_url: str, tmp_path: Path) -> None:
    """The script ``sql --schema`` prints, run by hand, builds the tenant and nothing else."""
    psql(pg_url, 'CREATE SCHEMA "Tenant-C"')
    project = make_project(tmp_path, chain(3))
    done = revisor(*project.args(), "--schema=Tenant-C", "sql", "base:head")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('SET search_path TO "Tenant-C";\n')
    psql(pg_url, done.stdout)
    assert {"t1", "t2", "t3", "alembic_version"} <= tables_of(pg_url, "Tenant-C")
    assert version_of(pg_url, "Tenant-C") == {HEAD}
    assert tables_of(pg_url, "public") == set()

    other = revisor(*project.args(), "--schema=Tenant-C", "sql", "base:head", "--dialect", "mysql")
    assert other.returncode == 2
    assert "--schema is for PostgreSQL" in other.stderr
