"""SIGTERM (the Job's pod is being deleted): the run finishes its revision, then stops, and says so."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from tests.engine.conftest import history_rows, version
from tests.support.projects import Rev, chain, make_project, revisor_process


def test_sigterm_stops_at_the_next_revision_boundary_and_is_recorded_as_interrupted(
    db_url: str, tmp_path: Path
) -> None:
    flag = tmp_path / "hold"
    flag.touch()
    revs = chain(3)
    revs[1] = Rev(
        id=revs[1].id,
        down=revs[1].down,
        message="slow",
        upgrade=(
            "op.create_table('t2', sa.Column('id', sa.Integer))\n"
            f"import os\nwhile os.path.exists({str(flag)!r}):\n    time.sleep(0.05)"
        ),
        downgrade="op.drop_table('t2')",
    )
    project = make_project(tmp_path, revs)
    proc = revisor_process(*project.args(), "--database-url", db_url, "--output", "json", "upgrade")
    deadline = time.monotonic() + 60
    while version(db_url) != {"0001t0000000"}:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    time.sleep(0.3)  # inside revision 2 now
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    flag.unlink()  # revision 2 can finish within the grace period
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, err
    assert "received SIGTERM: stopping after the revision that is running" in err
    result = json.loads(out)
    assert result["reason"] == "Interrupted"
    assert [s["revision"] for s in result["applied"]] == ["0001t0000000", "0002t0000000"]
    assert "the run stopped between revisions, 2 of 3 applied" in result["error"]
    assert version(db_url) == {"0002t0000000"}, "revision 2 finished and committed"
    runs = history_rows(db_url)
    assert [r["status"] for r in runs] == ["interrupted"]
    assert "asked to stop (SIGTERM)" in runs[0]["error"]
