"""On MariaDB too, a password (or any part of a connection from a Secret) never leaves the engine.

The property of test_secrets_never_leak.py, with a real MariaDB account
whose password is random printable text: a revision that prints, logs and
raises with the URL and with the password in an ``IDENTIFIED BY`` literal,
a wrong password (MariaDB's "Access denied for user 'canary'@'host'" names
the user and the client's host, both from the Secret), and a Secret whose
keys point the host, user, database or port at the password. Nothing of
them may appear on stdout, stderr, in the result or in ``revisor_history``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, given, settings
from revisor.contract import ENV_DATABASE_PARTS, ENV_DATABASE_SOURCE, ENV_DATABASE_URL

from tests.engine.test_secrets_never_leak import CREDENTIAL, _assert_absent, _forms, _run
from tests.support.mariadb import MariaDBServer
from tests.support.projects import Rev, make_project

pytestmark = [pytest.mark.mariadb, pytest.mark.slow]

LEAKY = Rev(
    id="1eak00000001",
    message="leaks on purpose",
    upgrade="""
        import logging, os
        url = os.environ["REVISOR_DATABASE_URL"]
        password = os.environ["CANARY"]
        print("connecting to", url)
        logging.getLogger("app").warning("url=%s password=%s", url, password)
        op.execute("CREATE TABLE ran (id INTEGER)")
        quoted = password.replace(chr(39), chr(39) * 2)
        raise RuntimeError(f"cannot use {url}; tried ALTER USER x IDENTIFIED BY '{quoted}'")
    """,
)


@dataclass(frozen=True)
class Canary:
    server: MariaDBServer
    database: str
    scripts: Path


@pytest.fixture(scope="module")
def canary(
    mariadb_server: MariaDBServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Canary]:
    database = mariadb_server.create_database("canary")
    with mariadb_server.connect() as conn, conn.cursor() as cur:
        cur.execute("DROP USER IF EXISTS 'canary'@'%'")
        cur.execute("CREATE USER 'canary'@'%'")
        cur.execute(f"GRANT ALL ON `{database}`.* TO 'canary'@'%'")
    project = make_project(tmp_path_factory.mktemp("canary"), [LEAKY])
    yield Canary(mariadb_server, database, project.scripts)
    with mariadb_server.connect() as conn, conn.cursor() as cur:
        cur.execute("DROP USER IF EXISTS 'canary'@'%'")
    mariadb_server.drop_database(database)


def _set_password(canary: Canary, password: str) -> None:
    with canary.server.connect() as conn, conn.cursor() as cur:
        cur.execute("ALTER USER 'canary'@'%%' IDENTIFIED BY %s", (password,))


def _history(canary: Canary) -> str:
    with canary.server.connect(canary.database) as conn, conn.cursor() as cur:
        cur.execute("SHOW TABLES LIKE 'revisor_history'")
        if not cur.fetchall():
            return ""
        cur.execute("SELECT * FROM revisor_history")
        return json.dumps([list(map(str, row)) for row in cur.fetchall()])


def _drop_leftovers(canary: Canary) -> None:
    """The leaky revision's table committed as it ran (no transactional DDL)."""
    with canary.server.connect(canary.database) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS ran")


def _url_env(canary: Canary, password: str) -> dict[str, str]:
    server = canary.server
    url = (
        f"mysql+pymysql://canary:{quote(password, safe='')}@{server.host}:{server.port}/"
        f"{canary.database}"
    )
    return {ENV_DATABASE_URL: url, "CANARY": password, ENV_DATABASE_SOURCE: "Secret ns/db, key url"}


def _leaky_run(canary: Canary, password: str, result: Path) -> str:
    """The leaky revision, run as a Job runs it with the right password."""
    _set_password(canary, password)
    try:
        return _run(
            ["--scripts", str(canary.scripts), "upgrade"], _url_env(canary, password), result
        )
    finally:
        _drop_leftovers(canary)


def _wrong_password_run(canary: Canary, password: str, result: Path) -> str:
    """``current`` with a URL whose password is not the account's."""
    wrong = _url_env(canary, _wrong(password))
    return _run(["--scripts", str(canary.scripts), "current"], wrong, result)


def _wrong(password: str) -> str:
    return password[::-1] + "x"


def _parts(canary: Canary, value: str, pointed: str) -> dict[str, str]:
    """A Secret's parts with the ``pointed`` key pointed at the password's value."""
    parts = {
        ENV_DATABASE_PARTS["driver"]: "mysql+pymysql",
        ENV_DATABASE_PARTS["password"]: value,
        ENV_DATABASE_PARTS["host"]: canary.server.host,
        ENV_DATABASE_PARTS["port"]: str(canary.server.port),
        ENV_DATABASE_PARTS["name"]: canary.database,
        ENV_DATABASE_PARTS["user"]: "canary",
        ENV_DATABASE_SOURCE: "Secret ns/db",
    }
    return {**parts, ENV_DATABASE_PARTS[pointed]: value}


POINTED = ("host", "user", "name", "port")


@pytest.fixture(scope="module")
def baseline(canary: Canary, tmp_path_factory: pytest.TempPathFactory) -> str:
    """What the runs below write with a password unlike anything: the output's own words.

    A random password that is a piece of these ("Partiall" of PartiallyApplied)
    shows up in the output without having leaked; such examples are
    discarded rather than counted as leaks.
    """
    password, where = "Zq8#Xv7!Wk6$", tmp_path_factory.mktemp("baseline")
    texts = [
        _leaky_run(canary, password, where / "leaky.json"),
        _wrong_password_run(canary, password, where / "wrong.json"),
    ]
    for part in POINTED:
        env = _parts(canary, password, part)
        texts.append(_run(["--scripts", str(canary.scripts), "current"], env, where / "p.json"))
    text = "\n".join(texts) + _history(canary)
    return text.replace(password, "").replace(_wrong(password), "")


def _unlike(baseline: str, *values: str) -> bool:
    return not any(form in baseline for value in values for form in _forms(value))


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(password=CREDENTIAL)
def test_a_password_never_leaves_the_engine_whatever_a_revision_does_with_it(
    canary: Canary, baseline: str, tmp_path: Path, password: str
) -> None:
    assume(_unlike(baseline, password, _wrong(password)))
    text = _leaky_run(canary, password, tmp_path / "result.json")
    assert "leaks on purpose" in text, "the revision ran and failed"
    assert "RuntimeError: cannot use mysql+pymysql://" in text
    assert "1eak00000001 is partially applied" in text, "its CREATE TABLE had committed"
    _assert_absent(password, text + _history(canary))
    text = _wrong_password_run(canary, password, tmp_path / "wrong.json")
    assert "Access denied for user" in text and '"exitCode":6' in text
    assert "Secret ns/db, key url" in text, "the database is named by its Secret"
    _assert_absent(_wrong(password), text)
    _assert_absent("canary", text.replace('"CANARY"', ""))
    _assert_absent(canary.database, text)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=CREDENTIAL)
def test_secret_keys_pointed_at_the_password_leak_it_nowhere(
    canary: Canary, baseline: str, tmp_path: Path, value: str
) -> None:
    """hostKey/userKey/databaseKey/portKey all name the password's key: the value stays hidden."""
    assume(_unlike(baseline, value))
    for part in POINTED:
        env = _parts(canary, value, part)
        text = _run(["--scripts", str(canary.scripts), "current"], env, tmp_path / f"{part}.json")
        assert '"exitCode":' in text
        _assert_absent(value, text)
