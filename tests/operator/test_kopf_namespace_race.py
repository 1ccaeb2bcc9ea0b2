"""The fix for kopf's namespace-discovery race, against the installed kopf's own functions.

kopf's namespace observer lists namespaces, then starts a watch whose own
initial listing arrives as events of type ``None``. kopf drops those events,
so a namespace created between the two listings is never served. The
cluster-level proof is ``tests/cluster/test_operator_startup.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import kopf
import pytest
from kopf._cogs.structs import bodies, references
from kopf._core.reactor import observation
from revisor_operator.adapters import kopf_namespace_race as kopf_fixes

PATTERNS = ["team-*"]


@pytest.fixture
def unpatched() -> Iterator[Any]:
    """kopf's original function, restored after the test whatever the test installed."""
    import revisor_operator.handlers  # noqa: F401  # installs the fix, as the operator does

    installed: Any = observation.process_discovered_namespace_event  # the fix, typed loosely
    original = installed.__wrapped__
    observation.process_discovered_namespace_event = original
    yield original
    observation.process_discovered_namespace_event = installed


def listed(name: str) -> bodies.RawEvent:
    """A namespace as the watch's initial listing yields it."""
    return {"type": None, "object": {"metadata": {"name": name}}}


def feed(event: bodies.RawEvent) -> set[references.NamespaceName | None]:
    """Run kopf's current namespace processor on one event; the namespaces it then serves."""

    async def run() -> set[references.NamespaceName | None]:
        insights = references.Insights()
        await observation.process_discovered_namespace_event(
            raw_event=event, namespaces=PATTERNS, insights=insights
        )
        return set(insights.namespaces)

    return asyncio.run(run())


def test_the_operator_installs_the_fix_when_it_registers_its_handlers() -> None:
    from revisor_operator.handlers import register
    from revisor_operator.settings import Settings

    register(kopf.OperatorRegistry(), Settings())
    assert getattr(observation.process_discovered_namespace_event, kopf_fixes._MARK, False)


def test_installed_kopf_still_drops_a_namespace_seen_only_in_the_watch_listing(
    unpatched: Any,
) -> None:
    """If this fails, kopf fixed the race upstream: drop kopf_fixes and this test."""
    assert feed(listed("team-new")) == set()


def test_a_namespace_seen_only_in_the_watch_listing_is_served(unpatched: Any) -> None:
    assert kopf_fixes.serve_namespaces_listed_at_watch_start()
    assert feed(listed("team-new")) == {"team-new"}


def test_a_listed_namespace_outside_the_patterns_is_not_served(unpatched: Any) -> None:
    assert kopf_fixes.serve_namespaces_listed_at_watch_start()
    assert feed(listed("other")) == set()


def test_watch_events_still_take_kopfs_own_path(unpatched: Any) -> None:
    """ADDED serves a namespace; DELETED of a served one withdraws it."""
    assert kopf_fixes.serve_namespaces_listed_at_watch_start()
    assert feed({"type": "ADDED", "object": {"metadata": {"name": "team-a"}}}) == {"team-a"}

    async def added_then_deleted() -> set[references.NamespaceName | None]:
        insights = references.Insights()
        kinds: tuple[bodies.RawEventType, ...] = ("ADDED", "DELETED")
        for kind in kinds:
            event: bodies.RawEvent = {"type": kind, "object": {"metadata": {"name": "team-a"}}}
            await observation.process_discovered_namespace_event(
                raw_event=event, namespaces=PATTERNS, insights=insights
            )
        return set(insights.namespaces)

    assert asyncio.run(added_then_deleted()) == set()


def test_installing_twice_wraps_once(unpatched: Any) -> None:
    assert kopf_fixes.serve_namespaces_listed_at_watch_start()
    first = observation.process_discovered_namespace_event
    assert kopf_fixes.serve_namespaces_listed_at_watch_start()
    assert observation.process_discovered_namespace_event is first


async def _renamed_processor(*, event: Any, patterns: Any, state: Any) -> None:
    return None


def _renamed_reviser(*, events: Any, patterns: Any, state: Any) -> None:
    return None


@pytest.mark.parametrize(
    ("attribute", "replacement"),
    [
        ("process_discovered_namespace_event", _renamed_processor),
        ("revise_namespaces", _renamed_reviser),
        ("revise_namespaces", None),
    ],
    ids=["processor-renamed-keywords", "reviser-renamed-keywords", "reviser-gone"],
)
def test_a_kopf_of_another_shape_is_left_alone_with_a_warning(
    unpatched: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    attribute: str,
    replacement: Any,
) -> None:
    monkeypatch.setattr(observation, attribute, replacement)
    with caplog.at_level(logging.WARNING, logger="revisor_operator.kopf_fixes"):
        assert not kopf_fixes.serve_namespaces_listed_at_watch_start()
    assert not getattr(observation.process_discovered_namespace_event, kopf_fixes._MARK, False)
    assert "startup race stays open" in caplog.text
