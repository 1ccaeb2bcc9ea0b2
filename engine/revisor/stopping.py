"""A run asked to stop (SIGTERM: the Job's pod is being deleted) stops between revisions.

Kubernetes sends SIGTERM, waits ``terminationGracePeriodSeconds``, then
SIGKILL. A SIGKILL mid-revision is safe (the revision's transaction dies
with the session) but leaves the run row "running" and says nothing; so on
SIGTERM the engine finishes the revision it is in, if the grace period
allows, and then stops on its own: the run is recorded as interrupted, the
database is at that revision, and the output says so. A second SIGTERM
stops at once, as the default handler would.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

from revisor.errors import RevisorError

_stop = threading.Event()


class Interrupted(RevisorError):
    """The run stopped between two revisions because it was asked to."""


def request_stop() -> None:
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def reset() -> None:
    """Forget a request (tests run many CLI invocations in one process)."""
    _stop.clear()


def stop_between_revisions_on_sigterm() -> None:
    """Install the SIGTERM handler: the first asks the run to stop, the second exits."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        if _stop.is_set():
            raise SystemExit(128 + signum)
        sys.stderr.write("received SIGTERM: stopping after the revision that is running\n")
        sys.stderr.flush()
        request_stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
