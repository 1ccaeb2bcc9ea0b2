"""Closes a startup race in kopf's namespace discovery (kopf 1.45 and earlier).

With ``--namespace`` patterns (``team-*``), or with exact names and the
right to list namespaces, kopf learns which namespaces to serve in two
steps: its namespace observer *lists* namespaces, then starts a *watch*
stream. The stream begins with its own fresh listing, whose objects arrive
as events of type ``None``, and the observer drops those as "already
known". A namespace created between the two listings is in the second one
only, so it is dropped, and no later watch event mentions it. kopf never
serves it. Nothing is logged, and only an operator restart helps.

The window is short, but it opens on every operator start. It is hit when a
namespace is created while the operator comes up, e.g. an install that
creates both at once, or a fresh operator on a busy 2-core machine. The
cluster tests hit it: an operator started for one test module missed the
namespace its first test created a moment later.

The fix feeds those listing events to kopf's own ``revise_namespaces`` as
well. Adding a namespace that is already known is a no-op (a set), and a
listed object is never a deletion, so nothing else changes. It wraps kopf's
function rather than copy it, and refuses to install when kopf's shape is
not the one it was written for. In that case the operator still runs, as
plain kopf would, and says so once in its log.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

_MARK = "_revisor_serves_listed_namespaces"
_PROCESSOR_KEYWORDS = {"raw_event", "namespaces", "insights"}
_REVISER_KEYWORDS = {"raw_events", "namespaces", "insights"}


def serve_namespaces_listed_at_watch_start() -> bool:
    """Make kopf's namespace observer act on its watch's initial listing too.

    Idempotent. Returns whether the fix is in place (False: kopf's internals
    differ from what it expects; the operator then runs as plain kopf does).
    """
    try:
        from kopf._core.reactor import observation
    except ImportError:  # pragma: no cover - a kopf without that module
        log.warning("kopf's namespace observer was not found; its startup race stays open")
        return False
    original = getattr(observation, "process_discovered_namespace_event", None)
    revise = getattr(observation, "revise_namespaces", None)
    if getattr(original, _MARK, False):
        return True
    if (
        original is None
        or revise is None
        or not _has_keywords(original, _PROCESSOR_KEYWORDS)
        or not _has_keywords(revise, _REVISER_KEYWORDS)
    ):
        log.warning("kopf's namespace observer has changed shape; its startup race stays open")
        return False
    # setattr: the replacement is typed loosely on purpose (kopf's signature is private).
    setattr(observation, "process_discovered_namespace_event", _serving_listed(original, revise))  # noqa: B010
    return True


def _has_keywords(function: Callable[..., Any], names: set[str]) -> bool:
    parameters = inspect.signature(function).parameters
    return names <= set(parameters)


def _serving_listed(
    original: Callable[..., Awaitable[None]], revise: Callable[..., None]
) -> Callable[..., Awaitable[None]]:
    async def process_discovered_namespace_event(
        *, raw_event: Any, namespaces: Any, insights: Any, **kwargs: Any
    ) -> None:
        if raw_event["type"] is not None:
            await original(raw_event=raw_event, namespaces=namespaces, insights=insights, **kwargs)
            return
        async with insights.revised:
            known = len(insights.namespaces)
            revise(raw_events=[raw_event], insights=insights, namespaces=namespaces)
            if len(insights.namespaces) != known:  # wake the orchestrator only for news
                insights.revised.notify_all()

    setattr(process_discovered_namespace_event, _MARK, True)
    process_discovered_namespace_event.__wrapped__ = original  # type: ignore[attr-defined]
    return process_discovered_namespace_event
