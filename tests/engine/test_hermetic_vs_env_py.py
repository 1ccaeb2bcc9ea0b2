"""A hermetic run must not silently build another schema than the project's own env.py.

Projects hand Alembic a ``target_metadata`` whose naming convention names
the constraints their revisions leave unnamed. A hermetic run (Revisor
configures Alembic itself, env.py is not run) would name them the
database's way instead. So such a run says that env.py was not used and
what it missed; ``--metadata`` gives it the convention, and ``--env-py``
runs env.py itself. Flat directories (a mounted ConfigMap) may hold env.py
beside the revisions, and ``./alembic.ini`` is found as Alembic finds it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.engine.conftest import version
from tests.support.projects import REPO, Rev, make_project

pytestmark = pytest.mark.postgres

MODELS = """
import sqlalchemy as sa

metadata = sa.MetaData(naming_convention={
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
})
"""

ENV_PY = """
from alembic import context
import models

config = context.config
target_metadata = models.metadata

connection = config.attributes["connection"]
context.configure(connection=connection, target_metadata=target_metadata)
with context.begin_transaction():
    context.run_migrations()
"""

REVS = [
    Rev(
        id="a1c000000001",
        message="accounts",
        upgrade="""
            op.create_table(
                'account',
                sa.Column('id', sa.Integer, primary_key=True),
                sa.Column('email', sa.Text),
                sa.UniqueConstraint('email'),
            )
            op.create_table(
                'invoice',
                sa.Column('id', sa.Integer, primary_key=True),
                sa.Column('account_id', sa.Integer, sa.ForeignKey('account.id')),
            )
        """,
        downgrade="op.drop_table('invoice')\nop.drop_table('account')",
    )
]


def _constraints(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        names = conn.execute(
            sa.text(
                "SELECT conname FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid "
                "WHERE t.relname IN ('account', 'invoice') AND c.contype IN ('u', 'f')"
            )
        ).scalars()
        found = set(names)
    engine.dispose()
    return found


def _project(tmp_path: Path):
    project = make_project(tmp_path, REVS).with_env_py(textwrap.dedent(ENV_PY))
    (project.scripts / "models.py").write_text(textwrap.dedent(MODELS))
    return project


def test_env_py_and_metadata_name_constraints_by_the_convention_and_a_plain_hermetic_run_warns(
    revisor, postgres_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project(tmp_path)
    monkeypatch.syspath_prepend(str(project.scripts))
    urls = {how: postgres_server.url(postgres_server.create_database()) for how in "hme"}
    named = {"uq_account_email", "fk_invoice_account_id_account"}

    env_py = revisor(*project.args(), "--database-url", urls["e"], "--env-py", "upgrade")
    assert env_py.code == 0, env_py.err
    assert _constraints(urls["e"]) == named

    with_metadata = revisor(
        *project.args(), "--database-url", urls["m"], "--metadata", "models:metadata",
        "--output", "json", "upgrade",
    )  # fmt: skip
    assert with_metadata.code == 0, with_metadata.err
    assert _constraints(urls["m"]) == named, "the same names as the project's own env.py"

    hermetic = revisor(*project.args(), "--database-url", urls["h"], "--output", "json", "upgrade")
    assert hermetic.code == 0
    assert _constraints(urls["h"]) == {"account_email_key", "invoice_account_id_fkey"}
    (warning,) = hermetic.result["warnings"]
    assert "env.py was not run (a hermetic run)" in warning
    assert "sets target_metadata (its naming convention names constraints)" in warning
    assert "--env-py (spec.source.envPy)" in warning and "--metadata MOD:ATTR" in warning
    assert f"warning: {warning}" in hermetic.err


def test_a_stock_env_py_is_mentioned_but_is_no_warning(revisor, db_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, REVS[:0]).with_env_py()  # the example's cookbook env.py
    project.add(Rev(id="a1c000000001", upgrade="op.create_table('x', sa.Column('id', sa.Integer))"))
    run = revisor(*project.args(), "--database-url", db_url, "--output", "json", "upgrade")
    assert run.code == 0
    assert "warnings" not in run.result
    assert "env.py not run (hermetic run; --env-py runs it)" in run.err


def test_a_flat_directory_holding_env_py_runs_hermetic_and_with_env_py(
    revisor, db_url, tmp_path: Path
) -> None:
    """A ConfigMap mounts flat: env.py sits beside the revisions and is not a revision."""
    flat = tmp_path / "flat"
    flat.mkdir()
    for source in (REPO / "examples/shop/migrations/versions").glob("*.py"):
        (flat / source.name).write_text(source.read_text())
    (flat / "env.py").write_text((REPO / "examples/shop/migrations/env.py").read_text())
    first = revisor("--scripts", str(flat), "--database-url", db_url, "upgrade", "9d2e7a11c0f3")
    assert first.code == 0, first.err
    second = revisor("--scripts", str(flat), "--database-url", db_url, "--env-py", "upgrade")
    assert second.code == 0, second.err
    assert version(db_url) == {"3c9a1f0b2e44"}


def test_alembic_ini_in_the_current_directory_is_used_as_alembic_would(
    revisor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path, REVS)
    project.with_ini(url=f"sqlite:///{tmp_path / 'app.db'}")
    monkeypatch.chdir(tmp_path)
    heads = revisor("heads")
    assert heads.code == 0, heads.err
    assert heads.out.startswith("a1c000000001 (head)")
    monkeypatch.chdir(tmp_path / "migrations")
    nowhere = revisor("heads")
    assert nowhere.code == 2
    assert "no script directory given (no alembic.ini here)" in nowhere.err
