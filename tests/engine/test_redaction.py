"""Secrets are removed from any text that leaves the process."""

from __future__ import annotations

from revisor.connection import resolve_database
from revisor.redaction import scrub


def test_urls_passwords_and_registered_secrets_are_masked() -> None:
    db = resolve_database(url="postgresql://app:p%40ss-Canary@db:5432/shop")
    assert "p@ss-Canary" not in str(db) and "***" in str(db)
    assert scrub("failed for p@ss-Canary and p%40ss-Canary") == "failed for *** and ***"
    assert scrub("see mysql://u:hunter2@h/db") == "see mysql://u:***@h/db"
    assert scrub("host=db password=hunter2 user=x") == "host=db password=*** user=x"


def test_bare_postgresql_url_means_psycopg_3() -> None:
    assert resolve_database(url="postgresql://u@h/db").url.drivername == "postgresql+psycopg"
    assert resolve_database(url="postgresql+asyncpg://u@h/db").is_async


def test_url_from_parts(monkeypatch) -> None:
    env = {
        "REVISOR_DATABASE_HOST": "db", "REVISOR_DATABASE_PORT": "5433", "REVISOR_DATABASE_NAME": "shop",
        "REVISOR_DATABASE_USER": "app", "REVISOR_DATABASE_PASSWORD": "Parts-Canary",
    }  # fmt: skip
    db = resolve_database(environ=env)
    assert db.url.host == "db" and db.url.port == 5433 and db.url.password == "Parts-Canary"
    assert scrub(f"oops {db.url.password}") == "oops ***"
