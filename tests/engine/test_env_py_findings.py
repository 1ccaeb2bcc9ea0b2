"""What a hermetic run says an env.py it did not run would have done.

Only what changes the schema the revisions build is worth a warning:
a ``target_metadata`` (its naming convention), the version table's place
and name when not Alembic's default, schemas, SQL run on the connection.
Options that a hermetic run does the same way (Revisor's own transaction
per revision, batch mode, the default version table) are not findings, or
every project's env.py would warn.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from revisor.scripts import env_py_findings


def _findings(tmp_path: Path, source: str) -> list[str]:
    path = tmp_path / "env.py"
    path.write_text(textwrap.dedent(source))
    return env_py_findings(path)


# Airflow's env.py, the parts that matter here.
AIRFLOW_LIKE = """
    from alembic import context
    from airflow import models

    target_metadata = models.base.Base.metadata
    version_table = "alembic_version"

    def run_migrations_online():
        context.configure(
            connection=connection,
            transaction_per_migration=True,
            target_metadata=target_metadata,
            compare_type=True,
            include_object=include_object,
            render_as_batch=True,
            version_table=version_table,
        )
"""


def test_options_a_hermetic_run_shares_are_not_findings(tmp_path: Path) -> None:
    assert _findings(tmp_path, AIRFLOW_LIKE) == [
        "sets target_metadata (its naming convention names constraints)"
    ]


@pytest.mark.parametrize(
    ("configure", "finding"),
    [
        ("version_table='my_versions'", "passes version_table to configure()"),
        ("version_table=TABLE", "passes version_table to configure()"),
        ("version_table=settings.table", "passes version_table to configure()"),
        ("version_table_schema='tenant'", "passes version_table_schema to configure()"),
        ("include_schemas=True", "passes include_schemas to configure()"),
    ],
)
def test_options_that_change_where_or_what_are_findings(
    tmp_path: Path, configure: str, finding: str
) -> None:
    source = f"""
        from alembic import context
        TABLE = "tenant_versions"
        context.configure(connection=connection, {configure})
    """
    assert _findings(tmp_path, source) == [finding]


@pytest.mark.parametrize(
    "configure",
    [
        "version_table='alembic_version'",
        "render_as_batch=True",
        "transaction_per_migration=True",
        "transaction_per_migration=False, render_as_batch=dialect.name == 'sqlite'",
    ],
)
def test_defaults_and_shared_options_alone_say_nothing(tmp_path: Path, configure: str) -> None:
    source = f"""
        from alembic import context
        context.configure(connection=connection, target_metadata=None, {configure})
    """
    assert _findings(tmp_path, source) == []
