"""Bad input: one clear message, the documented exit code, and the database untouched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.engine.conftest import tables, version
from tests.support.projects import Rev, chain, make_project, table


def untouched(url: str) -> bool:
    return not tables(url)


def test_unknown_revision_is_exit_2_with_alembics_message(
    revisor, any_db_url, tmp_path: Path
) -> None:
    project = make_project(tmp_path, chain(2))
    run = revisor(
        *project.args(), "--database-url", any_db_url, "--output", "json", "upgrade", "ffff"
    )
    assert run.code == 2
    assert "Can't locate revision identified by 'ffff'" in run.err
    assert run.result["reason"] == "InvalidTarget"
    assert untouched(any_db_url)


def test_ambiguous_prefix_is_exit_2(revisor, db_url, tmp_path: Path) -> None:
    project = make_project(
        tmp_path, [table("a", None, "abc111111111"), table("b", "abc111111111", "abc122222222")]
    )
    run = revisor(*project.args(), "--database-url", db_url, "upgrade", "abc1")
    assert run.code == 2
    assert "Multiple revisions start with 'abc1'" in run.err
    assert untouched(db_url)


def test_multiple_heads_for_head_is_exit_2(revisor, db_url, tmp_path: Path) -> None:
    project = make_project(
        tmp_path,
        [
            table("a", None, "aaaa00000001"),
            table("b", "aaaa00000001", "bbbb00000001"),
            table("c", "aaaa00000001", "cccc00000001"),
        ],
    )
    run = revisor(*project.args(), "--database-url", db_url, "upgrade", "head")
    assert run.code == 2
    assert "Multiple head revisions are present" in run.err
    assert untouched(db_url)


def test_script_syntax_error_names_file_and_line(revisor, db_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(1))
    bad = project.versions / "0002_bad.py"
    bad.write_text("revision = '0002'\ndown_revision = '0001t0000000'\ndef upgrade(:\n    pass\n")
    run = revisor(*project.args(), "--database-url", db_url, "upgrade")
    assert run.code == 2
    assert f"{bad}:3: syntax error" in run.err
    assert untouched(db_url)


def test_script_import_error_names_file_and_line(revisor, db_url, tmp_path: Path) -> None:
    project = make_project(
        tmp_path, [Rev(id="aaaa00000001", header="import not_a_module_anywhere")]
    )
    run = revisor(*project.args(), "--database-url", db_url, "upgrade")
    assert run.code == 2
    assert "ModuleNotFoundError" in run.err and "aaaa00000001_rev.py:" in run.err
    assert untouched(db_url)


@pytest.mark.parametrize(
    "revs",
    [
        pytest.param(
            [
                table("a", "bbbb00000001", "aaaa00000001"),
                table("b", "aaaa00000001", "bbbb00000001"),
            ],
            id="no-base",
        ),
        pytest.param(
            [
                *chain(1),
                table("a", ("0001t0000000", "bbbb00000001"), "aaaa00000001"),
                table("b", "aaaa00000001", "bbbb00000001"),
            ],
            id="off-a-real-base",
        ),
    ],
)
def test_revision_cycle_is_exit_2_with_alembics_message(
    revisor, db_url, tmp_path: Path, revs: list[Rev]
) -> None:
    """A cycle is refused before connecting, even when a real base leads into it."""
    project = make_project(tmp_path, revs)
    run = revisor(*project.args(), "--database-url", db_url, "--output", "json", "upgrade")
    assert run.code == 2
    assert "Cycle is detected in revisions (" in run.err
    named = run.err.split("Cycle is detected in revisions (", 1)[1].split(")", 1)[0]
    assert {"aaaa00000001", "bbbb00000001"} <= set(named.split(", "))
    assert run.result["reason"] == "InvalidScripts"
    assert untouched(db_url)


@pytest.mark.parametrize(
    ("body", "wording", "strict"),
    [
        ("raise NotImplementedError()", "downgrade() that raises", False),
        ("pass", "empty downgrade()", True),
    ],
    ids=["raises", "pass-with-require-reversible"],
)
def test_downgrade_through_an_irreversible_revision_is_refused_before_anything_runs(
    revisor, db_url, tmp_path: Path, *, body: str, wording: str, strict: bool
) -> None:
    revs = [
        *chain(1),
        Rev(
            id="0002x0000000",
            down="0001t0000000",
            upgrade="op.create_table('x', sa.Column('id', sa.Integer))",
            downgrade=body,
        ),
    ]
    project = make_project(tmp_path, revs)
    args = (*project.args(), "--database-url", db_url)
    assert revisor(*args, "upgrade").code == 0
    run = revisor(*args, "downgrade", "base", *(["--require-reversible"] if strict else []))
    assert run.code == 2
    assert "0002x0000000" in run.err and wording in run.err
    assert version(db_url) == {"0002x0000000"}, "nothing was downgraded"
    assert {"t1", "x"} <= tables(db_url)


def test_a_script_without_downgrade_is_refused(revisor, db_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(1))
    (project.versions / "0002_nodown.py").write_text(
        "revision = '0002n0000000'\ndown_revision = '0001t0000000'\nbranch_labels = None\n"
        "depends_on = None\ndef upgrade():\n    pass\n"
    )
    args = (*project.args(), "--database-url", db_url)
    assert revisor(*args, "upgrade").code == 0, "Alembic upgrades such a script"
    run = revisor(*args, "downgrade", "-1")
    assert run.code == 2
    assert "0002_nodown.py: the revision script has no downgrade() function" in run.err
    assert version(db_url) == {"0002n0000000"}


def test_bad_url_is_exit_2_and_never_echoed(revisor, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(1))
    run = revisor(*project.args(), "--database-url", "not a url s3cr3t-canary", "upgrade")
    assert run.code == 2
    assert "is not a database URL" in run.err
    assert "s3cr3t-canary" not in run.err + run.out


def test_unknown_driver_is_exit_2(revisor, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(1))
    run = revisor(
        *project.args(), "--database-url", "postgresql+nosuchdriver://u:p@h/db", "upgrade"
    )
    assert run.code == 2 and "nosuchdriver" in run.err


def test_no_database_given_says_how_to_give_one(revisor, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("REVISOR_DATABASE_URL", raising=False)
    project = make_project(tmp_path, chain(1))
    run = revisor(*project.args(), "upgrade")
    assert run.code == 2
    assert "no database given" in run.err and "REVISOR_DATABASE_URL" in run.err


@pytest.mark.postgres
def test_unreachable_database_is_exit_6(revisor, tmp_path: Path) -> None:
    from tests.support.postgres import free_port

    project = make_project(tmp_path, chain(1))
    password = "Unreach-Pw-4b8e1d"
    url = f"postgresql+psycopg://app:{password}@127.0.0.1:{free_port()}/app"
    run = revisor(*project.args(), "--database-url", url, "--output", "json", "upgrade")
    assert run.code == 6
    assert "cannot connect to postgresql+psycopg://app:***@127.0.0.1:" in run.err
    assert run.result["reason"] == "DatabaseUnreachable"
    assert password not in run.err + run.out


@pytest.mark.postgres
def test_wrong_password_is_exit_6_and_not_echoed(revisor, postgres_server, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(1))
    url = postgres_server.url("postgres").replace(postgres_server.password, "wrong-canary-pw")
    run = revisor(*project.args(), "--database-url", url, "--output", "json", "upgrade")
    assert run.code == 6
    assert "password authentication failed" in run.err
    assert "wrong-canary-pw" not in run.err + run.out


def test_unwritable_result_file_is_exit_2_before_touching_the_database(
    revisor, db_url, tmp_path: Path
) -> None:
    project = make_project(tmp_path, chain(1))
    target = tmp_path / "no" / "such" / "dir" / "result.json"
    run = revisor(
        *project.args(), "--database-url", db_url, "--result-file", str(target), "upgrade"
    )
    assert run.code == 2
    assert "--result-file" in run.err and "cannot write it" in run.err
    assert untouched(db_url)


def test_missing_scripts_directory_is_exit_2(revisor, db_url, tmp_path: Path) -> None:
    run = revisor("--scripts", str(tmp_path / "nope"), "--database-url", db_url, "upgrade")
    assert run.code == 2 and "no such directory" in run.err


def test_missing_config_file_is_exit_2(revisor, tmp_path: Path) -> None:
    run = revisor("--config", str(tmp_path / "alembic.ini"), "upgrade")
    assert run.code == 2 and "no such file" in run.err


def test_usage_errors_are_exit_2(tmp_path: Path) -> None:
    from revisor.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["upgrade", "--lock-timeout", "soon"])
    assert exc.value.code == 2


def test_database_url_file_is_read_like_a_mounted_secret(
    revisor, any_db_url, tmp_path: Path
) -> None:
    project = make_project(tmp_path, chain(1))
    secret = tmp_path / "secret-url"
    secret.write_text(any_db_url + "\n")
    assert revisor(*project.args(), "--database-url-file", str(secret), "upgrade").code == 0
    assert version(any_db_url) == {"0001t0000000"}
    missing = revisor(*project.args(), "--database-url-file", str(tmp_path / "nope"), "upgrade")
    assert missing.code == 2 and "cannot read it" in missing.err


def test_url_from_environment(revisor, any_db_url, tmp_path: Path, monkeypatch) -> None:
    project = make_project(tmp_path, chain(1))
    monkeypatch.setenv("REVISOR_DATABASE_URL", any_db_url)
    assert revisor(*project.args(), "upgrade").code == 0
    assert version(any_db_url) == {"0001t0000000"}
    assert os.environ["REVISOR_DATABASE_URL"] == any_db_url


def test_bad_input_results_say_which_input_was_bad(revisor, any_db_url, tmp_path: Path) -> None:
    """The operator turns these into condition reasons without reading the words."""
    project = make_project(tmp_path, chain(2))
    args = (*project.args(), "--database-url", any_db_url, "--output", "json")
    assert revisor(*args, "upgrade", "ffff").result["reason"] == "InvalidTarget"
    assert (
        revisor(*args, "upgrade", "--expect-plan-hash", "0" * 64).result["reason"] == "PlanChanged"
    )
    (project.versions / "broken.py").write_text("def upgrade(:\n")
    assert revisor(*args, "upgrade").result["reason"] == "InvalidScripts"
