"""Passes over many resources, on a few threads of our own: woken, periodic, coalesced.

kopf gives each object a timer of its own: an asyncio task per object and per
timer, and the object's latest body kept in memory for as long as a timer may
fire. With a thousand resources that is a thousand bodies and a few thousand
tasks, for a resync that mostly finds nothing to do. :class:`WorkQueue` keeps,
per key, only when its next pass is due, and runs the passes on its threads:

* ``track(key, every=..., poll=...)``: a pass every ``every`` seconds (the
  resync), and, while ``poll`` is given, one every ``poll`` seconds too (a
  rollout or a running Job being followed). Any pass of a key counts as its
  resync: the next one is due ``every`` seconds after it;
* ``wake(key, delay=...)``: a pass within ``delay`` seconds. Wakes of a key
  whose pass is already due coalesce into it; a wake during its pass makes one
  more pass after it, no sooner than ``spacing`` seconds after the last. An
  ``urgent`` wake goes before every other pass that is due (a new resource's
  first pass before a backlog of resyncs and follow-ups);
* ``forget(key)``: no more passes (the resource is gone).

Passes of one key never overlap. A pass that fails is retried when
``on_error`` says, and the periodic passes go on regardless. Pure threading:
what a pass does is the caller's ``run``, in a copy of the context given to
:meth:`WorkQueue.use_context` (kopf's: ``kopf.event`` finds its event queue there).
"""

from __future__ import annotations

import contextvars
import heapq
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import structlog

log = structlog.get_logger("revisor_operator.workqueue")

Key = tuple[str, str]
#: Why a pass runs: woken, its resync, a retry after a failure, or its poll's name.
Trigger = str
#: ``done``: a pass ran; ``skipped``: a poll found nothing to do (the resync clock
#: goes on); ``gone``: the key's object no longer exists.
Outcome = Literal["done", "skipped", "gone"]

WAKE: Trigger = "wake"
RESYNC: Trigger = "resync"
RETRY: Trigger = "retry"


@dataclass
class _Entry:
    every: float
    resync_at: float
    poll: float | None = None
    poll_name: str = ""
    poll_at: float | None = None
    woken_at: float | None = None
    retry_at: float | None = None
    #: When the last pass ended (a wake comes no sooner than ``spacing`` after it).
    ended_at: float = float("-inf")
    running: bool = False
    forgotten: bool = False
    failures: int = 0
    #: The pending wake goes before other due passes.
    urgent: bool = False
    #: The due time of the heap entry that stands for this key, and whether it is on
    #: the urgent heap (other entries of the key are stale).
    queued_at: float | None = None
    queued_urgent: bool = False

    def due(self) -> tuple[float, Trigger]:
        """The earliest due pass, and its trigger (a wake or a retry before a periodic one)."""
        candidates: list[tuple[float, int, Trigger]] = [(self.resync_at, 3, RESYNC)]
        if self.woken_at is not None:
            candidates.append((self.woken_at, 0, WAKE))
        if self.retry_at is not None:
            candidates.append((self.retry_at, 1, RETRY))
        if self.poll_at is not None:
            candidates.append((self.poll_at, 2, self.poll_name))
        at, _, trigger = min(candidates)
        return at, trigger


class WorkQueue:
    """Runs ``run(namespace, name, trigger)`` for keys as they fall due, on ``threads`` threads.

    ``on_error(namespace, name, exc, failures)`` says when to retry a failed pass
    (seconds), or None for the next periodic pass; ``failures`` counts the key's
    failures in a row, and None starts the count again.
    """

    def __init__(
        self,
        run: Callable[[str, str, Trigger], Outcome],
        on_error: Callable[[str, str, Exception, int], float | None],
        *,
        threads: int = 4,
        spacing: float = 0.5,
        name: str = "revisor-passes",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._run = run
        self._on_error = on_error
        self._threads_wanted = threads
        self._spacing = spacing
        self._name = name
        self._clock = clock
        self._entries: dict[Key, _Entry] = {}
        self._heap: list[tuple[float, int, Key]] = []
        self._urgent: list[tuple[float, int, Key]] = []
        self._seq = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._context: contextvars.Context | None = None

    # -- the callers' side --------------------------------------------------------------

    def start(self) -> None:
        for i in range(self._threads_wanted):
            thread = threading.Thread(target=self._loop, name=f"{self._name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = self._clock() + timeout
        for thread in self._threads:
            thread.join(max(deadline - self._clock(), 0.0))
        self._threads.clear()

    def wants_context(self) -> bool:
        return self._context is None

    def use_context(self, context: contextvars.Context) -> None:
        """Run every pass (and ``on_error``) in a copy of ``context``; the first given stays."""
        if self._context is None:
            self._context = context

    def track(
        self, namespace: str, name: str, *, every: float, poll: tuple[float, str] | None = None
    ) -> None:
        """Periodic passes of a key: every ``every`` seconds, and every ``poll[0]`` while given.

        A key seen for the first time has its first resync ``every`` seconds from now.
        """
        with self._cond:
            now = self._clock()
            entry = self._entries.get((namespace, name))
            if entry is None:
                entry = _Entry(every=every, resync_at=now + every)
                self._entries[namespace, name] = entry
            elif entry.forgotten:
                return
            if every != entry.every:
                entry.every = every
                entry.resync_at = min(entry.resync_at, now + every)
            interval, poll_name = poll if poll is not None else (None, "")
            if interval != entry.poll or poll_name != entry.poll_name:
                entry.poll, entry.poll_name = interval, poll_name
                entry.poll_at = None if interval is None else now + interval
            self._queue((namespace, name), entry)

    def wake(self, namespace: str, name: str, *, delay: float = 0.0, urgent: bool = False) -> None:
        """A pass of the key within ``delay`` seconds (or when one is due already)."""
        with self._cond:
            now = self._clock()
            entry = self._entries.get((namespace, name))
            if entry is None:
                # Not tracked (yet): woken all the same, resynced from now on.
                entry = _Entry(every=float("inf"), resync_at=float("inf"))
                self._entries[namespace, name] = entry
            at = max(now + delay, entry.ended_at + self._spacing)
            entry.woken_at = at if entry.woken_at is None else min(entry.woken_at, at)
            entry.urgent = entry.urgent or urgent
            self._queue((namespace, name), entry)

    def forget(self, namespace: str, name: str) -> None:
        """No more passes of the key (one running ends first)."""
        with self._cond:
            entry = self._entries.get((namespace, name))
            if entry is None:
                return
            if entry.running:
                entry.forgotten = True
            else:
                del self._entries[namespace, name]

    def tracked(self) -> int:
        with self._cond:
            return len(self._entries)

    def pending(self) -> int:
        """Keys whose pass is woken, being retried or running (for tests and the log)."""
        with self._cond:
            return sum(
                1
                for e in self._entries.values()
                if e.running or e.woken_at is not None or e.retry_at is not None
            )

    # -- the threads' side --------------------------------------------------------------

    def _earliest(self) -> float:
        return min(
            self._heap[0][0] if self._heap else float("inf"),
            self._urgent[0][0] if self._urgent else float("inf"),
        )

    def _queue(self, key: Key, entry: _Entry) -> None:
        """Put the key on a heap at its due time (called with the lock held)."""
        if entry.running:
            return  # re-queued when its pass ends
        at, trigger = entry.due()
        urgent = entry.urgent and trigger == WAKE
        queued = entry.queued_at is not None and entry.queued_at <= at
        if queued and (entry.queued_urgent or not urgent):
            return  # already on a heap for that time or sooner: it re-checks then
        entry.queued_at, entry.queued_urgent = at, urgent
        earliest = self._earliest()
        self._seq += 1
        heapq.heappush(self._urgent if urgent else self._heap, (at, self._seq, key))
        if at < earliest or urgent:
            # Sooner than any thread is waiting for: let them look again.
            self._cond.notify_all()

    def _pop_due(
        self, heap: list[tuple[float, int, Key]], now: float
    ) -> tuple[Key, Trigger] | None:
        """The first key on ``heap`` whose pass is due, marked running (lock held)."""
        urgent = heap is self._urgent
        while heap and heap[0][0] <= now:
            at, _, key = heapq.heappop(heap)
            entry = self._entries.get(key)
            if (
                entry is None
                or entry.running
                or entry.queued_at != at
                or entry.queued_urgent != urgent
            ):
                continue  # a stale heap entry
            entry.queued_at = None
            due, trigger = entry.due()
            if due > now:
                self._queue(key, entry)  # its due time moved on
                continue
            entry.running = True
            if trigger == WAKE:
                entry.woken_at, entry.urgent = None, False
            elif trigger == RETRY:
                entry.retry_at = None
            return key, trigger
        return None

    def _next(self) -> tuple[Key, Trigger] | None:
        """The key whose pass is due first (urgent ones before), marked running, and why;
        None when stopping."""
        with self._cond:
            while not self._stopping:
                now = self._clock()
                picked = self._pop_due(self._urgent, now) or self._pop_due(self._heap, now)
                if picked is not None:
                    if self._earliest() <= now:
                        self._cond.notify()  # more is due: another thread takes it
                    return picked
                timeout = self._earliest() - now
                self._cond.wait(timeout=min(max(timeout, 0.001), 60.0))
            return None

    def _loop(self) -> None:
        while True:
            picked = self._next()
            if picked is None:
                return
            key, trigger = picked
            namespace, name = key
            outcome: Outcome = "done"
            failed: Exception | None = None
            context = self._context.copy() if self._context is not None else None
            try:
                if context is not None:
                    outcome = context.run(self._run, namespace, name, trigger)
                else:
                    outcome = self._run(namespace, name, trigger)
            except Exception as exc:
                failed = exc
            retry: float | None = None
            if failed is not None:
                with self._cond:
                    failures = self._entries[key].failures + 1
                try:
                    if context is not None:
                        retry = context.run(self._on_error, namespace, name, failed, failures)
                    else:
                        retry = self._on_error(namespace, name, failed, failures)
                except Exception:
                    log.exception("a pass's error handler failed", namespace=namespace, name=name)
            self._finish(key, outcome, failed is not None, retry)

    def _finish(self, key: Key, outcome: Outcome, failed: bool, retry: float | None) -> None:
        with self._cond:
            entry = self._entries[key]
            entry.running = False
            now = self._clock()
            if entry.forgotten or (outcome == "gone" and entry.woken_at is None):
                del self._entries[key]
                return
            if failed:
                entry.failures = entry.failures + 1 if retry is not None else 0
                entry.retry_at = None if retry is None else now + retry
            else:
                entry.failures = 0
            if outcome != "skipped":
                entry.ended_at = now
                entry.resync_at = now + entry.every
            if entry.poll is not None:
                entry.poll_at = now + entry.poll
            if entry.woken_at is not None:
                entry.woken_at = max(entry.woken_at, now + self._spacing)
            self._queue(key, entry)
