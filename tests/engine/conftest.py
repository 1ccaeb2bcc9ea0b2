"""Fixtures for engine tests: a database per test on each real backend, and a CLI runner."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import structlog
from revisor.cli import main
from revisor.redaction import forget_secrets

from tests.support.postgres import PostgresServer


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    @property
    def result(self) -> dict[str, Any]:
        """The result document printed with --output json (last stdout line)."""
        document: dict[str, Any] = json.loads(self.out.strip().splitlines()[-1])
        return document


@pytest.fixture
def revisor(capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    """Run the real CLI in-process: ``revisor("--scripts", d, "upgrade")``."""

    def run(*args: str) -> Run:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture(autouse=True)
def _fresh_secrets() -> Iterator[None]:
    yield
    forget_secrets()


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """``--log-format json`` points structlog at the test's captured stream; undo it.

    Left configured, later tests (the operator's, which log through structlog
    too) would write to a stream pytest has closed.
    """
    yield
    structlog.reset_defaults()


def _fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh empty database on ``request.param``'s backend, dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db.sqlite'}"
        return
    if request.param == "mariadb":
        yield request.getfixturevalue("mysql_url")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.create_database()
    yield server.url(name)
    server.drop_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh empty database on each real backend with transactional DDL."""
    yield from _fresh_database(request, tmp_path)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh empty database on each real backend, MariaDB included.

    For tests whose every assertion also holds without transactional DDL;
    ``db_url`` is for the ones that rely on it (a failed revision leaving
    nothing behind, dry runs).
    """
    yield from _fresh_database(request, tmp_path)


def tables(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def version(url: str, table: str = "alembic_version") -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(table):
                return set()
            return {row[0] for row in conn.execute(sa.text(f"SELECT version_num FROM {table}"))}
    finally:
        engine.dispose()


def history_rows(url: str, kind: str = "run") -> list[dict[str, Any]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("revisor_history"):
                return []
            rows = conn.execute(
                sa.text("SELECT * FROM revisor_history WHERE kind = :k ORDER BY id"), {"k": kind}
            )
            return [dict(r._mapping) for r in rows]
    finally:
        engine.dispose()
