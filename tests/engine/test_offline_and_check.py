"""Offline SQL (no database) and drift between models and the live schema."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support.projects import chain, make_project


def test_offline_sql_for_a_range_needs_no_database(revisor, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("REVISOR_DATABASE_URL", raising=False)
    project = make_project(tmp_path, chain(2))
    run = revisor(*project.args(), "sql", "base:head")
    assert run.code == 0, run.err
    assert "CREATE TABLE t1" in run.out and "CREATE TABLE t2" in run.out
    assert "CREATE TABLE alembic_version" in run.out
    assert "BEGIN;" in run.out and "COMMIT;" in run.out


def test_offline_sql_downgrade_and_dialect(revisor, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(2))
    down = revisor(*project.args(), "sql", "head:0001", "--dialect", "sqlite")
    assert down.code == 0, down.err
    assert "DROP TABLE t2" in down.out and "DROP TABLE t1" not in down.out
    refused = revisor(*project.args(), "sql", "base")
    assert refused.code == 0 and refused.out.strip() == ""
    bad = revisor(*project.args(), "sql", "head:zzzz")
    assert bad.code == 2


def write_models(tmp_path: Path, columns: str) -> str:
    module = tmp_path / "drift_models.py"
    module.write_text(
        "import sqlalchemy as sa\nmetadata = sa.MetaData()\n"
        f"t1 = sa.Table('t1', metadata, sa.Column('id', sa.Integer, primary_key=True){columns})\n"
        "t2 = sa.Table('t2', metadata, sa.Column('id', sa.Integer, primary_key=True))\n"
    )
    sys.modules.pop("drift_models", None)
    return "drift_models:metadata"


def test_check_finds_no_drift_when_models_match(
    revisor, db_url, tmp_path: Path, monkeypatch
) -> None:
    project = make_project(tmp_path, chain(2))
    revisor(*project.args(), "--database-url", db_url, "upgrade")
    monkeypatch.syspath_prepend(str(tmp_path))
    run = revisor(
        *project.args(), "--database-url", db_url, "check", "--metadata", write_models(tmp_path, "")
    )
    assert run.code == 0, run.out + run.err
    assert "no differences" in run.out


def test_check_reports_drift_with_exit_7(revisor, db_url, tmp_path: Path, monkeypatch) -> None:
    project = make_project(tmp_path, chain(2))
    revisor(*project.args(), "--database-url", db_url, "upgrade")
    monkeypatch.syspath_prepend(str(tmp_path))
    ref = write_models(tmp_path, ", sa.Column('email', sa.String(50))")
    run = revisor(
        *project.args(), "--database-url", db_url, "--output", "json", "check", "--metadata", ref
    )
    assert run.code == 7
    assert run.result["details"]["count"] == 1
    assert "add_column" in run.result["details"]["differences"][0]
    assert "email" in run.result["details"]["differences"][0]


def test_check_with_a_bad_reference_is_exit_2(revisor, db_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(1))
    run = revisor(
        *project.args(), "--database-url", db_url, "check", "--metadata", "no_such_module_x:md"
    )
    assert run.code == 2 and "cannot import no_such_module_x" in run.err
    run = revisor(*project.args(), "--database-url", db_url, "check", "--metadata", "nocolon")
    assert run.code == 2 and "expected MODULE:ATTRIBUTE" in run.err
