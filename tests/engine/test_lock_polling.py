"""How a runner waits for the lock: tries, sleeps with backoff and jitter, gives up in time."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st
from revisor.dialects import Backoff, poll


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def test_a_free_lock_is_taken_at_the_first_try_without_waiting() -> None:
    clock, missed = FakeClock(), []
    taken = poll(
        lambda: True,
        timeout=5,
        on_first_miss=lambda: missed.append(1),
        clock=clock,
        sleep=clock.sleep,
    )
    assert taken
    assert clock.sleeps == [] and missed == []


def test_a_zero_timeout_tries_once_and_never_says_it_waits() -> None:
    clock, tries, missed = FakeClock(), [], []

    def try_once() -> bool:
        tries.append(clock.now)
        return False

    taken = poll(
        try_once,
        timeout=0,
        on_first_miss=lambda: missed.append(1),
        clock=clock,
        sleep=clock.sleep,
    )
    assert not taken
    assert tries == [0.0] and clock.sleeps == [] and missed == []


def test_a_released_lock_is_taken_at_the_next_try_and_the_wait_is_announced_once() -> None:
    clock, missed = FakeClock(), []
    free_at = 3.0
    taken = poll(
        lambda: clock.now >= free_at,
        timeout=60,
        on_first_miss=lambda: missed.append(1),
        clock=clock,
        sleep=clock.sleep,
    )
    assert taken
    assert missed == [1]
    # The delays double up to the cap: the lock is taken at most a cap after it is free.
    assert free_at <= clock.now <= free_at + Backoff().cap


def test_delays_double_up_to_the_cap_and_keep_at_least_half_of_each() -> None:
    backoff = Backoff(first=0.1, cap=1.0)
    rng = random.Random(7)
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    for attempt, ceiling in enumerate(ceilings):
        delays = {backoff.delay(attempt, rng=rng) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1, "jittered: runners that started together drift apart"


@given(
    timeout=st.one_of(st.just(0.0), st.floats(min_value=0.001, max_value=120)),
    free_at=st.floats(min_value=0, max_value=300),
)
def test_never_waits_past_the_timeout_nor_misses_a_lock_freed_before_it(
    timeout: float, free_at: float
) -> None:
    """Property: a waiter gives up at its timeout, not later, and takes a lock freed in time."""
    clock = FakeClock()
    got = poll(lambda: clock.now >= free_at, timeout=timeout, clock=clock, sleep=clock.sleep)
    assert clock.now <= max(timeout, 0.0) + 1e-9
    if got:
        assert clock.now >= free_at
    else:
        assert free_at > 0 and clock.now >= timeout - 1e-9
    if free_at <= timeout - Backoff().cap:
        assert got, "a lock freed a whole cap before the deadline is always taken"
