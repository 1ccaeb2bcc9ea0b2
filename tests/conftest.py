"""Suite-wide fixtures: real databases (throwaway PostgreSQL and MariaDB servers, SQLite files)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mariadb import MariaDBServer, throwaway_mariadb
from tests.support.postgres import PostgresServer, throwaway_postgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the whole run, as an unprivileged user on loopback."""
    with throwaway_postgres() as server:
        yield server


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database (psycopg 3 URL), dropped afterwards."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    """One MariaDB server for the whole run, as an unprivileged user on loopback."""
    with throwaway_mariadb() as server:
        yield server


@pytest.fixture
def mysql_url(mariadb_server: MariaDBServer) -> Iterator[str]:
    """A fresh, empty MariaDB database (PyMySQL URL), dropped afterwards."""
    name = mariadb_server.create_database()
    yield mariadb_server.url(name)
    mariadb_server.drop_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file."""
    return f"sqlite:///{tmp_path / 'app.db'}"
