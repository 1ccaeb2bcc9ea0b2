"""An existing Alembic project works with --config and nothing else."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.engine.conftest import tables, version
from tests.support.projects import REPO, Rev, chain, make_project, table

STANDARD_ENV_PY = """
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config

def run_migrations_online():
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=None{extra})
        with context.begin_transaction():
            context.run_migrations()

run_migrations_online()
"""


def test_example_shop_with_its_alembic_ini(revisor, tmp_path: Path) -> None:
    """The bundled example: an ordinary Alembic project, unchanged."""
    shop = tmp_path / "shop"
    shutil.copytree(REPO / "examples" / "shop", shop, ignore=shutil.ignore_patterns("*.db*"))
    run = revisor("--config", str(shop / "alembic.ini"), "upgrade")
    assert run.code == 0, run.err
    url = f"sqlite:///{shop / 'shop.db'}"
    assert {"customers", "orders"} <= tables(url)
    assert version(url) == {"3c9a1f0b2e44"}
    assert revisor("--config", str(shop / "alembic.ini"), "apply", "1a2b").code == 0
    assert version(url) == {"1a2b3c4d5e6f"}


def test_env_py_mode_runs_the_projects_env_py_with_the_locked_connection(
    revisor, db_url, tmp_path: Path
) -> None:
    """The cookbook env.py takes config.attributes['connection']; progress and history still work."""
    project = make_project(tmp_path, chain(2)).with_env_py()
    ini = project.with_ini(url=db_url)
    run = revisor("--config", str(ini), "--env-py", "--output", "json", "upgrade")
    assert run.code == 0, run.err
    assert version(db_url) == {"0002t0000000"}
    assert len(run.result["applied"]) == 2
    assert "[2/2] 0002t0000000 create t2" in run.err


def test_env_py_that_opens_its_own_connection_is_given_the_locked_one(
    revisor, db_url, tmp_path: Path
) -> None:
    """A standard env.py ignores config.attributes; Revisor swaps in its locked connection."""
    project = make_project(tmp_path, chain(2)).with_env_py(STANDARD_ENV_PY.replace("{extra}", ""))
    ini = project.with_ini(url=db_url)
    run = revisor("--config", str(ini), "--env-py", "--output", "json", "upgrade")
    assert run.code == 0, run.err
    assert version(db_url) == {"0002t0000000"}
    assert [s["revision"] for s in run.result["applied"]] == ["0001t0000000", "0002t0000000"]


def test_env_py_with_a_custom_version_table_must_be_named(revisor, db_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(1)).with_env_py(
        STANDARD_ENV_PY.replace("{extra}", ", version_table='shop_version'")
    )
    ini = project.with_ini(url=db_url)
    refused = revisor("--config", str(ini), "--env-py", "upgrade")
    assert refused.code == 2
    assert "env.py configures version_table='shop_version'" in refused.err
    assert "--version-table shop_version" in refused.err
    ok = revisor("--config", str(ini), "--env-py", "--version-table", "shop_version", "upgrade")
    assert ok.code == 0, ok.err
    assert version(db_url, "shop_version") == {"0001t0000000"}


def test_env_py_mode_without_env_py_says_so(revisor, db_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(1))
    run = revisor(*project.args(), "--database-url", db_url, "--env-py", "upgrade")
    assert run.code == 2 and "has no env.py" in run.err


def test_several_version_locations_from_the_ini(revisor, db_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(1))
    extra = tmp_path / "more_versions"
    extra.mkdir()
    (extra / "0002_more.py").write_text(table("more", "0001t0000000", "0002m0000000").source())
    ini = project.with_ini(
        url=db_url,
        extra=f"version_locations = %(here)s/migrations/versions {extra}\n".replace(
            "path_separator = os", ""
        ),
    )
    text = ini.read_text().replace("path_separator = os", "path_separator = space")
    ini.write_text(text)
    run = revisor("--config", str(ini), "upgrade")
    assert run.code == 0, run.err
    assert version(db_url) == {"0002m0000000"} and "more" in tables(db_url)


def test_version_locations_on_the_command_line(revisor, db_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(1))
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "0002_more.py").write_text(table("more", "0001t0000000", "0002m0000000").source())
    run = revisor(
        *project.args(), "--version-locations", f"{project.versions},{extra}",
        "--database-url", db_url, "upgrade",
    )  # fmt: skip
    assert run.code == 0, run.err
    assert version(db_url) == {"0002m0000000"}


def test_script_location_in_package_notation(revisor, db_url, tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "shopapp"
    (package / "migrations" / "versions").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "migrations" / "__init__.py").write_text("")
    for rev in chain(2):
        (package / "migrations" / "versions" / f"{rev.id}.py").write_text(rev.source())
    ini = tmp_path / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = shopapp:migrations\nsqlalchemy.url = {db_url}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run = revisor("--config", str(ini), "upgrade")
    assert run.code == 0, run.err
    assert version(db_url) == {"0002t0000000"}
    sys.modules.pop("shopapp", None)


def test_flat_directory_of_revision_files_as_a_configmap_mounts_it(
    revisor, db_url, tmp_path: Path
) -> None:
    flat = tmp_path / "configmap"
    flat.mkdir()
    for rev in chain(2):
        (flat / f"{rev.id}.py").write_text(rev.source())
    run = revisor("--scripts", str(flat), "--database-url", db_url, "upgrade")
    assert run.code == 0, run.err
    assert version(db_url) == {"0002t0000000"}


@pytest.mark.parametrize("schema_backend", ["postgresql"])
def test_version_table_in_another_schema(
    revisor, pg_url, tmp_path: Path, schema_backend: str
) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE SCHEMA ops"))
    project = make_project(tmp_path, chain(1))
    run = revisor(
        *project.args(), "--database-url", pg_url, "--version-table-schema", "ops", "upgrade"
    )
    assert run.code == 0, run.err
    insp = sa.inspect(engine)
    assert {"alembic_version", "revisor_history"} <= set(insp.get_table_names(schema="ops"))
    engine.dispose()


def test_branches_merges_and_depends_on(revisor, any_db_url, tmp_path: Path) -> None:
    """A branch point, two labelled branches, a cross-branch dependency and a merge."""
    revs = [
        table("root", None, "aaaa00000000"),
        table("billing", "aaaa00000000", "bbbb00000001", branch_labels=("billing",)),
        table("invoices", "bbbb00000001", "bbbb00000002"),
        table(
            "shipping",
            "aaaa00000000",
            "cccc00000001",
            branch_labels=("shipping",),
            depends_on=("bbbb00000001",),
        ),
    ]
    project = make_project(tmp_path, revs)
    args = (*project.args(), "--database-url", any_db_url)
    assert revisor(*args, "upgrade", "shipping@head").code == 0
    assert version(any_db_url) == {"cccc00000001"}
    assert "billing" in tables(any_db_url), "depends_on pulled in the billing revision"
    assert revisor(*args, "upgrade", "billing@+1").code == 0
    assert version(any_db_url) == {"bbbb00000002", "cccc00000001"}
    assert revisor(*args, "upgrade", "head").code == 2, "two heads: 'head' is ambiguous"
    project.add(Rev(id="dddd00000000", down=("bbbb00000002", "cccc00000001"), message="merge"))
    assert revisor(*args, "upgrade", "heads").code == 0
    assert version(any_db_url) == {"dddd00000000"}
    ambiguous = revisor(*args, "downgrade", "-1")
    assert ambiguous.code == 2 and "Ambiguous walk" in ambiguous.err, (
        "Alembic's word, passed through"
    )
    assert revisor(*args, "downgrade", "bbbb00000002").code == 0
    assert version(any_db_url) == {"bbbb00000002", "cccc00000001"}, "only the merge is undone"
    assert revisor(*args, "downgrade", "shipping@-1").code == 0
    assert version(any_db_url) == {"bbbb00000002"}
    assert "shipping" not in tables(any_db_url) and "invoices" in tables(any_db_url)
    history = revisor(*project.args(), "history")
    assert "(mergepoint)" in history.out and "(branchpoint)" in history.out
