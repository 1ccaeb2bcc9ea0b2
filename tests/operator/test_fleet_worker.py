"""The fleet worker: one pass at a time per set, a burst of wakes makes one more pass.

These tests wait for things to happen (with a generous deadline), never for time to pass.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from revisor_operator.fleet import FleetWorker

DEADLINE = 30.0


def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


class Passes:
    """A pass function that records its calls and can be held inside a pass."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.inside: dict[tuple[str, str], int] = {}
        self.overlaps = 0
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.gone: set[tuple[str, str]] = set()
        self.fail: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()

    def __call__(self, namespace: str, name: str) -> bool:
        key = (namespace, name)
        with self.lock:
            self.calls.append(key)
            self.inside[key] = self.inside.get(key, 0) + 1
            if self.inside[key] > 1:
                self.overlaps += 1
        self.entered.set()
        self.hold.wait()
        with self.lock:
            self.inside[key] -= 1
            if self.fail.get(key, 0) > 0:
                self.fail[key] -= 1
                raise RuntimeError("the API said no")
        return key not in self.gone


@pytest.fixture
def passes() -> Passes:
    return Passes()


@pytest.fixture
def worker(passes: Passes) -> Iterator[FleetWorker]:
    retries: list[int] = []

    def on_error(namespace: str, name: str, exc: Exception, failures: int) -> float | None:
        retries.append(failures)
        return 0.0

    fleet = FleetWorker(lambda ns, name, full: passes(ns, name), on_error, threads=3, spacing=0.0)
    fleet.start()
    yield fleet
    passes.hold.set()
    fleet.stop()


def test_a_burst_of_wakes_during_a_pass_makes_one_more_pass(
    worker: FleetWorker, passes: Passes
) -> None:
    passes.hold.clear()
    worker.wake("ns", "shop")
    until(passes.entered.is_set, "the first pass")
    for _ in range(50):
        worker.wake("ns", "shop")
    passes.hold.set()
    until(lambda: worker.pending() == 0, "the passes to finish")
    assert passes.calls == [("ns", "shop")] * 2
    assert passes.overlaps == 0


def test_sets_are_passed_side_by_side_but_each_one_alone(
    worker: FleetWorker, passes: Passes
) -> None:
    for round_ in range(20):
        for name in ("a", "b", "c"):
            worker.wake("ns", name, delay=0.0 if round_ % 2 else 0.001)
    until(lambda: worker.pending() == 0, "the passes to finish")
    assert {name for _, name in passes.calls} == {"a", "b", "c"}
    assert passes.overlaps == 0


def test_a_failed_pass_is_retried(worker: FleetWorker, passes: Passes) -> None:
    passes.fail[("ns", "shop")] = 2
    worker.wake("ns", "shop")
    until(lambda: len(passes.calls) >= 3 and worker.pending() == 0, "the retries")
    assert passes.calls == [("ns", "shop")] * 3


def test_a_set_that_is_gone_is_forgotten(worker: FleetWorker, passes: Passes) -> None:
    passes.gone.add(("ns", "old"))
    worker.wake("ns", "old")
    until(lambda: passes.calls == [("ns", "old")] and worker.pending() == 0, "the pass")


def test_stop_ends_the_threads() -> None:
    fleet = FleetWorker(lambda namespace, name, full: True, lambda *_: None, threads=2)
    fleet.start()
    fleet.stop()
    assert not any(
        t.name.startswith("revisor-fleet") and t.is_alive() for t in threading.enumerate()
    )
