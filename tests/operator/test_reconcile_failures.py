"""When a reconcile fails: retried soon, retried patiently, or given up with an Event.

The decision is :func:`revisor_operator.handlers.after_failure`, a function
of the exception and the attempt; the work queue retries a pass when it says
(:func:`revisor_operator.handlers._pass_failed`), and kopf's deletion handler
raises ``TemporaryError``. The deletion handler is the exception to giving up:
it never does, or kopf would drop the finalizer.
"""

from __future__ import annotations

from typing import Any

import kopf
import pytest
from revisor_operator import handlers
from revisor_operator.adapters.kube import Conflict, Forbidden, KubeError, NotFound
from revisor_operator.adapters.workqueue import WAKE
from revisor_operator.handlers import (
    API_RETRY_MAX_SECONDS,
    MAX_BUG_ATTEMPTS,
    Retry,
    after_failure,
    on_delete,
)
from revisor_operator.settings import Settings

from .factories import migration
from .fake_kube import FakeKube, runtime

#: The resync interval the messages quote.
RESYNC = 30.0


def test_a_conflict_rereads_at_once_and_never_gives_up() -> None:
    for retry in (0, 50):
        then = after_failure(
            Conflict("changed", status=409, reason="Conflict"), retry=retry, resync_seconds=RESYNC
        )
        assert then == Retry("the resource changed meanwhile; re-reading", delay=1.0)


@pytest.mark.parametrize(
    "error",
    [
        KubeError("GET /apis: connection refused", status=0),
        KubeError("etcdserver: request timed out", status=500),
        KubeError("service unavailable", status=503),
        KubeError("too many requests", status=429, reason="TooManyRequests"),
        KubeError("Unauthorized", status=401, reason="Unauthorized"),
        NotFound("namespaces shop not found", status=404, reason="NotFound"),
    ],
    ids=["no-answer", "500", "503", "429", "401", "404"],
)
def test_an_unavailable_api_is_retried_with_a_growing_capped_delay(error: KubeError) -> None:
    """Not ours to fix: 10 s, 20 s, 40 s, then every minute, however long it lasts."""
    delays = [after_failure(error, retry=retry, resync_seconds=RESYNC).delay for retry in range(6)]
    assert delays == [10.0, 20.0, 40.0, 60.0, 60.0, 60.0]
    late = after_failure(error, retry=1000, resync_seconds=RESYNC)
    assert late.delay == API_RETRY_MAX_SECONDS and not late.bug
    assert str(error) in late.message


def test_forbidden_is_retried_every_minute_until_rbac_is_granted() -> None:
    error = Forbidden('jobs.batch is forbidden: User "system:serviceaccount:x:y" cannot create')
    for retry in (0, 3, 500):
        then = after_failure(error, retry=retry, resync_seconds=RESYNC)
        assert then.delay == 60.0 and not then.bug
        assert "grant it in its RBAC" in then.message and "jobs.batch is forbidden" in then.message


def test_a_bug_is_retried_a_few_times_with_backoff_then_given_up() -> None:
    """5, 10, 20, 40 seconds apart; the fifth failure gives up and says it is a bug."""
    error = KeyError("lastRun")
    attempts = [
        after_failure(error, retry=retry, resync_seconds=RESYNC)
        for retry in range(MAX_BUG_ATTEMPTS)
    ]
    assert [a.delay for a in attempts] == [5.0, 10.0, 20.0, 40.0, None]
    assert all(a.bug for a in attempts)
    assert attempts[0].message == "attempt 1 of 5 failed: KeyError: 'lastRun'"
    last = attempts[-1].message
    assert last.startswith("gave up after 5 attempts: KeyError: 'lastRun'. ")
    assert "it is a bug in revisor-operator" in last
    assert f"checked again every {RESYNC:g}s" in last


@pytest.mark.parametrize("status", [400, 422])
def test_a_request_the_api_refuses_is_bounded_like_a_bug(status: int) -> None:
    """Sending it again will not change the answer (e.g. a Job the API finds invalid)."""
    error = KubeError(
        'Job.batch "shop-g1-abc" is invalid: spec...', status=status, reason="Invalid"
    )
    first = after_failure(error, retry=0, resync_seconds=RESYNC)
    assert first.delay == 5.0 and first.bug
    assert f"the Kubernetes API refused a request ({status} Invalid)" in first.message
    assert after_failure(error, retry=MAX_BUG_ATTEMPTS - 1, resync_seconds=RESYNC).delay is None


def test_a_password_in_an_error_never_reaches_the_message() -> None:
    error = RuntimeError("cannot parse postgresql://app:Canary-s3cr3t@db/app")
    then = after_failure(error, retry=MAX_BUG_ATTEMPTS - 1, resync_seconds=RESYNC)
    assert "Canary-s3cr3t" not in then.message and "postgresql://app:***@db/app" in then.message


# -- the handlers ----------------------------------------------------------------------


def _change(kube: FakeKube, *, failures: int = 1) -> float | str | None:
    """A pass for a change of the resource, as the work queue runs it: ``done``, or, if it
    fails for the ``failures``-th time in a row, when it is retried (None: given up)."""
    work = runtime(kube)
    try:
        handlers._scheduled_pass(
            work, namespace="shop", name="shop", trigger=WAKE, body=migration()
        )
    except Exception as exc:
        return handlers._pass_failed(
            work, namespace="shop", name="shop", exc=exc, failures=failures
        )
    return "done"


def test_a_change_is_retried_later_through_an_api_outage() -> None:
    kube = FakeKube(migration(), failures={"list_jobs": KubeError("refused", status=0)})
    assert _change(kube, failures=3) == 40.0
    assert kube.created == []


def test_a_change_failing_on_a_bug_is_given_up_with_a_warning_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    posted: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "event", lambda body, **kw: posted.append({"body": body, **kw}))
    kube = FakeKube(migration(), failures={"list_jobs": ZeroDivisionError("division by zero")})

    assert _change(kube, failures=1) == 5.0
    assert posted == []

    assert _change(kube, failures=MAX_BUG_ATTEMPTS) is None
    [event] = posted
    assert (event["type"], event["reason"]) == ("Warning", "ReconcileError")
    assert event["message"].startswith(
        "gave up after 5 attempts: ZeroDivisionError: division by zero"
    )
    assert event["body"]["metadata"]["name"] == "shop"


def _registered(fn: Any) -> Any:
    registry = kopf.OperatorRegistry()
    handlers.register(registry, Settings())
    found = [h for h in registry._changing.get_all_handlers() if h.fn is fn]
    assert found, f"{fn.__name__} is not registered with kopf"
    return found


def test_the_deletion_handler_never_gives_up() -> None:
    """A deletion handler that gave up would release the finalizer mid-migration."""
    [handler] = _registered(on_delete)
    assert handler.errors == kopf.ErrorsMode.TEMPORARY
    assert handler.retries is None and handler.timeout is None
    assert handler.backoff == handlers.DELETE_POLL_SECONDS


def test_kopf_handles_no_change_of_a_migration_only_its_deletion() -> None:
    """Changes are the work queue's, retried as after_failure says; kopf's retries= would
    count its TemporaryErrors too, and an API outage would exhaust it."""
    registry = kopf.OperatorRegistry()
    handlers.register(registry, Settings())
    changing = [
        h.fn
        for h in registry._changing.get_all_handlers()
        if h.selector is not None
        and "databasemigrations" in (h.selector.plural, h.selector.any_name)
    ]
    assert changing == [on_delete]


def test_the_running_event_survives_a_conflicting_status_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Job was created, so its Event is posted, even if the status write then conflicts.

    The retry finds the Job running and has no creation to announce: an Event
    posted only after the status write would be lost for good.
    """
    posted: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "event", lambda body, **kw: posted.append({"body": body, **kw}))
    conflict = Conflict("the object has been modified", status=409, reason="Conflict")
    kube = FakeKube(migration(), failures={"patch_migration_status": conflict})

    assert _change(kube) == 1.0

    [job] = kube.created
    [event] = posted
    assert (event["type"], event["reason"]) == ("Normal", "Running")
    assert job["metadata"]["name"] in event["message"]

    del kube.failures["patch_migration_status"]
    assert _change(kube) == "done"
    assert len(posted) == 1, "the retry must not announce the creation again"
    assert kube.created == [job] and kube.status_writes
