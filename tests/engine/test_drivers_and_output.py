"""Async drivers, output formats, and secrets that never leave the process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.engine.conftest import version
from tests.support.projects import Rev, chain, make_project, revisor_process

CANARY = "Canary-Pw-7f3a9c"


@pytest.mark.postgres
def test_asyncpg_url_runs_through_the_async_engine(revisor, pg_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(2))
    url = pg_url.replace("postgresql+psycopg", "postgresql+asyncpg")
    run = revisor(*project.args(), "--database-url", url, "--output", "json", "upgrade")
    assert run.code == 0, run.err
    assert version(pg_url) == {"0002t0000000"}
    assert len(run.result["applied"]) == 2
    assert revisor(*project.args(), "--database-url", url, "downgrade", "base").code == 0
    assert version(pg_url) == set()


def test_aiosqlite_url_runs_through_the_async_engine(revisor, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(2))
    db = tmp_path / "async.db"
    run = revisor(*project.args(), "--database-url", f"sqlite+aiosqlite:///{db}", "upgrade")
    assert run.code == 0, run.err
    assert version(f"sqlite:///{db}") == {"0002t0000000"}


#: Records, from inside a revision, the keepalives of the migration's own connection.
KEEPALIVE_PROBE = Rev(
    id="aaaa00000001",
    message="record keepalives",
    upgrade="""
        import os
        import socket

        op.execute(
            "CREATE TABLE server_seen AS SELECT name, setting FROM pg_settings WHERE name IN "
            "('tcp_keepalives_idle', 'tcp_keepalives_interval', 'tcp_keepalives_count', "
            "'application_name')"
        )
        raw = op.get_bind().connection.driver_connection
        transport = getattr(raw, "_transport", None)  # asyncpg; psycopg has fileno()
        sock = (
            transport.get_extra_info("socket")
            if transport is not None
            else socket.socket(fileno=os.dup(raw.fileno()))
        )
        values = [1 if sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) else 0] + [
            sock.getsockopt(socket.IPPROTO_TCP, option)
            for option in (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT)
        ]
        if transport is None:
            sock.close()
        op.execute(
            "CREATE TABLE client_seen AS SELECT "
            + ", ".join(f"{value} AS v{i}" for i, value in enumerate(values))
        )
    """,
)


@pytest.mark.postgres
@pytest.mark.parametrize("driver", ["psycopg", "psycopg_async", "asyncpg"])
def test_the_migration_connection_has_keepalives_on_both_ends(
    revisor, pg_url, tmp_path: Path, driver: str
) -> None:
    """Server side frees the lock of a vanished runner; client side notices a vanished server.

    Read from inside a revision, so it is the locked connection itself, for
    every PostgreSQL driver (asyncpg is not libpq and gets them another way).
    """
    import sqlalchemy as sa

    project = make_project(tmp_path, [KEEPALIVE_PROBE])
    url = pg_url.replace("postgresql+psycopg", f"postgresql+{driver}")
    run = revisor(*project.args(), "--database-url", url, "upgrade")
    assert run.code == 0, run.err
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        server: dict[str, str] = dict(
            conn.execute(sa.text("SELECT name, setting FROM server_seen")).all()
        )
        client = tuple(conn.execute(sa.text("SELECT * FROM client_seen")).one())
    engine.dispose()
    assert server == {
        "application_name": "revisor",
        "tcp_keepalives_idle": "30",
        "tcp_keepalives_interval": "10",
        "tcp_keepalives_count": "3",
    }
    assert client == (1, 30, 10, 3), "SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT"


def test_json_log_lines_on_stderr(revisor, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(2))
    run = revisor(
        *project.args(),
        "--database-url",
        f"sqlite:///{tmp_path / 'x.db'}",
        "--log-format",
        "json",
        "upgrade",
    )
    assert run.code == 0
    events = [json.loads(line) for line in run.err.splitlines()]
    applied = [e for e in events if e["event"] == "step.applied"]
    assert [e["revision"] for e in applied] == ["0001t0000000", "0002t0000000"]
    assert all("timestamp" in e and e["level"] == "info" for e in events)


def test_result_file_gets_the_same_document(revisor, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(1))
    result_file = tmp_path / "termination-log"
    run = revisor(
        *project.args(),
        "--database-url",
        f"sqlite:///{tmp_path / 'x.db'}",
        "--result-file",
        str(result_file),
        "--output",
        "json",
        "upgrade",
    )
    assert run.code == 0
    assert json.loads(result_file.read_text()) == run.result
    assert len(result_file.read_bytes()) < 4096


@pytest.mark.postgres
def test_canary_password_never_appears_in_any_output(postgres_server, tmp_path: Path) -> None:
    """Every command, success or failure, hermetic or env.py: the canary shows nowhere.

    Not on stdout, stderr, the result file, nor in any column of any
    ``revisor_history`` row, though the failing revision's own SQL contains
    it (so the driver's error echoes it).
    """
    import psycopg
    import sqlalchemy as sa

    from tests.support.postgres import free_port

    with psycopg.connect(postgres_server.libpq(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE canary LOGIN PASSWORD '{CANARY}' SUPERUSER")
    name = postgres_server.create_database()
    url = f"postgresql+psycopg://canary:{CANARY}@127.0.0.1:{postgres_server.port}/{name}"
    failing = Rev(
        id="ffff00000001", down="0001t0000000", upgrade=f"op.execute(\"SELECT '{CANARY}'::int\")"
    )
    project = make_project(tmp_path, [*chain(1), failing]).with_env_py()
    result_file = tmp_path / "result.json"
    url_file = tmp_path / "url"
    url_file.write_text(url)
    closed = url.replace(f":{postgres_server.port}/", f":{free_port()}/")
    invocations = [
        (0, ["--database-url", url, "upgrade", "0001"]),
        (4, ["--database-url-file", str(url_file), "upgrade"]),
        (2, ["--database-url", url, "--log-format", "json", "upgrade", "nope"]),
        (6, ["--database-url", url.replace(CANARY, CANARY + "x"), "upgrade"]),
        (2, ["--database-url", url.replace("127.0.0.1", "127.0.0.1:1"), "upgrade"]),
        (6, ["--database-url", closed, "upgrade"]),
        (6, ["--database-url", closed, "--log-format", "json", "plan"]),
        (0, ["--database-url", url, "current"]),
        (0, ["--database-url", url, "history", "--runs"]),
        (0, ["--database-url", url, "plan"]),
        (0, ["--database-url", url, "--log-format", "json", "plan", "base"]),
        (0, ["--database-url", url, "verify"]),
        (0, ["--database-url", url, "stamp", "0001"]),
        (4, ["--database-url", url, "--env-py", "upgrade"]),
        (0, ["--database-url", url, "--env-py", "--log-format", "json", "downgrade", "base"]),
        (0, ["--database-url-file", str(url_file), "--env-py", "upgrade", "0001"]),
    ]
    seen = []
    for _expected, extra in invocations:
        result_file.write_text("")
        proc = revisor_process(
            *project.args(), "--output", "json", "--result-file", str(result_file), *extra
        )
        out, err = proc.communicate(timeout=120)
        seen.append((proc.returncode, out, err, result_file.read_text()))
    assert [s[0] for s in seen] == [code for code, _ in invocations], [s[2] for s in seen]
    for code, out, err, result in seen:
        assert result, "every run wrote its result file"
        assert CANARY not in out + err + result, (code, out, err, result)
    engine = sa.create_engine(postgres_server.url(name), poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        rows = [tuple(row) for row in conn.execute(sa.text("SELECT * FROM revisor_history"))]
    engine.dispose()
    postgres_server.drop_database(name)
    stored = [str(value) for row in rows for value in row]
    assert len(rows) >= 8, "runs and steps were recorded"
    assert sum("invalid input syntax" in value for value in stored) >= 2, "both failures stored"
    assert not [value for value in stored if CANARY in value]
