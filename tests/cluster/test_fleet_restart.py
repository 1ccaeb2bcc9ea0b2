"""``revisor-operator`` SIGKILLed mid-wave, started again: the rollout resumes, nothing twice.

The operator runs as the console script, in a process of its own, and is
killed while two tenants of a wave run (their second revision waits on a
flag file). The new operator finds the set's admitted targets in its status
and their children by name: no target is admitted again, no Job is made
twice, never more Jobs run than the wave's maxParallel, and every tenant's
database records exactly one run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cluster.conftest import Kube
from tests.cluster.test_operator_restart import _alive, operator_process
from tests.support.fleet_kit import (
    JobCounter,
    children,
    create_set,
    install_set_crd,
    migration_set,
    read_set,
    ready_message,
    set_reaches,
    tenant_secret,
)
from tests.support.kube import wait_for
from tests.support.operator_kit import (
    HEAD,
    REVS,
    create_config_map,
    db_version,
    history_rows,
    install_crd,
    slow,
)

pytestmark = pytest.mark.cluster

#: The ``ns`` fixture (tests/cluster/conftest.py) names namespaces after it.
PREFIX = "fleetkill"
ADOPTION_WINDOW_SECONDS = 3.0


def _holds_for(seconds: float, check: Callable[[], bool], what: str) -> None:
    """``check`` stays true for ``seconds`` (an observation window, polled)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), what
        time.sleep(0.2)


def test_killed_operator_resumes_the_wave_without_a_duplicate(
    process_kubelet: Kube, ns: str, tmp_path: Path
) -> None:
    kube = process_kubelet
    install_crd(kube)
    install_set_crd(kube)
    dbs = tmp_path / "dbs"
    dbs.mkdir(mode=0o777)
    dbs.chmod(0o777)
    names = ["acme", "beta", "delta", "gamma"]
    for name in names:
        tenant_secret(kube, ns, name, f"sqlite:///{dbs / name}.db")
    flag = tmp_path / "hold"
    flag.touch()
    create_config_map(kube, ns, [REVS[0], slow(REVS[1], flag), REVS[2]])
    counter = JobCounter(kube, ns, "shop")
    try:
        with operator_process(kube, ns, tmp_path / "first.log") as first:
            assert _alive(first)[0] == 200
            create_set(kube, ns, migration_set("shop", maxParallel=2))
            wait_for(
                lambda: len(counter.running),
                lambda running: running == 2,
                timeout=90,
                what="two tenants' Jobs running",
            )
            admitted = read_set(kube, ns, "shop")["status"]["active"]
            assert [a["target"] for a in admitted] == ["acme", "beta"]
            first.kill()
        jobs_before = dict(counter.created)
        with operator_process(kube, ns, tmp_path / "second.log") as second:
            assert _alive(second)[0] == 200
            _holds_for(
                ADOPTION_WINDOW_SECONDS,
                lambda: counter.created == jobs_before,
                "the restarted operator must not create another Job while the wave runs",
            )
            assert len(children(kube, ns, "shop")) == 2
            flag.unlink()
            done = set_reaches(kube, ns, "shop", "Succeeded", "Halted", "Failed")
    finally:
        flag.unlink(missing_ok=True)
        counter.stop()
    assert done["status"]["phase"] == "Succeeded", ready_message(done)
    assert done["status"]["readyTargets"] == "4/4"
    assert counter.max_running <= 2
    assert sorted(counter.per_child().values()) == [1, 1, 1, 1], counter.created
    for name in names:
        url = f"sqlite:///{dbs / name}.db"
        assert db_version(url) == {HEAD}
        assert len(history_rows(url, "run")) == 1, name
