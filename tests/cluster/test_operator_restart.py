"""The operator stopped while its Job runs, then started again: it adopts, never duplicates.

A migration that must not run twice is kept running (its second revision
waits while a flag file exists) while the operator that created its Job is
stopped and a new one started. The new operator finds the Job by its
deterministic name, creates no other, and records the result once the Job
finishes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.conftest import Kube
from tests.cluster.test_operator_kit import (
    HEAD,
    REVS,
    create,
    create_config_map,
    create_secret,
    db_version,
    history_rows,
    jobs_of,
    migration,
    read,
    running_operator,
    settled,
    slow,
)
from tests.support.kube import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

ADOPTION_WINDOW_SECONDS = 3.0


#: The ``ns`` fixture (tests/cluster/conftest.py) names namespaces after it.
PREFIX = "restart"


def _finished(job: dict[str, Any]) -> bool:
    conditions = job["status"].get("conditions") or []
    return any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions)


def _holds_for(seconds: float, check: Callable[[], bool], what: str) -> None:
    """``check`` stays true for ``seconds`` (an observation window, polled)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), what
        time.sleep(0.2)


@pytest.mark.parametrize("finish_while_down", [False, True], ids=["runs-on", "finished-meanwhile"])
def test_restarted_operator_adopts_the_running_job(
    kube: Kube, ns: str, pg_url: str, tmp_path: Path, finish_while_down: bool
) -> None:
    """Stop the operator mid-run, start another: one Job for the generation, then Succeeded.

    Whether the Job still runs when the new operator starts or finished
    while no operator ran, its result is recorded and no second Job made.
    """
    flag = tmp_path / "hold"
    flag.touch()
    revs = [REVS[0], slow(REVS[1], flag), REVS[2]]
    create_secret(kube, ns, pg_url)
    create_config_map(kube, ns, revs)
    try:
        with running_operator(kube, ns):
            create(kube, ns, migration("app"))
            # The engine committed the first revision and sits inside the second.
            wait_for(lambda: db_version(pg_url), lambda v: v == {REVS[0].id}, timeout=60)
            wait_for(
                lambda: read(kube, ns, "app"),
                lambda obj: (obj.get("status") or {}).get("phase") == "Running",
                what="status Running",
            )
        [job] = jobs_of(kube, ns, "app")
        assert not _finished(job), "the Job must still run while no operator does"
        if finish_while_down:
            flag.unlink()
            wait_for(
                lambda: jobs_of(kube, ns, "app"),
                lambda jobs: all(_finished(j) for j in jobs),
                timeout=60,
                what="the Job to finish with no operator running",
            )

        with running_operator(kube, ns):
            # Its resume handler sees the Job (running or finished) within this window.
            _holds_for(
                ADOPTION_WINDOW_SECONDS,
                lambda: (
                    [j["metadata"]["uid"] for j in jobs_of(kube, ns, "app")]
                    == [job["metadata"]["uid"]]
                ),
                "the restarted operator must not create a second Job",
            )
            flag.unlink(missing_ok=True)
            done = settled(kube, ns, "app")
    finally:
        flag.unlink(missing_ok=True)

    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert status["currentRevision"] == HEAD
    assert status["lastRun"]["job"] == job["metadata"]["name"]
    assert [s["revision"] for s in status["lastRun"]["applied"]] == [r.id for r in revs]
    assert len(status["history"]) == 1
    jobs = jobs_of(kube, ns, "app")
    assert [j["metadata"]["uid"] for j in jobs] == [job["metadata"]["uid"]]
    assert jobs[0]["metadata"]["annotations"]["revisor.dev/generation"] == "1"
    assert len(history_rows(pg_url, "run")) == 1
