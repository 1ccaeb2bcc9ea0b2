"""MySQL/MariaDB as a dialect of the engine: URLs, drivers, commands, session settings.

On the suite's real MariaDB 10.11 server. What only a server without
transactional DDL does (partial application) is in test_mysql_failures.py,
the lock in test_mysql_locking.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from revisor.connection import resolve_database
from revisor.contract import ENV_DATABASE_PARTS, ENV_DATABASE_SOURCE
from revisor.dialects import support_for
from revisor.dialects.mysql import MysqlSupport
from revisor.errors import BadInput
from sqlalchemy.engine import make_url

from tests.engine.conftest import history_rows, tables, version
from tests.support.mariadb import MariaDBServer
from tests.support.projects import Rev, chain, make_project


def _driver(url: str, driver: str) -> str:
    return make_url(url).set(drivername=driver).render_as_string(hide_password=False)


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("mysql://app@db:3306/shop", "mysql+pymysql"),
        ("mariadb://app@db/shop", "mariadb+pymysql"),
        ("mysql+aiomysql://app@db/shop", "mysql+aiomysql"),
        ("mariadb+pymysql://app@db/shop", "mariadb+pymysql"),
    ],
)
def test_bare_mysql_and_mariadb_urls_mean_pymysql(given: str, driver: str) -> None:
    """As a bare postgresql:// means psycopg 3: the driver Revisor ships, not mysqlclient."""
    db = resolve_database(url=given)
    assert db.url.drivername == driver
    assert isinstance(support_for(db), MysqlSupport)
    assert db.is_async == driver.endswith("aiomysql")


def test_an_unsupported_database_is_refused_naming_the_supported_ones() -> None:
    with pytest.raises(BadInput) as refused:
        support_for(resolve_database(url="mssql+pyodbc://app:pw@db/shop"))
    assert "the 'mssql' database is not supported" in str(refused.value)
    assert "PostgreSQL, MySQL, MariaDB and SQLite" in str(refused.value)


@pytest.mark.mariadb
def test_every_command_on_mariadb(revisor, mysql_url: str, tmp_path: Path) -> None:
    """upgrade, current, history, verify, downgrade, stamp: the whole life of a schema."""
    project = make_project(tmp_path, chain(3))
    args = (*project.args(), "--database-url", mysql_url, "--output", "json")
    planned = revisor(*args, "plan")
    assert planned.code == 0 and len(planned.result["plan"]) == 3
    assert version(mysql_url) == set() and not tables(mysql_url), "plan changes nothing"
    run = revisor(*args, "upgrade")
    assert run.code == 0, run.err
    assert [s["revision"] for s in run.result["applied"]] == [r.id for r in chain(3)]
    assert {"t1", "t2", "t3", "revisor_history"} <= tables(mysql_url)
    assert version(mysql_url) == {"0003t0000000"}
    assert revisor(*args, "current").result["to"] == ["0003t0000000"]
    listed = revisor(*args, "history", ":current")
    assert [s["revision"] for s in listed.result["plan"]] == [r.id for r in chain(3)][::-1]
    assert revisor(*args, "verify").code == 0
    runs = revisor(*project.args(), "--database-url", mysql_url, "history", "--runs")
    assert runs.code == 0 and "succeeded" in runs.out
    down = revisor(*args, "downgrade", "-2")
    assert down.code == 0, down.err
    assert version(mysql_url) == {"0001t0000000"}
    assert "t2" not in tables(mysql_url) and "t1" in tables(mysql_url)
    stamped = revisor(*args, "stamp", "head")
    assert stamped.code == 0, stamped.err
    assert version(mysql_url) == {"0003t0000000"} and "t3" not in tables(mysql_url)
    assert [r["status"] for r in history_rows(mysql_url)] == ["succeeded"] * 3
    steps = history_rows(mysql_url, "step")
    assert all(s["finished_at"] > s["started_at"] for s in steps), "microseconds are kept"


@pytest.mark.mariadb
@pytest.mark.parametrize("driver", ["mariadb+pymysql", "mysql", "mysql+aiomysql"])
def test_other_spellings_and_the_async_driver_migrate_too(
    revisor, mysql_url: str, tmp_path: Path, driver: str
) -> None:
    """``mysql+aiomysql`` runs through SQLAlchemy's async engine, as asyncpg does."""
    project = make_project(tmp_path, chain(2))
    url = _driver(mysql_url, driver)
    run = revisor(*project.args(), "--database-url", url, "--output", "json", "upgrade")
    assert run.code == 0, run.err
    assert version(mysql_url) == {"0002t0000000"}
    down = revisor(*project.args(), "--database-url", url, "downgrade", "base")
    assert down.code == 0, down.err
    assert version(mysql_url) == set()
    assert [r["status"] for r in history_rows(mysql_url)] == ["succeeded", "succeeded"]


#: Airflow's 5f2621c13b39 sends a procedure, its CALL and its DROP in one execute(),
#: which mysqlclient (Airflow's driver) allows by default and PyMySQL only when asked.
SEVERAL_IN_ONE = Rev(
    id="0003s0000000",
    down="0002t0000000",
    message="several statements in one execute",
    upgrade='''
        op.execute("""
            CREATE PROCEDURE make_several() BEGIN
                IF NOT EXISTS (SELECT 1 FROM information_schema.TABLES
                               WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'several') THEN
                    CREATE TABLE several (id INTEGER PRIMARY KEY);
                END IF;
            END;
            CALL make_several();
            DROP PROCEDURE make_several;
        """)
    ''',
    downgrade="op.execute('DROP TABLE several; DROP TABLE IF EXISTS never_made')",
)


@pytest.mark.mariadb
@pytest.mark.parametrize("driver", ["mysql+pymysql", "mysql+aiomysql"])
def test_a_revision_may_send_several_statements_in_one_execute(
    revisor, mysql_url: str, tmp_path: Path, driver: str
) -> None:
    """As with mysqlclient: up and down run every statement of the text."""
    project = make_project(tmp_path, [*chain(2), SEVERAL_IN_ONE])
    args = (*project.args(), "--database-url", _driver(mysql_url, driver))
    up = revisor(*args, "upgrade")
    assert up.code == 0, up.err
    assert "several" in tables(mysql_url)
    assert version(mysql_url) == {"0003s0000000"}
    down = revisor(*args, "downgrade", "0002t0000000")
    assert down.code == 0, down.err
    assert "several" not in tables(mysql_url)


@pytest.mark.mariadb
@pytest.mark.parametrize("driver", ["mysql+pymysql", "mysql+aiomysql"])
def test_a_failure_in_the_second_of_several_statements_fails_the_step(
    revisor, mysql_url: str, tmp_path: Path, driver: str
) -> None:
    """The error of a statement after the first is the step's, not lost while draining."""
    broken = Rev(
        id="0003b0000000",
        down="0002t0000000",
        message="second statement breaks",
        upgrade="op.execute('CREATE TABLE first_one (id INTEGER); SELECT * FROM nowhere_at_all')",
    )
    project = make_project(tmp_path, [*chain(2), broken])
    url = _driver(mysql_url, driver)
    run = revisor(*project.args(), "--database-url", url, "--output", "json", "upgrade")
    assert run.code == 8, run.err
    assert "nowhere_at_all' doesn't exist" in run.result["error"]
    assert run.result["details"]["partiallyApplied"]["revision"] == "0003b0000000"
    assert version(mysql_url) == {"0002t0000000"}


@pytest.mark.mariadb
def test_a_database_given_in_parts_with_the_driver_variable(
    revisor, mariadb_server: MariaDBServer, mysql_url: str, tmp_path: Path, monkeypatch
) -> None:
    """What a Secret with host/port/name/user/password keys gives a Job."""
    project = make_project(tmp_path, chain(1))
    url = make_url(mysql_url)
    for part, value in {
        "driver": "mysql+pymysql",
        "host": mariadb_server.host,
        "port": str(mariadb_server.port),
        "name": url.database,
        "user": mariadb_server.user,
        "password": mariadb_server.password,
    }.items():
        monkeypatch.setenv(ENV_DATABASE_PARTS[part], str(value))
    monkeypatch.setenv(ENV_DATABASE_SOURCE, "Secret shop/shop-db")
    run = revisor(*project.args(), "upgrade")
    assert run.code == 0, run.err
    assert version(mysql_url) == {"0001t0000000"}
    monkeypatch.setenv(ENV_DATABASE_PARTS["password"], "not-the-password")
    refused = revisor(*project.args(), "current")
    assert refused.code == 6
    assert "the mysql+pymysql database of Secret shop/shop-db" in refused.err
    assert mariadb_server.host not in refused.err and str(url.database) not in refused.err


#: Records, from inside a revision, the session settings and the socket of
#: the migration's own connection.
SESSION_PROBE = Rev(
    id="5e5500000001",
    message="record the session",
    upgrade="""
        import socket

        bind = op.get_bind()
        names = ("lock_wait_timeout", "innodb_lock_wait_timeout", "max_statement_time",
                 "wait_timeout", "net_read_timeout", "net_write_timeout")
        row = bind.exec_driver_sql(
            "SELECT " + ", ".join(f"@@session.{name}" for name in names)
        ).one()
        raw = bind.connection.driver_connection
        writer = getattr(raw, "_writer", None)  # aiomysql; PyMySQL keeps _sock
        sock = writer.get_extra_info("socket") if writer is not None else raw._sock
        keepalive = [1 if sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) else 0] + [
            sock.getsockopt(socket.IPPROTO_TCP, option)
            for option in (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT)
        ]
        op.create_table("seen", sa.Column("name", sa.String(40)), sa.Column("value", sa.String(40)))
        values = [*zip(names, map(str, row)), ("program_name", raw._connect_attrs["program_name"]),
                  ("keepalive", ",".join(map(str, keepalive)))]
        op.bulk_insert(sa.table("seen", sa.column("name"), sa.column("value")),
                       [{"name": n, "value": v} for n, v in values])
    """,
    downgrade="op.drop_table('seen')",
)


def _seen(url: str) -> dict[str, str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        seen: dict[object, object] = {
            row[0]: row[1] for row in conn.execute(sa.text("SELECT name, value FROM seen"))
        }
    engine.dispose()
    return {str(k): str(v) for k, v in seen.items()}


@pytest.mark.mariadb
@pytest.mark.parametrize("driver", ["mysql+pymysql", "mysql+aiomysql"])
def test_the_timeouts_and_keepalives_of_the_migration_connection(
    revisor, mysql_url: str, tmp_path: Path, driver: str
) -> None:
    """Read from inside a revision, so it is the locked connection itself.

    --ddl-lock-timeout in whole seconds, rounded up; --statement-timeout as
    MariaDB's fractional max_statement_time; idle and network timeouts
    raised so a long revision keeps its session (and lock); the socket's
    keepalives as for psycopg; the connection names itself "revisor".
    """
    project = make_project(tmp_path, [SESSION_PROBE])
    url = _driver(mysql_url, driver)
    args = (*project.args(), "--database-url", url)
    run = revisor(*args, "upgrade", "--ddl-lock-timeout", "1500ms", "--statement-timeout", "2.5")
    assert run.code == 0, run.err
    seen = _seen(mysql_url)
    assert seen["lock_wait_timeout"] == "2" and seen["innodb_lock_wait_timeout"] == "2"
    assert float(seen["max_statement_time"]) == 2.5
    assert int(seen["wait_timeout"]) >= 28_800
    assert int(seen["net_read_timeout"]) >= 600 and int(seen["net_write_timeout"]) >= 600
    assert seen["program_name"] == "revisor"
    assert seen["keepalive"] == "1,30,10,3", (
        "SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT"
    )
    assert revisor(*args, "downgrade", "base").code == 0
    assert revisor(*args, "upgrade").code == 0
    unbounded = _seen(mysql_url)
    assert unbounded["lock_wait_timeout"] == "31536000", "no limit, whatever the server says"
    assert float(unbounded["max_statement_time"]) == 0
    assert unbounded["innodb_lock_wait_timeout"] == "50", "the server's own, for DML"


@pytest.mark.mariadb
def test_a_short_wait_timeout_on_the_server_does_not_end_a_long_revision(
    revisor, mariadb_server: MariaDBServer, mysql_url: str, tmp_path: Path
) -> None:
    """A server that drops idle sessions after 1 s: a revision idle for 2.5 s keeps its lock."""
    revs = [
        Rev(id="1d1e00000001", message="idle a while",
            upgrade="time.sleep(2.5)\nop.create_table('after', sa.Column('id', sa.Integer))"),
    ]  # fmt: skip
    project = make_project(tmp_path, revs)
    with mariadb_server.connect() as admin, admin.cursor() as cur:
        cur.execute("SELECT @@global.wait_timeout")
        (before,) = cur.fetchone()
        cur.execute("SET GLOBAL wait_timeout = 1")
        try:
            run = revisor(*project.args(), "--database-url", mysql_url, "upgrade")
        finally:
            cur.execute("SET GLOBAL wait_timeout = %s", (before,))
    assert run.code == 0, run.err
    assert version(mysql_url) == {"1d1e00000001"}


@pytest.mark.mariadb
def test_plan_and_offline_sql_for_mysql_and_mariadb(
    revisor, mysql_url: str, tmp_path: Path
) -> None:
    project = make_project(tmp_path, chain(2))
    plan = revisor(*project.args(), "--database-url", mysql_url, "plan")
    assert plan.code == 0 and "upgrade from base to head, 2 step(s)" in plan.out
    for dialect in ("mysql", "mariadb"):
        sql = revisor(*project.args(), "sql", "base:head", "--dialect", dialect)
        assert sql.code == 0, sql.err
        assert "CREATE TABLE t1 (" in sql.out and "AUTO_INCREMENT" in sql.out
        assert "INSERT INTO alembic_version (version_num) VALUES ('0001t0000000')" in sql.out


@pytest.mark.mariadb
@pytest.mark.parametrize(
    ("flag", "said"),
    [
        (
            "--dry-run",
            (
                "--dry-run cannot be rolled back on MySQL: each DDL statement commits as it runs",
                "revisor sql base:head --dialect mysql",
            ),
        ),
        (
            "--single-transaction",
            (
                "--single-transaction cannot be all or nothing on MySQL",
                "one transaction per revision",
            ),
        ),
    ],
)
def test_runs_that_promise_to_undo_everything_are_refused(
    revisor, mysql_url: str, tmp_path: Path, flag: str, said: tuple[str, str]
) -> None:
    """Without transactional DDL neither promise can be kept: exit 2, nothing written."""
    project = make_project(tmp_path, chain(2))
    run = revisor(*project.args(), "--database-url", mysql_url, "--output", "json", "upgrade", flag)
    assert run.code == 2
    assert all(part in run.err for part in said) and "nothing was run" in run.err
    assert run.err.count("error: ") == 1
    assert len(run.result["plan"]) == 2, "the result says what would have run"
    assert not tables(mysql_url)


def test_the_help_says_what_differs_on_mysql(capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 8 in the epilog; MySQL's statement timeout bounds SELECT only."""
    from revisor.cli import main

    for argv in (["--help"], ["upgrade", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
    text = " ".join(capsys.readouterr().out.split())
    assert "8 partially applied (MySQL/MariaDB: a failed revision's DDL had committed" in text
    assert "MySQL max_execution_time, which bounds SELECT only" in text
    assert "lock_wait_timeout and innodb_lock_wait_timeout, in whole seconds, at least 1" in text


@pytest.mark.mariadb
@pytest.mark.parametrize("driver", ["mysql+pymysql", "mysql+aiomysql"])
def test_a_wrong_password_or_a_closed_port_is_exit_6_on_either_driver(
    revisor, mysql_url: str, tmp_path: Path, driver: str
) -> None:
    from tests.support.postgres import free_port

    project = make_project(tmp_path, chain(1))
    wrong = make_url(mysql_url).set(drivername=driver, password="Wrong-Pw-5c1e")
    run = revisor(*project.args(), "--database-url", wrong.render_as_string(False), "upgrade")
    assert run.code == 6, run.err
    assert "Access denied for user" in run.err and "Wrong-Pw-5c1e" not in run.err + run.out
    closed = wrong.set(port=free_port()).render_as_string(hide_password=False)
    run = revisor(*project.args(), "--database-url", closed, "upgrade")
    assert run.code == 6, run.err
    assert f"cannot connect to {driver}://revisor:***@127.0.0.1:" in run.err
    assert "Can't connect to MySQL server" in run.err
