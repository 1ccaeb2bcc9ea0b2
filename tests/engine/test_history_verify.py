"""History of the scripts and of the runs; verify compares what was applied with the files.

``history RANGE`` walks the script graph (Alembic's syntax), ``history
--runs`` reads ``revisor_history``, and ``verify`` checks the recorded
checksums and the files of every applied revision.
"""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import pytest
import sqlalchemy as sa
from revisor import __version__
from revisor.history import History, new_run, utcnow

from tests.engine.conftest import history_rows, version
from tests.support.projects import Rev, chain, make_project


def test_history_has_a_row_per_run_and_per_step_with_checksums(
    revisor, any_db_url, tmp_path: Path, monkeypatch
) -> None:
    import hashlib

    monkeypatch.setenv("REVISOR_RUNNER", "shop-g3-1a2b-xyz")
    project = make_project(tmp_path, chain(2))
    args = (*project.args(), "--database-url", any_db_url)
    assert revisor(*args, "upgrade").code == 0
    assert revisor(*args, "downgrade", "-1").code == 0
    runs = history_rows(any_db_url)
    assert [
        (r["command"], r["direction"], r["from_revision"], r["to_revision"], r["status"])
        for r in runs
    ] == [
        ("upgrade", "upgrade", "base", "0002t0000000", "succeeded"),
        ("downgrade", "downgrade", "0002t0000000", "0001t0000000", "succeeded"),
    ]
    assert all(
        r["runner"] == "shop-g3-1a2b-xyz" and r["engine_version"] == __version__ for r in runs
    )
    assert all(r["finished_at"] is not None and r["duration_seconds"] >= 0 for r in runs)
    steps = history_rows(any_db_url, "step")
    assert [(s["direction"], s["revision"], s["status"]) for s in steps] == [
        ("upgrade", "0001t0000000", "applied"),
        ("upgrade", "0002t0000000", "applied"),
        ("downgrade", "0002t0000000", "applied"),
    ]
    first = next(project.versions.glob("0001*"))
    assert steps[0]["checksum"] == hashlib.sha256(first.read_bytes()).hexdigest()
    assert steps[0]["description"] == "create t1"
    shown = revisor(*args, "history", "--runs")
    assert shown.code == 0 and "succeeded" in shown.out and "shop-g3-1a2b-xyz" in shown.out


def test_verify_passes_on_untouched_scripts(revisor, any_db_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(3))
    args = (*project.args(), "--database-url", any_db_url)
    revisor(*args, "upgrade")
    run = revisor(*args, "verify")
    assert run.code == 0, run.out + run.err
    assert "checked 3 applied revision(s)" in run.out


def test_verify_reports_a_script_edited_after_it_was_applied(
    revisor, db_url, tmp_path: Path
) -> None:
    project = make_project(tmp_path, chain(3))
    args = (*project.args(), "--database-url", db_url, "--output", "json")
    revisor(*args, "upgrade")
    edited = next(project.versions.glob("0002*"))
    edited.write_text(edited.read_text().replace("create t2", "create t2 (edited)"))
    run = revisor(*args, "verify")
    assert run.code == 7
    assert run.result["reason"] == "Mismatch"
    assert run.result["details"]["edited"] == ["0002t0000000"]
    assert "edited after they were applied: 0002t0000000" in run.result["error"]


def test_verify_reports_an_applied_revision_whose_script_is_missing(
    revisor, db_url, tmp_path: Path
) -> None:
    project = make_project(tmp_path, chain(3))
    args = (*project.args(), "--database-url", db_url, "--output", "json")
    revisor(*args, "upgrade")
    next(project.versions.glob("0003*")).unlink()
    run = revisor(*args, "verify")
    assert run.code == 7
    assert run.result["details"]["missing"] == ["0003t0000000"]


def test_verify_names_an_applied_revision_missing_from_the_middle_of_the_chain(
    revisor, db_url, tmp_path: Path
) -> None:
    """Alembic cannot load such a directory; verify still answers exit 7, and why."""
    project = make_project(tmp_path, chain(3))
    args = (*project.args(), "--database-url", db_url, "--output", "json")
    assert revisor(*args, "upgrade").code == 0
    next(project.versions.glob("0002*")).unlink()
    top = next(project.versions.glob("0003*"))
    top.write_text(top.read_text().replace("create t3", "create t3 (edited)"))
    run = revisor(*args, "verify")
    assert run.code == 7, run.err
    assert run.result["reason"] == "Mismatch"
    assert run.result["details"]["missing"] == ["0002t0000000"]
    assert run.result["details"]["edited"] == ["0003t0000000"]
    assert "1 applied revision(s) missing: 0002t0000000" in run.result["error"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text = revisor(*project.args(), "--database-url", db_url, "verify")
    assert "applied but its script is missing: 0002t0000000 (revised by 0003t0000000)" in text.out
    assert not [w for w in caught if "is not present" in str(w.message)], (
        "Alembic's raw warning is replaced by our message"
    )


def test_a_missing_middle_file_nobody_applied_is_bad_scripts_for_verify_and_upgrade(
    revisor, db_url, tmp_path: Path
) -> None:
    project = make_project(tmp_path, chain(3))
    args = (*project.args(), "--database-url", db_url, "--output", "json")
    assert revisor(*args, "upgrade", "0001").code == 0
    next(project.versions.glob("0002*")).unlink()
    message = "0003t0000000 (0003t0000000_rev.py) revises 0002t0000000, which has no script file"
    for command in ("verify", "upgrade"):
        run = revisor(*args, command)
        assert run.code == 2, (command, run.err)
        assert message in run.err and run.result["reason"] == "InvalidScripts"
        assert "KeyError" not in run.err
    assert version(db_url) == {"0001t0000000"}


def test_verify_counts_revisions_applied_outside_revisor(
    revisor, any_db_url, tmp_path: Path
) -> None:
    project = make_project(tmp_path, chain(2))
    args = (*project.args(), "--database-url", any_db_url, "--output", "json")
    revisor(*args, "stamp", "head")
    run = revisor(*args, "verify")
    assert run.code == 0
    assert run.result["details"]["unrecorded"] == 2


def _listed(run) -> list[str]:
    return [step["revision"] for step in run.result.get("plan", [])]


def test_history_range_lists_the_revisions_between_its_ends_newest_first(
    revisor, db_url, tmp_path: Path
) -> None:
    """``A:B``, ``A:``, ``:B`` and partial ids, as ``alembic history -r`` takes them."""
    project = make_project(tmp_path, chain(3))
    args = (*project.args(), "--database-url", db_url, "--output", "json")
    first, second, third = "0001t0000000", "0002t0000000", "0003t0000000"
    assert _listed(revisor(*args, "history")) == [third, second, first]
    assert _listed(revisor(*args, "history", f"base:{second}")) == [second, first]
    assert _listed(revisor(*args, "history", "0002:")) == [third, second]
    assert _listed(revisor(*args, "history", ":0001")) == [first]
    assert _listed(revisor(*args, "history", "0001:0002")) == [second, first]
    text = revisor(*project.args(), "history", "0002:head")
    assert text.code == 0
    assert text.out.splitlines() == [
        f"{second} -> {third} (head), create t3",
        f"{first} -> {second}, create t2",
    ]


def test_history_range_with_current_reads_the_database(revisor, any_db_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(3))
    args = (*project.args(), "--database-url", any_db_url, "--output", "json")
    assert _listed(revisor(*args, "history", ":current")) == [], "nothing applied at base"
    assert revisor(*args, "upgrade", "0002").code == 0
    assert _listed(revisor(*args, "history", ":current")) == ["0002t0000000", "0001t0000000"]
    assert _listed(revisor(*args, "history", "current:")) == ["0003t0000000", "0002t0000000"]


@pytest.mark.parametrize(
    ("rng", "message"),
    [
        ("ffff:head", "Can't locate revision identified by 'ffff'"),
        ("0003:0001", "Requested range 0003:0001 does not refer to ancestor/descendant"),
        ("0002", "history '0002': a range is [start]:[end], [start]: or :[end]"),
        ("base:0001:0002", "a range is [start]:[end]"),
    ],
)
def test_bad_history_range_is_exit_2_with_one_clear_message(
    revisor, tmp_path: Path, rng: str, message: str
) -> None:
    project = make_project(tmp_path, chain(3))
    run = revisor(*project.args(), "--output", "json", "history", rng)
    assert run.code == 2
    assert message in run.err
    assert run.err.count("error: ") == 1
    assert run.result["reason"] == "InvalidTarget"


AWKWARD = "it's 100% \\\\ naïve %(x)s %s; COMMIT; -- ü"


def test_a_step_row_keeps_every_value_exactly(revisor, any_db_url, tmp_path: Path) -> None:
    """Quotes, backslashes, %-placeholders and SQL in a docstring land in the row as they are.

    On psycopg the row and the step's COMMIT go in one pipeline, through the
    statement SQLAlchemy compiled (with its %-escaping): this is its test.
    """
    revs = chain(1)
    revs[0] = Rev(id=revs[0].id, message=AWKWARD, upgrade=revs[0].upgrade)
    project = make_project(tmp_path, revs)
    assert revisor(*project.args(), "--database-url", any_db_url, "upgrade").code == 0
    (step,) = history_rows(any_db_url, "step")
    assert step["description"] == "it's 100% \\ naïve %(x)s %s; COMMIT; -- ü"
    assert (step["revision"], step["from_revision"], step["to_revision"]) == (
        "0001t0000000", "base", "0001t0000000",
    )  # fmt: skip
    assert step["error"] is None and step["status"] == "applied"
    # SQLite gives the text back (history_rows reads with plain SQL).
    started, finished = (
        v if isinstance(v, dt.datetime) else dt.datetime.fromisoformat(v)
        for v in (step["started_at"], step["finished_at"])
    )
    assert started.utcoffset() is None or started.utcoffset() == dt.timedelta(0)
    assert started <= finished
    assert step["duration_seconds"] == pytest.approx((finished - started).total_seconds(), abs=1e-3)
    assert version(any_db_url) == {"0001t0000000"}


def test_a_step_row_with_commit_ends_the_step_only_where_one_round_trip_carries_both(
    db_url: str,
) -> None:
    """``record_step(commit=True)``: psycopg commits with the row; SQLite leaves it to Alembic."""
    history = History(None)
    run = new_run(command="upgrade", direction="upgrade", from_heads=(), target="head",
                  runner=None, engine_version=__version__)  # fmt: skip
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn, engine.connect() as other:
            history.ensure(conn)
            conn.commit()

            def visible() -> int:
                count = other.execute(sa.text("SELECT count(*) FROM revisor_history"))
                other.rollback()
                return int(count.scalar_one())

            for n in (1, 2):  # the second uses the cursor cached by the first
                conn.execute(sa.text("SELECT 1"))  # the step's transaction is open
                history.record_step(
                    conn, run, direction="upgrade", revision=f"r{n}", from_revision="base",
                    to_revision=f"r{n}", description="d", started_at=utcnow(),
                    status="applied", checksum=None, commit=True,
                )  # fmt: skip
                one_trip = db_url.startswith("postgresql")
                assert visible() == (n if one_trip else n - 1)
                conn.commit()  # Alembic's own commit: a no-op after ours, never an error
                assert visible() == n
    finally:
        engine.dispose()
