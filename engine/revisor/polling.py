"""Waiting for something another process holds: try, back off with jitter, give up at a deadline.

Stdlib only: the engine's lock waits (every dialect, and the quick answer of
a run with nothing to do, which runs without SQLAlchemy) and ``wait-for``
share these.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass


def waiting_phrase(timeout: float | None, what: str) -> str:
    """What a runner that has to wait says, once, before it waits."""
    bound = "" if timeout is None else f" for up to {timeout:g}s"
    return f"waiting{bound} for {what}"


@dataclass(frozen=True)
class Backoff:
    """Delays between tries: doubling from ``first`` up to ``cap``, each half jittered.

    The jitter keeps runners that started together (a Deployment's pods, a
    Helm hook and the operator) from trying in lockstep.
    """

    first: float = 0.05
    cap: float = 1.0

    def delay(self, attempt: int, *, rng: random.Random | None = None) -> float:
        ceiling = min(self.cap, self.first * 2.0 ** min(attempt, 30))
        return ceiling / 2 + (rng or _RANDOM).uniform(0, ceiling / 2)


_RANDOM = random.Random()  # noqa: S311 - jitter, not cryptography
LOCK_BACKOFF = Backoff()


def poll(
    try_once: Callable[[], bool],
    *,
    timeout: float | None,
    on_first_miss: Callable[[], None] | None = None,
    backoff: Backoff = LOCK_BACKOFF,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Call ``try_once`` until it returns True or ``timeout`` seconds have passed.

    ``timeout`` 0 tries once; None tries forever. ``on_first_miss`` runs once,
    after the first failed try and only if there will be another. Returns
    whether ``try_once`` succeeded.
    """
    deadline = None if timeout is None else clock() + timeout
    attempt = 0
    while not try_once():
        now = clock()
        if deadline is not None and now >= deadline:
            return False
        if attempt == 0 and on_first_miss is not None:
            on_first_miss()
        pause = backoff.delay(attempt)
        if deadline is not None:
            pause = min(pause, max(deadline - now, 0.0))
        sleep(pause)
        attempt += 1
    return True


__all__ = ["LOCK_BACKOFF", "Backoff", "poll", "waiting_phrase"]
