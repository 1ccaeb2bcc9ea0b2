"""revisor_history records every run and step; verify compares them with the files."""

from __future__ import annotations

from pathlib import Path

from revisor import __version__

from tests.engine.conftest import history_rows
from tests.support.projects import chain, make_project


def test_history_has_a_row_per_run_and_per_step_with_checksums(
    revisor, db_url, tmp_path: Path, monkeypatch
) -> None:
    import hashlib

    monkeypatch.setenv("REVISOR_RUNNER", "shop-g3-1a2b-xyz")
    project = make_project(tmp_path, chain(2))
    args = (*project.args(), "--database-url", db_url)
    assert revisor(*args, "upgrade").code == 0
    assert revisor(*args, "downgrade", "-1").code == 0
    runs = history_rows(db_url)
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
    steps = history_rows(db_url, "step")
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


def test_verify_passes_on_untouched_scripts(revisor, db_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(3))
    args = (*project.args(), "--database-url", db_url)
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


def test_verify_counts_revisions_applied_outside_revisor(revisor, db_url, tmp_path: Path) -> None:
    project = make_project(tmp_path, chain(2))
    args = (*project.args(), "--database-url", db_url, "--output", "json")
    revisor(*args, "stamp", "head")
    run = revisor(*args, "verify")
    assert run.code == 0
    assert run.result["details"]["unrecorded"] == 2
