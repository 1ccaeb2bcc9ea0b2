"""The work queue of passes: woken, periodic, polled, coalesced, retried, forgotten.

Real threads and short intervals (tens of milliseconds), with margins that a
loaded machine keeps: each test waits for what it expects, up to seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from revisor_operator.adapters.workqueue import RESYNC, RETRY, WAKE, Outcome, Trigger, WorkQueue


class Recorder:
    """A ``run`` that records its calls, and answers what a test tells it."""

    def __init__(self, *, seconds: float = 0.0) -> None:
        self.calls: list[tuple[str, str, Trigger]] = []
        self.seconds = seconds
        self.outcome: Outcome = "done"
        self.fail: Exception | None = None
        self.running: set[tuple[str, str]] = set()
        self.overlapped = False
        self.lock = threading.Lock()

    def __call__(self, namespace: str, name: str, trigger: Trigger) -> Outcome:
        with self.lock:
            if (namespace, name) in self.running:
                self.overlapped = True
            self.running.add((namespace, name))
            self.calls.append((namespace, name, trigger))
        time.sleep(self.seconds)
        with self.lock:
            self.running.discard((namespace, name))
        if self.fail is not None:
            raise self.fail
        return self.outcome

    def of(self, name: str) -> list[Trigger]:
        with self.lock:
            return [t for _, n, t in self.calls if n == name]


def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def errors() -> list[tuple[str, int]]:
    return []


@pytest.fixture
def queue(recorder: Recorder, errors: list[tuple[str, int]]) -> Iterator[WorkQueue]:
    def on_error(namespace: str, name: str, exc: Exception, failures: int) -> float | None:
        errors.append((name, failures))
        return 0.05 if failures < 3 else None

    work = WorkQueue(recorder, on_error, threads=3, spacing=0.05)
    work.start()
    yield work
    work.stop()


def test_a_wake_runs_a_pass_at_once(queue: WorkQueue, recorder: Recorder) -> None:
    queue.wake("ns", "a")
    until(lambda: recorder.of("a") == [WAKE])


def test_wakes_during_a_pass_make_one_more_pass(queue: WorkQueue, recorder: Recorder) -> None:
    recorder.seconds = 0.2
    queue.wake("ns", "a")
    until(lambda: len(recorder.of("a")) == 1)
    for _ in range(10):
        queue.wake("ns", "a")
    until(lambda: len(recorder.of("a")) == 2)
    time.sleep(0.4)
    assert recorder.of("a") == [WAKE, WAKE]
    assert not recorder.overlapped


def test_a_delayed_wake_waits_and_earlier_ones_win(queue: WorkQueue, recorder: Recorder) -> None:
    queue.wake("ns", "a", delay=0.3)
    time.sleep(0.1)
    assert recorder.of("a") == []
    queue.wake("ns", "b", delay=0.3)
    queue.wake("ns", "b")  # the sooner of the two
    until(lambda: recorder.of("b") == [WAKE])
    until(lambda: recorder.of("a") == [WAKE])


def test_a_tracked_key_is_resynced_every_interval_after_its_last_pass(
    queue: WorkQueue, recorder: Recorder
) -> None:
    queue.track("ns", "a", every=0.1)
    time.sleep(0.05)
    assert recorder.of("a") == [], "the first resync comes one interval after it is seen"
    until(lambda: recorder.of("a")[:3] == [RESYNC, RESYNC, RESYNC], timeout=3)


def test_a_pass_for_any_reason_is_the_resync(queue: WorkQueue, recorder: Recorder) -> None:
    queue.track("ns", "a", every=0.4)
    time.sleep(0.2)
    queue.wake("ns", "a")
    until(lambda: recorder.of("a") == [WAKE])
    time.sleep(0.3)  # 0.5 s after it was seen, but only 0.3 s after its pass
    assert recorder.of("a") == [WAKE]
    until(lambda: recorder.of("a") == [WAKE, RESYNC])


def test_a_poll_runs_between_resyncs_while_it_is_given(
    queue: WorkQueue, recorder: Recorder
) -> None:
    queue.track("ns", "a", every=60.0, poll=(0.05, "progress"))
    until(lambda: recorder.of("a")[:3] == ["progress"] * 3)
    queue.track("ns", "a", every=60.0, poll=None)
    time.sleep(0.1)
    count = len(recorder.of("a"))
    time.sleep(0.2)
    assert len(recorder.of("a")) == count


def test_a_skipped_poll_leaves_the_resync_clock_alone(queue: WorkQueue, recorder: Recorder) -> None:
    recorder.outcome = "skipped"
    queue.track("ns", "a", every=0.3, poll=(0.05, "progress"))
    until(lambda: RESYNC in recorder.of("a"), timeout=3)
    triggers = recorder.of("a")
    assert triggers.count("progress") >= 3, triggers


def test_a_failed_pass_is_retried_as_on_error_says_then_left_to_the_resync(
    queue: WorkQueue, recorder: Recorder, errors: list[tuple[str, int]]
) -> None:
    recorder.fail = RuntimeError("boom")
    queue.track("ns", "a", every=0.5)
    queue.wake("ns", "a")
    until(lambda: len(errors) == 3)
    assert errors == [("a", 1), ("a", 2), ("a", 3)]
    assert recorder.of("a") == [WAKE, RETRY, RETRY]
    until(lambda: len(errors) == 4, timeout=3)  # the next resync: counting starts again
    assert errors[-1] == ("a", 1) and recorder.of("a")[-1] == RESYNC


def test_a_key_gone_or_forgotten_has_no_more_passes(queue: WorkQueue, recorder: Recorder) -> None:
    recorder.outcome = "gone"
    queue.track("ns", "gone", every=0.05)
    until(lambda: recorder.of("gone") == [RESYNC])
    recorder.outcome = "done"
    queue.track("ns", "forgotten", every=0.05)
    queue.forget("ns", "forgotten")
    time.sleep(0.2)
    assert recorder.of("gone") == [RESYNC]
    assert recorder.of("forgotten") == []
    assert queue.tracked() == 0


def test_keys_run_side_by_side_and_one_key_never_overlaps(
    queue: WorkQueue, recorder: Recorder
) -> None:
    recorder.seconds = 0.2
    started = time.monotonic()
    for name in ("a", "b", "c"):
        queue.wake("ns", name)
    until(lambda: len(recorder.calls) == 3 and not recorder.running)
    assert time.monotonic() - started < 0.55, "three keys on three threads"
    for _ in range(5):
        queue.wake("ns", "a")
        time.sleep(0.03)
    until(lambda: not queue.pending())
    assert not recorder.overlapped


def test_many_keys_each_get_their_resync() -> None:
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def run(namespace: str, name: str, trigger: Trigger) -> Outcome:
        with lock:
            seen[name] = seen.get(name, 0) + 1
        return "done"

    work = WorkQueue(run, lambda *_: None, threads=2)
    work.start()
    try:
        for i in range(500):
            work.track("ns", f"m{i}", every=0.2)
        until(lambda: len(seen) == 500 and min(seen.values()) >= 2, timeout=10)
    finally:
        work.stop()


def test_passes_run_in_a_copy_of_the_context_lent_to_the_queue() -> None:
    """kopf.event finds kopf's event queue in the context of the handler that lends it."""
    import contextvars

    where: contextvars.ContextVar[str] = contextvars.ContextVar("where")
    seen: list[str] = []

    def run(namespace: str, name: str, trigger: Trigger) -> Outcome:
        seen.append(where.get("nowhere"))
        where.set("changed by a pass")
        return "done"

    work = WorkQueue(run, lambda *_: None, threads=1)
    work.start()
    try:
        token = where.set("kopf's")
        assert work.wants_context()
        work.use_context(contextvars.copy_context())
        where.reset(token)
        work.use_context(contextvars.copy_context())  # the first one stays
        assert not work.wants_context()
        work.wake("ns", "a")
        until(lambda: len(seen) == 1)
        work.wake("ns", "a")
        until(lambda: len(seen) == 2)
        assert seen == ["kopf's", "kopf's"]
    finally:
        work.stop()


def test_an_urgent_wake_goes_before_the_passes_already_due() -> None:
    """A new resource's first pass does not wait behind a backlog of resyncs and follow-ups."""
    recorder = Recorder(seconds=0.05)
    work = WorkQueue(recorder, lambda *_: None, threads=1, spacing=0.0)
    work.start()
    try:
        work.wake("ns", "first")
        until(lambda: len(recorder.calls) == 1)
        for i in range(5):
            work.wake("ns", f"backlog-{i}")
        work.wake("ns", "new", urgent=True)
        until(lambda: len(recorder.calls) == 7)
        assert [n for _, n, _ in recorder.calls][:2] == ["first", "new"]
    finally:
        work.stop()
