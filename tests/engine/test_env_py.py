"""``--env-py`` with the env.py files Alembic users really have, sync and async.

The engine hands env.py its locked connection in
``config.attributes["connection"]``. Alembic's cookbook env.py ("connection
sharing", also with asyncio) uses it; Alembic's stock async template
(``alembic init -t async``) ignores it and calls ``asyncio.run()``, which
must be refused with the change to make, never run on a second, unlocked
connection. Once env.py has started the migrations, a failing revision is a
failed step (exit 4) like in hermetic mode, not bad input.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import alembic
import pytest
import sqlalchemy as sa

from tests.engine.conftest import history_rows, tables, version
from tests.support.projects import Project, Rev, chain, make_project, revisor_process

STOCK_ASYNC_ENV_PY = (Path(alembic.__file__).parent / "templates" / "async" / "env.py").read_text()
STOCK_RUN_ONLINE = "    asyncio.run(run_async_migrations())\n"
# Alembic's cookbook, "Programmatic API use (connection sharing) With Asyncio".
COOKBOOK_RUN_ONLINE = """    connectable = config.attributes.get("connection", None)
    if connectable is None:
        asyncio.run(run_async_migrations())
    else:
        do_run_migrations(connectable)
"""
# The ini `alembic init -t async` writes has logging sections; env.py reads them.
LOGGING_INI = """
[loggers]
keys = root
[handlers]
keys = console
[formatters]
keys = generic
[logger_root]
level = WARNING
handlers = console
[handler_console]
class = StreamHandler
args = (sys.stderr,)
formatter = generic
[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""

#: On PostgreSQL, records how many advisory locks the migration's own session holds.
LOCK_PROOF = Rev(
    id="0003p0000000",
    down="0002t0000000",
    message="prove the lock",
    upgrade="""
        if op.get_bind().dialect.name == "postgresql":
            op.execute(
                "CREATE TABLE lock_proof AS SELECT count(*) AS held FROM pg_locks "
                "WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()"
            )
    """,
    downgrade="op.execute('DROP TABLE IF EXISTS lock_proof')",
)

ASYNC_URLS = [
    pytest.param("sqlite+aiosqlite", id="aiosqlite"),
    pytest.param("postgresql+asyncpg", id="asyncpg", marks=pytest.mark.postgres),
]


def async_url(driver: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(async URL for the run, sync URL for the test's own checks)."""
    if driver.startswith("sqlite"):
        path = tmp_path / "app.db"
        return f"{driver}:///{path}", f"sqlite:///{path}"
    sync: str = request.getfixturevalue("pg_url")
    return sync.replace("postgresql+psycopg", driver), sync


def async_project(tmp_path: Path, env_py: str, url: str) -> tuple[Project, Path]:
    project = make_project(tmp_path, [*chain(2), LOCK_PROOF]).with_env_py(env_py)
    return project, project.with_ini(url=url, extra=LOGGING_INI)


def held_locks(sync_url: str) -> int | None:
    if not sync_url.startswith("postgresql"):
        return None
    engine = sa.create_engine(sync_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        held = int(conn.execute(sa.text("SELECT held FROM lock_proof")).scalar_one())
    engine.dispose()
    return held


@pytest.mark.parametrize("driver", ASYNC_URLS)
def test_cookbook_async_env_py_migrates_on_the_locked_connection(
    driver: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The cookbook's async env.py takes the handed connection: progress, history, lock."""
    url, sync_url = async_url(driver, request, tmp_path)
    assert STOCK_RUN_ONLINE in STOCK_ASYNC_ENV_PY
    env_py = STOCK_ASYNC_ENV_PY.replace(STOCK_RUN_ONLINE, COOKBOOK_RUN_ONLINE)
    _project, ini = async_project(tmp_path, env_py, url)
    proc = revisor_process("--config", str(ini), "--env-py", "--output", "json", "upgrade")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert [s["revision"] for s in result["applied"]] == [
        "0001t0000000",
        "0002t0000000",
        "0003p0000000",
    ]
    assert "[3/3] 0003p0000000 prove the lock" in err
    assert version(sync_url) == {"0003p0000000"}
    assert [r["status"] for r in history_rows(sync_url)] == ["succeeded"]
    if sync_url.startswith("postgresql"):
        assert held_locks(sync_url) == 1, "the revision ran on the session holding the lock"


@pytest.mark.parametrize("driver", ASYNC_URLS)
def test_stock_async_template_is_refused_with_the_change_to_make(
    driver: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """``alembic init -t async``'s env.py would open its own connection: exit 2, nothing run."""
    url, sync_url = async_url(driver, request, tmp_path)
    _project, ini = async_project(tmp_path, STOCK_ASYNC_ENV_PY, url)
    proc = revisor_process("--config", str(ini), "--env-py", "--output", "json", "upgrade")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    result = json.loads(out)
    assert result["reason"] == "InvalidScripts"
    assert "env.py starts its own event loop" in result["error"]
    assert "config.attributes.get('connection')" in result["error"]
    assert err.count("error: ") == 1
    assert "never awaited" not in err, "no stray warning after the one message"
    assert version(sync_url) == set()
    assert tables(sync_url) == set(), "a refusal writes nothing, revisor_history included"


def test_cookbook_env_py_with_a_failing_revision_is_exit_4_at_the_last_commit(
    revisor, db_url, tmp_path: Path
) -> None:
    """A revision failing under env.py is a failed step, as in hermetic mode."""
    failing = Rev(
        id="0003f0000000",
        down="0002t0000000",
        message="breaks",
        upgrade="op.execute('SELECT * FROM no_such_table_anywhere')",
    )
    project = make_project(tmp_path, [*chain(2), failing]).with_env_py()
    ini = project.with_ini(url=db_url)
    run = revisor("--config", str(ini), "--env-py", "--output", "json", "upgrade")
    assert run.code == 4, run.err
    assert run.result["reason"] == "MigrationFailed"
    assert "upgrade 0003f0000000 (breaks) failed" in run.result["error"]
    assert "no_such_table_anywhere" in run.result["error"]
    assert [s["revision"] for s in run.result["applied"]] == ["0001t0000000", "0002t0000000"]
    assert version(db_url) == {"0002t0000000"}
    assert history_rows(db_url)[-1]["status"] == "failed"
    steps = history_rows(db_url, "step")
    assert (steps[-1]["revision"], steps[-1]["status"]) == ("0003f0000000", "failed")


def test_an_env_py_that_cannot_load_is_exit_2_naming_env_py(
    revisor, db_url, tmp_path: Path
) -> None:
    project = make_project(tmp_path, chain(1)).with_env_py(
        "import not_a_module_anywhere\nfrom alembic import context\n"
    )
    ini = project.with_ini(url=db_url)
    run = revisor("--config", str(ini), "--env-py", "--output", "json", "upgrade")
    assert run.code == 2
    assert "env.py:1: ModuleNotFoundError while loading env.py" in run.err
    assert version(db_url) == set()
    assert tables(db_url) == set(), "nothing written: no revisor_history either"


@pytest.mark.postgres
def test_env_py_opening_its_own_connection_still_migrates_on_the_locked_one(
    revisor, pg_url, tmp_path: Path
) -> None:
    """Alembic's stock sync env.py connects by itself; its revisions run under the lock."""
    from tests.engine.test_existing_projects import STANDARD_ENV_PY

    project = make_project(tmp_path, [*chain(2), LOCK_PROOF])
    project.with_env_py(STANDARD_ENV_PY.replace("{extra}", ""))
    run = revisor("--config", str(project.with_ini(url=pg_url)), "--env-py", "upgrade")
    assert run.code == 0, run.err
    assert held_locks(pg_url) == 1


# env.py that runs SQL on the handed connection before context.configure(),
# e.g. a tenant's search_path: that statement opens a transaction.
SETUP_SQL = """
if connection.dialect.name == "postgresql":
    connection.execute(sa.text("SELECT set_config('revisor_test.tenant', 'acme', false)"))
else:
    connection.execute(sa.text("SELECT 1"))
"""
ENV_PY_HEAD = """
import sqlalchemy as sa
from alembic import context

connection = context.config.attributes["connection"]
"""
RUN = """
context.configure(connection=connection)
with context.begin_transaction():
    context.run_migrations()
"""
SETUP_LEFT_OPEN = ENV_PY_HEAD + SETUP_SQL + RUN
SETUP_COMMITTED = ENV_PY_HEAD + SETUP_SQL + "connection.commit()\n" + RUN
INSIDE_BEGIN = ENV_PY_HEAD + "with connection.begin():\n" + textwrap.indent(RUN, "    ")

TENANT_PROOF = Rev(
    id="0001s0000000",
    message="record the session's tenant",
    upgrade="""
        if op.get_bind().dialect.name == "postgresql":
            op.execute("CREATE TABLE tenant_proof AS SELECT current_setting('revisor_test.tenant') AS v")
        else:
            op.execute("CREATE TABLE tenant_proof AS SELECT 'acme' AS v")
    """,
    downgrade="op.execute('DROP TABLE tenant_proof')",
)


def tenant_project(tmp_path: Path, env_py: str) -> Project:
    """The tenant proof, t2, then a revision that fails."""
    revs = [TENANT_PROOF, *chain(3)[1:]]
    revs[1] = Rev(id=revs[1].id, down=TENANT_PROOF.id, message="create t2",
                  upgrade=revs[1].upgrade, downgrade=revs[1].downgrade)  # fmt: skip
    revs[2] = Rev(id=revs[2].id, down=revs[1].id, message="breaks",
                  upgrade="op.execute('SELECT * FROM no_such_table')")  # fmt: skip
    return make_project(tmp_path, revs).with_env_py(env_py)


@pytest.mark.parametrize(
    "env_py",
    [pytest.param(SETUP_LEFT_OPEN, id="setup-sql"), pytest.param(INSIDE_BEGIN, id="begin")],
)
def test_env_py_leaving_a_transaction_open_at_configure_is_refused(
    revisor, db_url: str, tmp_path: Path, env_py: str
) -> None:
    """The silent-rollback trap, set by env.py: exit 2 with the fix, nothing run.

    Alembic takes a transaction open at configure() for the caller's and
    commits nothing per revision; before, the failure of revision 3 rolled
    back 1 and 2, which the progress lines and the result had reported as
    applied. Committing it for env.py would drop what it holds (SET LOCAL)
    or close env.py's own ``with connection.begin()``.
    """
    ini = tenant_project(tmp_path, env_py).with_ini(url=db_url)
    run = revisor("--config", str(ini), "--env-py", "--output", "json", "upgrade")
    assert run.code == 2, run.err
    assert run.result["reason"] == "InvalidScripts"
    assert "before context.configure() and left its transaction open" in run.result["error"]
    assert "connection.commit()" in run.result["error"]
    assert run.err.count("error: ") == 1
    assert version(db_url) == set()
    assert tables(db_url) == set(), "nothing written: no revisor_history either"


def test_env_py_that_commits_its_setup_sql_commits_each_revision_in_its_session(
    revisor, db_url: str, tmp_path: Path
) -> None:
    """Alembic's multi-tenancy recipe: settings stay, revisions 1 and 2 stay committed."""
    ini = tenant_project(tmp_path, SETUP_COMMITTED).with_ini(url=db_url)
    run = revisor("--config", str(ini), "--env-py", "--output", "json", "upgrade")
    assert run.code == 4, run.err
    assert [s["revision"] for s in run.result["applied"]] == ["0001s0000000", "0002t0000000"]
    assert version(db_url) == {"0002t0000000"}
    steps = history_rows(db_url, "step")
    assert [(s["revision"], s["status"]) for s in steps] == [
        ("0001s0000000", "applied"), ("0002t0000000", "applied"), ("0003t0000000", "failed"),
    ]  # fmt: skip
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT v FROM tenant_proof")).scalar_one() == "acme"
    engine.dispose()


# Optuna's env.py, in short: it builds its own engine from the ini's [alembic] section
# and says where it connects (to prove what it was given; Revisor's output scrubs it).
ENGINE_FROM_CONFIG_ENV_PY = """
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
print("env.py connects to", config.get_main_option("sqlalchemy.url"))
connectable = engine_from_config(
    config.get_section(config.config_ini_section), prefix="sqlalchemy.", poolclass=pool.NullPool
)
with connectable.connect() as connection:
    context.configure(connection=connection, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
"""


def test_env_py_that_connects_by_the_ini_url_connects_where_revisor_does(
    revisor, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ini's sqlalchemy.url (Optuna's: sqlite:///alembic.db) is Revisor's URL while
    env.py runs: the revisions run on the given database, and no alembic.db appears."""
    project = make_project(tmp_path / "project", chain(2)).with_env_py(ENGINE_FROM_CONFIG_ENV_PY)
    ini = project.with_ini(url="sqlite:///alembic.db")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    run = revisor("--config", str(ini), "--env-py", "--database-url", db_url, "upgrade")
    assert run.code == 0, run.err
    assert version(db_url) == {"0002t0000000"}
    assert list(work.iterdir()) == [], "env.py opened no database of its own"
    assert "env.py connects to sqlite:///alembic.db" not in run.err
    assert "env.py connects to " in run.err
    assert "sqlalchemy.url = sqlite:///alembic.db" in ini.read_text(), "the ini is not written"


@pytest.mark.postgres
def test_a_password_with_percent_signs_reaches_env_py_whole_and_is_never_shown(
    revisor, postgres_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """configparser reads '%' as interpolation: Revisor escapes it, and env.py's print of
    the URL shows no password (raw or URL-encoded)."""
    from urllib.parse import quote

    database = postgres_server.create_database("pct")
    password = "p%ss@w:rd%(x)s%%"
    admin = sa.create_engine(postgres_server.url(database), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("DROP ROLE IF EXISTS percent_user"))
        conn.execute(sa.text("CREATE ROLE percent_user LOGIN PASSWORD 'p%ss@w\\:rd%(x)s%%'"))
        conn.execute(sa.text("GRANT ALL ON SCHEMA public TO percent_user"))
    admin.dispose()
    url = (
        f"postgresql+psycopg://percent_user:{quote(password, safe='')}@"
        f"{postgres_server.host}:{postgres_server.port}/{database}"
    )
    project = make_project(tmp_path, chain(2)).with_env_py(ENGINE_FROM_CONFIG_ENV_PY)
    ini = project.with_ini(url="sqlite:///alembic.db")
    monkeypatch.chdir(tmp_path)
    run = revisor(
        "--config", str(ini), "--env-py", "--database-url", url, "--output", "json", "upgrade"
    )
    assert run.code == 0, run.err
    assert run.result["to"] == ["0002t0000000"]
    assert "env.py connects to postgresql+psycopg://percent_user:***@" in run.err
    for form in (password, quote(password, safe=""), password.replace("%", "%%")):
        assert form not in run.out + run.err
    postgres_server.drop_database(database)


# Prefect's env.py, in short: it hands its migrations to AnyIO, from the worker thread
# its server calls Alembic in, and opens its own engine there.
ANYIO_WORKER_ENV_PY = """
from alembic import context
from anyio.from_thread import run

async def apply_migrations():
    raise AssertionError("never reached: there is no event loop to run it in")

run(apply_migrations)
"""
# The same expectation in asyncio's words.
RUNNING_LOOP_ENV_PY = """
import asyncio
from alembic import context

asyncio.get_running_loop()
"""


@pytest.mark.parametrize(
    ("env_py", "said"),
    [
        pytest.param(ANYIO_WORKER_ENV_PY, "NoEventLoopError: Not running inside an AnyIO worker",
                     id="anyio-worker-thread"),
        pytest.param(RUNNING_LOOP_ENV_PY, "RuntimeError: no running event loop", id="asyncio"),
    ],
)  # fmt: skip
def test_env_py_written_for_its_projects_event_loop_is_refused_with_what_to_do(
    revisor, db_url: str, tmp_path: Path, env_py: str, said: str
) -> None:
    """Not 'fix the script': the script is fine where its project runs it. Exit 2, the two
    ways forward (hermetic with --metadata, or the handed connection), nothing written."""
    ini = make_project(tmp_path, chain(2)).with_env_py(env_py).with_ini(url=db_url)
    run = revisor("--config", str(ini), "--env-py", "--output", "json", "upgrade")
    assert run.code == 2, run.err
    result = run.result
    assert result["reason"] == "InvalidScripts"
    error = result["error"]
    assert "env.py reaches for an event loop it was written to be called from" in error
    assert said in error
    assert "env.py:" in error.split(": env.py reaches")[0], "the line of env.py"
    assert "fix the script" not in error
    assert "run without --env-py: --metadata MOD:ATTR" in error
    assert "config.attributes['connection']" in error
    assert run.err.count("error: ") == 1
    assert "never awaited" not in run.err
    assert tables(db_url) == set(), "nothing written: no revisor_history either"


def test_a_refusal_on_a_database_with_history_leaves_its_rows_as_they_were(
    revisor, db_url: str, tmp_path: Path
) -> None:
    """The run row a refused run wrote is taken back; the rows of earlier runs stay."""
    project = make_project(tmp_path, chain(2))
    assert revisor(*project.args(), "--database-url", db_url, "upgrade", "0001t0000000").code == 0
    before = history_rows(db_url)
    ini = project.with_env_py(RUNNING_LOOP_ENV_PY).with_ini(url=db_url)
    run = revisor("--config", str(ini), "--env-py", "upgrade")
    assert run.code == 2, run.err
    assert history_rows(db_url) == before
    assert version(db_url) == {"0001t0000000"}


def test_a_stamp_that_env_py_refuses_stamps_nothing_and_writes_nothing(
    revisor, db_url: str, tmp_path: Path
) -> None:
    ini = make_project(tmp_path, chain(2)).with_env_py(RUNNING_LOOP_ENV_PY).with_ini(url=db_url)
    run = revisor("--config", str(ini), "--env-py", "stamp", "head")
    assert run.code == 2, run.err
    assert run.err.count("error: ") == 1
    assert tables(db_url) == set()
