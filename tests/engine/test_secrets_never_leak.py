"""Property: a password (or any part of a connection that came from a Secret) never leaves the engine.

Random credentials — every printable character, spaces, ``@``, ``:``, ``/``,
quotes and ``%`` included — are given to a real PostgreSQL role, and the
engine runs as a Job would: the URL in ``REVISOR_DATABASE_URL`` (from a
Secret), JSON logs, the result document in a file. A revision then does the
worst a user's code can: prints the URL, logs it, and raises with it and
with the password as a SQL literal. Neither the raw value nor its
URL-encoded or quoted forms may appear on stdout, stderr, in the result, or
in any column of ``revisor_history``. The same holds when a Secret's keys
point the host or the user at the password (the key-pointing attack), and
for a wrong password.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import sqlalchemy as sa
import structlog
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from revisor.cli import main
from revisor.contract import ENV_DATABASE_PARTS, ENV_DATABASE_SOURCE, ENV_DATABASE_URL
from revisor.redaction import forget_secrets

from tests.support.postgres import PostgresServer
from tests.support.projects import Rev, make_project

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

#: Printable ASCII, space included; long enough that a chance match elsewhere
#: in the output is not mistaken for a leak.
CREDENTIAL = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=8, max_size=40
).filter(lambda s: s.strip() == s and "\\" not in s)

LEAKY = Rev(
    id="1eak00000001",
    message="leaks on purpose",
    upgrade="""
        import logging, os
        url = os.environ["REVISOR_DATABASE_URL"]
        password = os.environ["CANARY"]
        print("connecting to", url)
        logging.getLogger("app").warning("url=%s password=%s", url, password)
        raise RuntimeError(f"cannot use {url}; tried ALTER ROLE x PASSWORD '{password.replace(chr(39), chr(39) * 2)}'")
    """,
)


@dataclass(frozen=True)
class Canary:
    server: PostgresServer
    database: str
    scripts: Path


@pytest.fixture(scope="module")
def canary(postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Canary:
    database = postgres_server.create_database("canary")
    engine = sa.create_engine(postgres_server.url(database), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text("DROP ROLE IF EXISTS canary_leak"))
        conn.execute(sa.text("CREATE ROLE canary_leak LOGIN"))
        conn.execute(sa.text(f'GRANT ALL ON DATABASE "{database}" TO canary_leak'))
        conn.execute(sa.text("GRANT ALL ON SCHEMA public TO canary_leak"))
    engine.dispose()
    project = make_project(tmp_path_factory.mktemp("canary"), [LEAKY])
    return Canary(postgres_server, database, project.scripts)


def _set_password(canary: Canary, password: str) -> None:
    engine = sa.create_engine(canary.server.url(canary.database), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        # A colon escaped: in text() ":word" is a bind parameter (a password ":0000000").
        literal = password.replace("'", "''").replace(":", "\\:")
        conn.execute(sa.text(f"ALTER ROLE canary_leak PASSWORD '{literal}'"))
    engine.dispose()


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _run(args: list[str], env: dict[str, str], result_file: Path) -> str:
    """The CLI in-process as a Job runs it; everything it wrote, in one text."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with _environment(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main([*args, "--output", "json", "--log-format", "json",
                  "--result-file", str(result_file)])  # fmt: skip
    finally:
        forget_secrets()
        structlog.reset_defaults()
    return "\n".join((out.getvalue(), err.getvalue(), result_file.read_text()))


def _history(canary: Canary) -> str:
    engine = sa.create_engine(canary.server.url(canary.database), poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("revisor_history"):
            return ""
        rows = conn.execute(sa.text("SELECT * FROM revisor_history")).all()
    engine.dispose()
    return json.dumps([list(map(str, row)) for row in rows])


def _forms(value: str) -> set[str]:
    return {value, quote(value, safe=""), quote_plus(value), value.replace("'", "''")}


def _assert_absent(value: str, text: str) -> None:
    for form in _forms(value):
        assert form not in text, f"{form!r} leaked"


@pytest.fixture(scope="module")
def baseline(canary: Canary, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Everything a run writes with a password unlike anything: the output's own words.

    A random password that is a piece of these ("Migratio" of MigrationFailed)
    shows up in any run's output without having leaked; such examples are
    discarded rather than counted as leaks.
    """
    password = "Zq8#Xv7!Wk6$"
    _set_password(canary, password)
    text = _run(
        ["--scripts", str(canary.scripts), "upgrade"],
        _url_env(canary, password),
        tmp_path_factory.mktemp("baseline") / "result.json",
    )
    return text.replace(password, "") + _history(canary)


def _url_env(canary: Canary, password: str) -> dict[str, str]:
    server = canary.server
    url = (
        f"postgresql+psycopg://canary_leak:{quote(password, safe='')}@{server.host}:{server.port}/"
        f"{canary.database}"
    )
    return {ENV_DATABASE_URL: url, "CANARY": password, ENV_DATABASE_SOURCE: "Secret ns/db, key url"}


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(password=CREDENTIAL)
def test_a_password_never_leaves_the_engine_whatever_a_revision_does_with_it(
    canary: Canary, baseline: str, tmp_path: Path, password: str
) -> None:
    assume(not any(form in baseline for form in _forms(password)))
    _set_password(canary, password)
    env = _url_env(canary, password)
    url = env[ENV_DATABASE_URL]
    text = _run(["--scripts", str(canary.scripts), "upgrade"], env, tmp_path / "result.json")
    assert "leaks on purpose" in text, "the revision ran and failed"
    assert "RuntimeError: cannot use postgresql+psycopg://" in text
    _assert_absent(password, text + _history(canary))
    wrong = url.replace(quote(password, safe=""), quote(password[::-1] + "x", safe=""))
    text = _run(
        ["--scripts", str(canary.scripts), "current"],
        {**env, ENV_DATABASE_URL: wrong},
        tmp_path / "wrong.json",
    )
    assert "password authentication failed" in text
    assert "Secret ns/db, key url" in text, "the database is named by its Secret"
    _assert_absent(password[::-1] + "x", text)
    _assert_absent("canary", text.replace('"CANARY"', ""))


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=CREDENTIAL)
def test_secret_keys_pointed_at_the_password_leak_it_nowhere(
    canary: Canary, baseline: str, tmp_path: Path, value: str
) -> None:
    """hostKey/userKey/databaseKey/portKey all name the password's key: the value stays hidden."""
    assume(not any(form in baseline for form in _forms(value)))
    base = {
        ENV_DATABASE_PARTS["password"]: value,
        ENV_DATABASE_PARTS["host"]: canary.server.host,
        ENV_DATABASE_PARTS["port"]: str(canary.server.port),
        ENV_DATABASE_PARTS["name"]: canary.database,
        ENV_DATABASE_PARTS["user"]: "canary_leak",
        ENV_DATABASE_SOURCE: "Secret ns/db",
    }
    for part in ("host", "user", "name", "port"):
        env = {**base, ENV_DATABASE_PARTS[part]: value}
        text = _run(["--scripts", str(canary.scripts), "current"], env, tmp_path / f"{part}.json")
        assert '"exitCode":' in text
        _assert_absent(value, text)


#: An env.py that connects by itself from the ini (Optuna's way), and shows what it got:
#: Revisor sets the ini's sqlalchemy.url to its own URL, password and all, while it runs.
ENV_PY_FROM_THE_INI = """
import logging
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
url = config.get_main_option("sqlalchemy.url")
print("env.py connects to", url)
logging.getLogger("env").warning("sqlalchemy.url=%s section=%s", url,
                                 config.get_section(config.config_ini_section))
connectable = engine_from_config(
    config.get_section(config.config_ini_section), prefix="sqlalchemy.", poolclass=pool.NullPool
)
with connectable.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
"""


@pytest.fixture(scope="module")
def env_py_ini(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The leaky revision under ENV_PY_FROM_THE_INI, with an ini that names another database."""
    project = make_project(tmp_path_factory.mktemp("env-py"), [LEAKY])
    project.with_env_py(ENV_PY_FROM_THE_INI)
    return project.with_ini(url="sqlite:///alembic.db")


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(password=CREDENTIAL)
def test_the_url_env_py_is_handed_in_the_ini_shows_no_password(
    canary: Canary, baseline: str, env_py_ini: Path, tmp_path: Path, password: str
) -> None:
    """--env-py: whatever the password (``%`` included, which configparser would read as
    interpolation), env.py connects with it through the ini, and prints and logs only its mask."""
    assume(not any(form in baseline for form in _forms(password)))
    _set_password(canary, password)
    with contextlib.chdir(tmp_path):
        text = _run(
            ["--config", str(env_py_ini), "--env-py", "upgrade"],
            _url_env(canary, password),
            tmp_path / "result.json",
        )
    assert "env.py connects to postgresql+psycopg://***:***@***:" in text, "a Secret: all masked"
    assert "leaks on purpose" in text, "env.py connected with the password: the revision ran"
    assert not (tmp_path / "alembic.db").exists()
    _assert_absent(password, text + _history(canary))
    _assert_absent(password.replace("%", "%%"), text)


def test_short_secrets_are_masked_as_words_only() -> None:
    """A 3-letter user is masked where it stands alone, not inside other words."""
    from revisor.contract import redact

    assert redact("user app at host db: application failed", ["app"]) == (
        "user *** at host db: application failed"
    )


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://app:p@ss w0rd@db:5432/shop",
        "host=db password='a b c d' user=app",
        'dsn: password="a b c d"',
        "{'password': 'hunter2hunter2'}",
        "ALTER ROLE app WITH PASSWORD 'x''y z'",
        "mysql://root:S3cr%3At@db/x?%70assword=S3cr3t",
        "sslpassword=hunter2hunter2 sslmode=verify-full",
    ],
)
def test_credentials_nobody_registered_are_masked_by_their_shape(text: str) -> None:
    from revisor.contract import redact

    masked = redact(text)
    for secret in ("p@ss w0rd", "a b c d", "hunter2hunter2", "x''y z", "S3cr%3At", "S3cr3t"):
        assert secret not in masked
    assert "***" in masked


def test_a_password_as_sqlalchemy_renders_it_is_masked_even_beside_masked_parts() -> None:
    """SQLAlchemy quotes a URL's password its own way (":" encoded, "+" and spaces not);
    found by the env.py property test: with the user and host (Secret parts) masked first,
    the URL no longer had a host's shape, and the password passed as typed."""
    from revisor.contract import redact
    from sqlalchemy.engine import URL

    password = "000000:+ x"
    url = URL.create(
        "postgresql+psycopg", username="canary", password=password, host="db.internal"
    ).render_as_string(hide_password=False)
    assert "000000%3A+ x" in url
    assert "000000%3A+ x" not in redact(url, [password])
    masked = redact(url.replace("000000%3A+ x", "s3cr%3At"), ["canary", "db.internal"])
    assert masked == "postgresql+psycopg://***:***@***", "the URL's shape, with its host masked"


def test_the_leaky_revision_is_what_the_tests_say() -> None:
    """Guard: the revision above really prints, logs and raises with the URL."""
    source = textwrap.dedent(LEAKY.upgrade)
    assert "print(" in source and "logging" in source and "raise RuntimeError" in source
