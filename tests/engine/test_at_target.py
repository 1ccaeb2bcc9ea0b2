"""A run with nothing to do is answered without Alembic, and only when the answer is the full run's.

``revisor.at_target`` answers ``upgrade``/``apply`` on a SQLite or
PostgreSQL database already at its target with the bare driver. These tests hold it
to the full run (``commands.run``): the same result document (but for its
times), the same stdout line and the same messages on every history shape it
answers; a decline (None) on everything it must leave to the full run, with
the full run then doing its part (marking a dead runner's run, recording a
missing schema snapshot, reporting Alembic's errors); the same lock, and no
SQLAlchemy or Alembic loaded by a run it answered; a canary password never shown. The header graph it
answers from is checked against Alembic's ``RevisionMap`` on random graphs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from alembic.script.revision import Revision, RevisionMap
from hypothesis import given, settings
from hypothesis import strategies as st
from revisor import at_target, cli, commands, contract
from revisor.at_target import Question
from revisor.cli import _options, build_parser
from revisor.errors import LockTimeout
from revisor.header_graph import graph_of
from revisor.lock_file import LockFile
from revisor.outcome import run_text
from revisor.project import Project
from revisor.revision_headers import Header
from revisor.scripts import ScriptLocation

from tests.engine.conftest import Run, history_rows
from tests.support.projects import REPO, Rev, chain, make_project, table
from tests.support.sql import execute


class Heard:
    """A Reporter that keeps what it is told."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def planned(self, steps: Sequence[contract.Step], *, dry_run: bool) -> None:
        self.lines.append(f"planned {len(steps)}")

    def step_started(self, index: int, total: int, step: contract.Step) -> None:
        self.lines.append(f"started {step.revision}")

    def step_finished(self, index: int, total: int, step: contract.Step) -> None:
        self.lines.append(f"finished {step.revision}")

    def step_failed(self, index: int, total: int, step: contract.Step, error: str) -> None:
        self.lines.append(f"failed {step.revision}")

    def info(self, message: str) -> None:
        self.lines.append(message)


def question_of(argv: Sequence[str]) -> Question:
    """The question the CLI asks for ``argv`` (global options, then the command)."""
    return cli.question(build_parser().parse_args(list(argv)))


def full_run(question: Question) -> tuple[contract.Result, str, list[str]]:
    """What ``commands.run`` (SQLAlchemy, Alembic) says for the same question."""
    heard = Heard()
    project = Project(
        location=question.location,
        database_url=question.database_url,
        database_url_file=question.database_url_file,
        version_table=question.version_table,
    )
    outcome = commands.run(project, question.options, heard)
    return outcome.result, outcome.text, heard.lines


def comparable(result: contract.Result) -> dict[str, Any]:
    document = result.to_dict()
    for key in ("startedAt", "finishedAt"):
        assert document.pop(key), key  # both runs say when, in the same format
    return document


def branched_with_merge() -> list[Rev]:
    """Two branches, a dependency across them, a merge, and a second root."""
    return [
        table("a", None, "aaaa00000001"),
        table("b1", "aaaa00000001", "bbbb00000001", branch_labels=("left",)),
        table("c1", "aaaa00000001", "cccc00000001", branch_labels=("right",)),
        table("c2", "cccc00000001", "cccc00000002", depends_on=("bbbb00000001",)),
        Rev(id="dddd00000001", down=("bbbb00000001", "cccc00000002"), message="merge"),
        table("other", None, "ffff00000001", branch_labels=("other",)),
    ]


def two_heads() -> list[Rev]:
    return [
        table("a", None, "aaaa00000001"),
        table("b", "aaaa00000001", "bbbb00000001"),
        table("c", "aaaa00000001", "cccc00000001"),
    ]


# -- answered, and the full run's answer --------------------------------------------------------

CASES: dict[str, tuple[Callable[[], list[Rev]], list[str], list[str]]] = {
    # name: (history, how the database is migrated first, the run asked)
    "chain, upgrade head": (lambda: chain(5), ["upgrade", "head"], ["upgrade", "head"]),
    "chain, apply head": (lambda: chain(5), ["upgrade", "head"], ["apply", "head"]),
    "chain, upgrade heads": (lambda: chain(5), ["upgrade", "head"], ["upgrade", "heads"]),
    "chain, at a middle id": (
        lambda: chain(5),
        ["upgrade", "0003t0000000"],
        ["upgrade", "0003t0000000"],
    ),
    "chain, apply a middle id": (
        lambda: chain(5),
        ["upgrade", "0003t0000000"],
        ["apply", "--", "0003t0000000"],
    ),
    "dry run": (lambda: chain(3), ["upgrade", "head"], ["upgrade", "--dry-run", "head"]),
    "approved hash of another plan": (
        lambda: chain(3),
        ["upgrade", "head"],
        ["apply", "--expect-plan-hash", "0" * 64, "head"],
    ),
    "two heads, upgrade heads": (two_heads, ["upgrade", "heads"], ["upgrade", "heads"]),
    "merge, labels, depends_on": (
        branched_with_merge,
        ["upgrade", "heads"],
        ["upgrade", "heads"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_quick_answer_is_the_full_runs(
    case: str, db_url: str, tmp_path: Path, revisor: Callable[..., Run]
) -> None:
    history, setup, asked = CASES[case]
    project = make_project(tmp_path, history())
    where = [*project.args(), "--database-url", db_url]
    done = revisor(*where, *setup)
    assert done.code == 0, done.err

    question = question_of([*where, *asked])
    heard = Heard()
    quick = at_target.answer(question, heard)
    assert quick is not None, f"{case}: declined"
    full, text, full_heard = full_run(question)
    assert comparable(quick) == comparable(full)
    assert run_text(quick) == text
    assert heard.lines == full_heard


def test_answered_for_a_flat_directory_a_version_table_and_a_url_file(
    tmp_path: Path, revisor: Callable[..., Run]
) -> None:
    """A ConfigMap's layout (revisions and env.py side by side), as the operator's Jobs run."""
    flat = tmp_path / "flat"
    flat.mkdir()
    for rev in chain(4):
        (flat / f"{rev.id}_rev.py").write_text(rev.source())
    (flat / "env.py").write_text("raise SystemExit('env.py is not a revision')\n")
    url_file = tmp_path / "url"
    url_file.write_text(f"sqlite:///{tmp_path / 'app.db'}\n")
    where = ["--scripts", str(flat), "--database-url-file", str(url_file)]
    where += ["--version-table", "app_version"]
    assert revisor(*where, "upgrade", "head").code == 0

    question = question_of([*where, "upgrade", "head"])
    quick = at_target.answer(question, Heard())
    assert quick is not None
    assert quick.to_revisions == (chain(4)[-1].id,)
    assert comparable(quick) == comparable(full_run(question)[0])


def test_answered_for_a_url_in_the_environment(tmp_path: Path, revisor: Callable[..., Run]) -> None:
    project = make_project(tmp_path, chain(2))
    url = f"sqlite:///{tmp_path / 'app.db'}"
    assert revisor(*project.args(), "--database-url", url, "upgrade", "head").code == 0
    question = question_of([*project.args(), "upgrade", "head"])
    env = {contract.ENV_DATABASE_URL: url}
    assert at_target.answer(question, Heard(), environ=env) is not None
    assert at_target.answer(question, Heard(), environ={}) is None  # no URL: the full run says


def test_the_cli_answers_without_loading_sqlalchemy_or_alembic(
    db_url: str, tmp_path: Path, revisor: Callable[..., Run]
) -> None:
    project = make_project(tmp_path, chain(3))
    where = [*project.args(), "--database-url", db_url]
    program = textwrap.dedent(
        """
        import json, sys
        from revisor.cli import main
        code = main(sys.argv[1:])
        loaded = sorted({m.split(".")[0] for m in sys.modules} & {"sqlalchemy", "alembic"})
        print(json.dumps({"code": code, "loaded": loaded}))
        """
    )

    def run(*argv: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-c", program, *where, *argv],
            capture_output=True, text=True, check=True, cwd=tmp_path, timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO / "engine")},
        )  # fmt: skip
        outcome: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        outcome["out"], outcome["err"] = done.stdout, done.stderr
        return outcome

    first = run("upgrade", "head")  # applies: the full run, with both loaded
    assert first["code"] == 0 and first["loaded"] == ["alembic", "sqlalchemy"], first
    again = run("upgrade", "head")
    assert again["code"] == 0, again
    assert again["loaded"] == [], again
    assert "already at head (0003t0000000); nothing to do" in again["err"]
    assert "at 0003t0000000 (was 0003t0000000)" in again["out"]


def test_answered_from_an_alembic_ini_as_alembic_reads_it(
    db_url: str, tmp_path: Path, revisor: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--config`` (script_location with ``%(here)s``, the URL in the file), and the
    ``./alembic.ini`` Alembic's own CLI would read when neither is given."""
    project = make_project(tmp_path, chain(3))
    ini = project.with_ini(url=db_url.replace("%", "%%"))
    assert revisor("--config", str(ini), "upgrade", "head").code == 0
    question = question_of(["--config", str(ini), "upgrade", "head"])
    quick = at_target.answer(question, Heard())
    assert quick is not None
    assert comparable(quick) == comparable(full_run(question)[0])

    monkeypatch.chdir(project.root)
    monkeypatch.delenv("ALEMBIC_CONFIG", raising=False)
    assert at_target.answer(question_of(["upgrade", "head"]), Heard()) is not None


@pytest.mark.parametrize(
    "extra",
    [
        "version_locations = %(here)s/migrations/versions",
        "recursive_version_locations = true",
        "sourceless = true",
        "script_location = shop.migrations:alembic",
        "script_location = %(nowhere)s/migrations",
    ],
)
def test_an_ini_that_changes_how_alembic_loads_is_left_to_it(
    extra: str, tmp_path: Path, revisor: Callable[..., Run]
) -> None:
    project = make_project(tmp_path, chain(2))
    url = f"sqlite:///{tmp_path / 'app.db'}"
    plain = project.with_ini(url=url)
    assert revisor("--config", str(plain), "upgrade", "head").code == 0
    assert at_target.answer(question_of(["--config", str(plain), "upgrade", "head"]), Heard())
    lines = plain.read_text().splitlines()
    if extra.startswith("script_location"):
        lines = [line for line in lines if not line.startswith("script_location")]
    plain.write_text("\n".join([*lines, extra]) + "\n")
    assert (
        at_target.answer(question_of(["--config", str(plain), "upgrade", "head"]), Heard()) is None
    )
    both = ["--config", str(plain), *project.args(), "upgrade", "head"]
    assert at_target.answer(question_of(both), Heard()) is None


def test_the_ini_is_read_as_alembics_config_reads_it(tmp_path: Path) -> None:
    from alembic.config import Config
    from revisor.ini_file import read_ini

    ini = tmp_path / "alembic.ini"
    ini.write_text(
        "[DEFAULT]\nroot = %(here)s/app\n\n[alembic]\nscript_location = %(root)s/migrations\n"
        "sqlalchemy.url = sqlite:///%(here)s/app 100%%.db\n\n"
        "[other]\nscript_location = relative/dir\n"
    )
    for section in ("alembic", "other"):
        ours = read_ini(str(ini), section)
        theirs = Config(str(ini), ini_section=section)
        assert ours is not None
        assert str(ours.script_location) == theirs.get_main_option("script_location")
        assert ours.url == theirs.get_main_option("sqlalchemy.url")
    assert read_ini(str(ini), "missing") is None
    assert read_ini(str(tmp_path / "nothing.ini"), "alembic") is None


# -- declined: the full run goes on, and does its part ------------------------------------------


def test_a_dead_runners_run_is_left_to_the_full_run_which_marks_it(
    db_url: str, tmp_path: Path, revisor: Callable[..., Run]
) -> None:
    project = make_project(tmp_path, chain(2))
    where = [*project.args(), "--database-url", db_url]
    assert revisor(*where, "upgrade", "head").code == 0
    execute(db_url, "UPDATE revisor_history SET status = 'running' WHERE kind = 'run'")
    assert at_target.answer(question_of([*where, "upgrade", "head"]), Heard()) is None
    # A dry run marks nothing: it is answered.
    assert at_target.answer(question_of([*where, "upgrade", "--dry-run", "head"]), Heard())

    done = revisor(*where, "upgrade", "head")
    assert done.code == 0, done.err
    assert "marked 1 run(s) left by a stopped runner as interrupted" in done.err
    statuses = {row["status"] for row in history_rows(db_url)}
    assert "running" not in statuses and "interrupted" in statuses


def test_a_revision_without_a_recorded_schema_is_left_to_the_full_run_which_records_it(
    db_url: str, tmp_path: Path, revisor: Callable[..., Run]
) -> None:
    project = make_project(tmp_path, chain(2))
    where = [*project.args(), "--database-url", db_url]
    assert revisor(*where, "upgrade", "head").code == 0
    execute(db_url, "DELETE FROM revisor_schema")
    assert at_target.answer(question_of([*where, "upgrade", "head"]), Heard()) is None

    done = revisor(*where, "--output", "json", "upgrade", "head")
    assert done.code == 0, done.err
    assert done.result["details"]["schemaHash"]
    assert recorded_keys(db_url) == [chain(2)[-1].id]
    assert at_target.answer(question_of([*where, "upgrade", "head"]), Heard()) is not None


DECLINED: dict[str, tuple[list[str], list[str]]] = {
    # name: (global options added, the run asked)
    "not at the target": ([], ["upgrade", "0003t0000000"]),
    "a relative target": ([], ["upgrade", "+1"]),
    "a partial id": ([], ["upgrade", "0002t"]),
    "a branch target": ([], ["upgrade", "left@head"]),
    "a downgrade": ([], ["downgrade", "0002t0000000"]),
    "a baseline": ([], ["apply", "--baseline", "0001t0000000", "head"]),
    "a tenant schema": (["--schema", "tenant"], ["upgrade", "head"]),
    "env.py": (["--env-py"], ["upgrade", "head"]),
    "a metadata": (["--metadata", "app.models:metadata"], ["upgrade", "head"]),
    "a version table schema": (["--version-table-schema", "main"], ["upgrade", "head"]),
    "extra version locations": (["--version-locations", "{versions}"], ["upgrade", "head"]),
}


@pytest.mark.parametrize("case", sorted(DECLINED))
def test_declined(case: str, db_url: str, tmp_path: Path, revisor: Callable[..., Run]) -> None:
    project = make_project(tmp_path, chain(3))
    where = [*project.args(), "--database-url", db_url]
    assert revisor(*where, "upgrade", "0002t0000000").code == 0
    extra, asked = DECLINED[case]
    extra = [e.format(versions=project.versions) for e in extra]
    assert at_target.answer(question_of([*where, *extra, *asked]), Heard()) is None


def test_a_database_the_quick_answer_cannot_read_is_left_to_the_full_run(
    tmp_path: Path, revisor: Callable[..., Run]
) -> None:
    project = make_project(tmp_path, chain(2))
    for name, content in {"empty.db": b"", "garbage.db": b"not a database " * 100}.items():
        where = [*project.args(), "--database-url", f"sqlite:///{tmp_path / name}"]
        (tmp_path / name).write_bytes(content)
        assert at_target.answer(question_of([*where, "upgrade", "head"]), Heard()) is None
    missing = [*project.args(), "--database-url", f"sqlite:///{tmp_path / 'missing.db'}"]
    assert at_target.answer(question_of([*missing, "upgrade", "head"]), Heard()) is None
    assert not (tmp_path / "missing.db").exists()  # never created by asking

    done = revisor(*project.args(), "--database-url", f"sqlite:///{tmp_path / 'garbage.db'}",
                   "upgrade", "head")  # fmt: skip
    assert done.code != 0
    assert "file is not a database" in done.err


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///{db}?mode=ro",
        "sqlite+aiosqlite:///{db}",
        "sqlite:///{db}%20",
        "postgresql+asyncpg://app:pw@db/app",
        "postgresql+psycopg2://app:pw@db/app",
        "mysql+pymysql://app:pw@db/app",
        "postgresql+psycopg://app:pw@db:not-a-port/app",
        "postgresql+psycopg://app:pw@/app?host=/var/run/postgresql&host=db",
        "postgresql+psycopg://app:pw@db/app?sslmode=require&sslmode=disable",
        "postgresql+psycopg://app:pw@db/app?port=5433",
        "not a url",
    ],
)
def test_databases_not_answered_are_left_to_the_full_run(url: str, tmp_path: Path) -> None:
    assert at_target.database_of(asking(database_url=url.format(db=tmp_path / "x")), {}) is None


def asking(database_url: str | None = None) -> Question:
    options = replace(_options(build_parser().parse_args(["upgrade"])), target="head")
    return Question(
        location=ScriptLocation(scripts_dir="."), options=options, database_url=database_url
    )


def test_a_postgresql_url_means_what_it_means_to_sqlalchemy() -> None:
    """The same parts and query as SQLAlchemy's URL, and the full run's own session options."""
    from revisor.connection import _engine_options, resolve_database
    from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

    for url in (
        "postgresql+psycopg://app:p%40ss%3Aw%2Fd@db.example:6432/my%20app?sslmode=require",
        "postgres://app@db/app",
        "postgresql://app:pw@[::1]/app?application_name=mine&connect_timeout=3",
    ):
        ours = at_target.database_of(asking(database_url=url), {})
        assert isinstance(ours, at_target.PostgresServer), url
        database = resolve_database(url=url)
        _, theirs = PGDialect_psycopg().create_connect_args(database.url)
        theirs.update(_engine_options(database)["connect_args"])
        assert dict(ours.params) == theirs, url
        assert ours.database == database.url.database


@settings(max_examples=200, deadline=None)
@given(
    user=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12),
    password=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=16),
    name=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12),
)
def test_any_credentials_in_a_url_are_read_as_the_full_run_reads_them(
    user: str, password: str, name: str
) -> None:
    """Percent-encoded as ``URL.render_as_string`` writes them, every value is what the
    full run connects with (``resolve_database``, then SQLAlchemy's psycopg dialect),
    down to what both strip from the URL's ends."""
    from revisor.connection import _engine_options, resolve_database
    from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
    from sqlalchemy.engine import URL

    url = URL.create(
        "postgresql+psycopg", username=user, password=password or None, host="db", database=name
    ).render_as_string(hide_password=False)
    ours = at_target.database_of(asking(database_url=url), {})
    assert isinstance(ours, at_target.PostgresServer)
    database = resolve_database(url=url)
    _, theirs = PGDialect_psycopg().create_connect_args(database.url)
    theirs.update(_engine_options(database)["connect_args"])
    assert dict(ours.params) == theirs
    assert ours.database == database.url.database


def test_a_secret_of_parts_is_read_and_its_values_are_masked() -> None:
    from revisor.redaction import scrub

    env = {
        contract.ENV_DATABASE_PARTS["host"]: "db.internal",
        contract.ENV_DATABASE_PARTS["port"]: "5433",
        contract.ENV_DATABASE_PARTS["name"]: "shop",
        contract.ENV_DATABASE_PARTS["user"]: "shop_owner",
        contract.ENV_DATABASE_PARTS["password"]: "canary-Pa55word",
    }
    ours = at_target.database_of(asking(), env)
    assert isinstance(ours, at_target.PostgresServer)
    assert ours.params["host"] == "db.internal" and ours.params["port"] == 5433
    assert ours.database == "shop"
    text = scrub("shop_owner:canary-Pa55word@db.internal/shop")
    assert "canary-Pa55word" not in text and "shop_owner" not in text
    bad_port = {**env, contract.ENV_DATABASE_PARTS["port"]: "five"}
    assert at_target.database_of(asking(), bad_port) is None
    mysql = {**env, contract.ENV_DATABASE_PARTS["driver"]: "mysql+pymysql"}
    assert at_target.database_of(asking(), mysql) is None


def test_several_heads_and_head_is_alembics_error_from_the_full_run(
    tmp_path: Path, revisor: Callable[..., Run]
) -> None:
    project = make_project(tmp_path, two_heads())
    where = [*project.args(), "--database-url", f"sqlite:///{tmp_path / 'app.db'}"]
    assert revisor(*where, "upgrade", "heads").code == 0
    assert at_target.answer(question_of([*where, "upgrade", "head"]), Heard()) is None
    done = revisor(*where, "upgrade", "head")
    assert done.code == 2
    assert "Multiple head revisions" in done.err


def test_a_computed_header_is_left_to_alembic(tmp_path: Path, revisor: Callable[..., Run]) -> None:
    revs = chain(2)
    project = make_project(tmp_path, revs)
    (project.versions / "0003_computed.py").write_text(
        f'PREVIOUS = "{revs[-1].id}"\nrevision = "0003c0000000"\ndown_revision = PREVIOUS\n\n'
        "def upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n"
    )
    where = [*project.args(), "--database-url", f"sqlite:///{tmp_path / 'app.db'}"]
    assert revisor(*where, "upgrade", "head").code == 0
    assert at_target.answer(question_of([*where, "upgrade", "head"]), Heard()) is None
    done = revisor(*where, "upgrade", "head")
    assert done.code == 0 and "nothing to do" in done.err


# -- the same lock ------------------------------------------------------------------------------


def test_it_takes_the_full_runs_lock_and_times_out_with_its_words(
    db_url: str, tmp_path: Path, revisor: Callable[..., Run]
) -> None:
    project = make_project(tmp_path, chain(2))
    where = [*project.args(), "--database-url", db_url]
    assert revisor(*where, "upgrade", "head").code == 0
    question = question_of([*where, "upgrade", "--lock-timeout", "0", "head"])
    with holding_the_lock(db_url, question):
        with pytest.raises(LockTimeout) as quick:
            at_target.answer(question, Heard())
        with pytest.raises(LockTimeout) as full:
            full_run(question)
    assert str(quick.value) == str(full.value)
    assert "held by" in str(quick.value)
    assert at_target.answer(question, Heard()) is not None  # released: answered


@contextmanager
def holding_the_lock(url: str, question: Question) -> Iterator[None]:
    """The run's lock, held by another session (another process, as far as the lock can tell)."""
    from revisor.connection import resolve_database
    from revisor.dialects import lock_key

    database = resolve_database(url=url)
    if database.backend == "sqlite":
        holder = LockFile(str(database.url.database))
        holder.acquire(timeout=0)
        try:
            yield
        finally:
            holder.release()
        return
    key = lock_key(database, schema=None, table=question.version_table.table)
    holding = _hold(database, key)
    next(holding)
    try:
        yield
    finally:
        next(holding, None)


def _hold(database: Any, key: Any) -> Iterator[None]:
    """Hold PostgreSQL's advisory lock ``key`` from the first ``next`` to the second."""
    import sqlalchemy as sa

    engine = sa.create_engine(database.url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key.value})
        conn.commit()
        yield
        conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key.value})
        conn.commit()
    engine.dispose()


def test_an_unreachable_server_is_left_to_the_full_run_which_names_it(
    tmp_path: Path, revisor: Callable[..., Run]
) -> None:
    from tests.support.postgres import free_port

    project = make_project(tmp_path, chain(2))
    url = f"postgresql+psycopg://app:canary-Pa55word@127.0.0.1:{free_port()}/app"
    where = [*project.args(), "--database-url", url]
    assert at_target.answer(question_of([*where, "upgrade", "head"]), Heard()) is None
    done = revisor(*where, "upgrade", "head")
    assert done.code == 6, done.err
    assert "cannot connect to" in done.err
    assert "canary-Pa55word" not in done.out + done.err


# -- the header graph is Alembic's --------------------------------------------------------------

IDS = [f"r{i:02d}" for i in range(8)]


@st.composite
def header_graphs(draw: st.DrawFn) -> dict[str, Header]:
    """Small graphs, mostly sound: branches, merges, dependencies, labels; now and then a
    forward edge (a cycle), a missing or partial id, a duplicate, a label reused."""
    count = draw(st.integers(1, len(IDS)))
    ids = IDS[:count]
    anything = st.sampled_from([*ids, "r9", "r0"[:2], "left"])
    revisions: dict[str, Header] = {}
    for i, rev in enumerate(ids):
        earlier = st.sampled_from(ids[:i]) if i else st.nothing()
        pick = st.one_of(earlier, anything) if draw(st.integers(0, 9)) == 0 else earlier
        downs = draw(st.lists(pick, max_size=2)) if i else []
        depends = draw(st.lists(pick, max_size=1)) if i and draw(st.booleans()) else []
        labels = draw(st.lists(st.sampled_from(["left", "right", "r01"]), max_size=1))
        revisions[rev] = Header(
            revision=rev,
            down_revision=None if not downs else downs[0] if len(downs) == 1 else tuple(downs),
            branch_labels=tuple(labels) or None,
            depends_on=tuple(depends) or None,
            doc=None,
        )
    return revisions


def alembic_heads(revisions: dict[str, Header]) -> tuple[str, ...] | None:
    """Alembic's heads of the same revisions, or None where Alembic fails on them."""

    def load() -> list[Revision]:
        return [
            Revision(
                h.revision,
                h.down_revision,  # type: ignore[arg-type]
                dependencies=h.depends_on,  # type: ignore[arg-type]
                branch_labels=h.branch_labels,  # type: ignore[arg-type]
            )
            for h in revisions.values()
        ]

    with warnings.catch_warnings():
        # "Revision r9 referenced from ... is not present": Alembic then fails, below.
        warnings.simplefilter("ignore", UserWarning)
        try:
            revision_map = RevisionMap(load)
            heads = tuple(sorted(revision_map.heads))
            list(revision_map.iterate_revisions("heads", "base", assert_relative_length=False))
        except Exception:
            return None
    return heads


@settings(max_examples=400, deadline=None)
@given(header_graphs())
def test_the_header_graph_has_alembics_heads_or_declines(revisions: dict[str, Header]) -> None:
    ours = graph_of(revisions)
    theirs = alembic_heads(revisions)
    if ours is not None:
        assert theirs is not None, "answered where Alembic fails"
        assert ours.heads == theirs
        assert set(ours.revisions) == set(revisions)
    sound = all(
        all(r in revisions and r < rev for r in (*_ids(h.down_revision), *_ids(h.depends_on)))
        and len(set(_ids(h.down_revision))) == len(_ids(h.down_revision))
        for rev, h in revisions.items()
    )
    labels = [label for h in revisions.values() for label in _ids(h.branch_labels)]
    if sound and len(set(labels)) == len(labels) and not set(labels) & set(revisions):
        assert ours is not None, "declined a plain graph"


def _ids(value: str | Sequence[str] | None) -> tuple[str, ...]:
    return () if value is None else (value,) if isinstance(value, str) else tuple(value)


def recorded_keys(url: str) -> list[str]:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(sa.text("SELECT revisions FROM revisor_schema"))]
    finally:
        engine.dispose()


def test_a_run_with_work_to_do_reads_each_header_once(
    tmp_path: Path, revisor: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quick answer declines (at base), the full run loads the scripts: one read each."""
    from revisor import header_graph
    from revisor.revision_headers import read_header as real

    project = make_project(tmp_path, chain(5))
    read: list[str] = []

    def counted(source: str) -> Header | None:
        found = real(source)
        read.append(found.revision if found is not None else "?")
        return found

    monkeypatch.setattr("revisor.header_graph.read_header", counted)
    done = revisor(*project.args(), "--database-url", f"sqlite:///{tmp_path / 'app.db'}", "upgrade")
    assert done.code == 0, done.err
    assert sorted(read) == sorted(rev.id for rev in chain(5))
    rev = chain(5)[0]
    path = project.versions / f"{rev.id}_rev.py"
    path.write_text(path.read_text().replace("create t1", "create the first table"))
    assert header_graph.header_of_file(path) is not None
    assert read[-1] == rev.id  # edited: read again
