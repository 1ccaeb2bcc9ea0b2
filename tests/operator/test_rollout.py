"""Judging an application's rollout after a migration (pure: Deployment + window + now)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from revisor_operator.decisions.reasons import WindowState
from revisor_operator.decisions.rollout import (
    DeploymentStatus,
    Window,
    deployment_status,
    format_time,
    judge,
    open_window,
)

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def deployment(
    *,
    generation: int = 2,
    observed: int | None = None,
    replicas: int = 2,
    updated: int | None = None,
    available: int | None = None,
    total: int | None = None,
    progressing: tuple[str, str] = ("True", "NewReplicaSetAvailable"),
    since: datetime = T0 - timedelta(minutes=5),
    deadline: int = 600,
) -> dict[str, Any]:
    """A Deployment body as the API returns it; by default fully rolled out."""
    return {
        "metadata": {"name": "web", "generation": generation},
        "spec": {"replicas": replicas, "progressDeadlineSeconds": deadline},
        "status": {
            "observedGeneration": generation if observed is None else observed,
            "replicas": replicas if total is None else total,
            "updatedReplicas": replicas if updated is None else updated,
            "availableReplicas": replicas if available is None else available,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {
                    "type": "Progressing",
                    "status": progressing[0],
                    "reason": progressing[1],
                    "message": f'ReplicaSet "web-abc" {progressing[1]}',
                    "lastTransitionTime": format_time(since),
                    "lastUpdateTime": format_time(since),
                },
            ],
        },
    }


def stuck(**kw: Any) -> dict[str, Any]:
    """A new generation whose pods never become available."""
    defaults: dict[str, Any] = {"updated": 1, "available": 0, "total": 3}
    defaults.update(kw)
    return deployment(**defaults)


def window(body: dict[str, Any] | None, *, seconds: float = 600, now: datetime = T0) -> Window:
    return open_window(
        deployment_name="web",
        deployment=deployment_status(body) if body is not None else None,
        job="shop-g1-abcdef",
        generation=1,
        previous="9d2e7a11c0f3",
        window_seconds=seconds,
        now=now,
    )


def verdict(win: Window, body: dict[str, Any] | None, *, after: float) -> str:
    status = deployment_status(body) if body is not None else None
    return judge(win, status, T0 + timedelta(seconds=after)).outcome


def test_deployment_status_reads_counts_and_progressing_condition() -> None:
    """The counts and the Progressing condition are what the judgement uses."""
    status = deployment_status(stuck(progressing=("False", "ProgressDeadlineExceeded")))
    assert (status.replicas, status.updated, status.available, status.total) == (2, 1, 0, 3)
    assert status.deadline_exceeded
    assert not status.complete


def test_old_pods_are_not_read_as_the_new_ones_being_available() -> None:
    """A new pod that never gets ready, next to the old one still serving (maxSurge 1)."""
    body = deployment(replicas=1)
    body["status"].update({"replicas": 2, "updatedReplicas": 1, "availableReplicas": 1})
    assert deployment_status(body).describe() == (
        "1/1 updated, 1 old replica pending termination, 1 available counting old ones"
    )
    body["status"].update({"replicas": 1, "updatedReplicas": 1, "availableReplicas": 1})
    assert deployment_status(body).describe() == "1/1 updated, 1/1 available"
    body["status"].update({"replicas": 5, "updatedReplicas": 2, "availableReplicas": 3})
    assert "3 old replicas pending termination" in deployment_status(body).describe()


def test_replicas_default_to_one_when_unset() -> None:
    """spec.replicas omitted means 1, as in Kubernetes."""
    body = deployment(replicas=1)
    del body["spec"]["replicas"]
    assert deployment_status(body).complete


def test_new_rollout_that_exceeds_its_deadline_fails() -> None:
    """Helm upgrade: complete at generation 2 when migrated; generation 3 then hits its deadline."""
    win = window(deployment(generation=2))
    assert win.baseline == 2
    failed = stuck(generation=3, progressing=("False", "ProgressDeadlineExceeded"), since=T0)
    result = judge(win, deployment_status(failed), T0 + timedelta(seconds=30))
    assert result.outcome == WindowState.FAILED
    assert "web" in result.message and "ProgressDeadlineExceeded" in result.message


def test_new_rollout_that_completes_succeeds() -> None:
    """updated == replicas == available, observed current, NewReplicaSetAvailable: success."""
    win = window(deployment(generation=2))
    assert verdict(win, deployment(generation=3), after=20) == "Succeeded"


def test_old_generation_being_complete_is_not_the_new_rollouts_success() -> None:
    """Before Helm applies the new Deployment spec, the old one is complete: keep watching."""
    win = window(deployment(generation=2))
    assert verdict(win, deployment(generation=2), after=20) == "Watching"


def test_rollout_still_progressing_keeps_watching() -> None:
    """A new generation mid-rollout within its deadline: no verdict yet."""
    win = window(deployment(generation=2))
    assert verdict(
        win, stuck(generation=3, progressing=("True", "ReplicaSetUpdated")), after=20
    ) == ("Watching")


def test_window_ending_during_an_incomplete_rollout_fails() -> None:
    """New pods not available when the window ends: failed, even without a deadline verdict."""
    win = window(deployment(generation=2), seconds=60)
    body = stuck(generation=3, progressing=("True", "ReplicaSetUpdated"))
    assert verdict(win, body, after=59) == "Watching"
    assert verdict(win, body, after=60) == "Failed"


def test_window_ending_with_no_new_rollout_closes_as_succeeded() -> None:
    """Nothing was deployed after the migration and nothing failed: the window closes quietly."""
    win = window(deployment(generation=2), seconds=60)
    assert verdict(win, deployment(generation=2), after=61) == "Succeeded"


def test_deployment_created_after_the_migration_is_followed() -> None:
    """Helm install: the pre-install hook migrates before the Deployment exists."""
    win = window(None)
    assert win.baseline == 0
    assert verdict(win, None, after=5) == "Watching"
    failed = stuck(generation=1, progressing=("False", "ProgressDeadlineExceeded"), since=T0)
    assert verdict(win, failed, after=10) == "Failed"


def test_missing_deployment_expires_without_rollback() -> None:
    """A deploymentRef that names nothing must not downgrade the database."""
    win = window(None, seconds=60)
    result = judge(win, None, T0 + timedelta(seconds=60))
    assert result.outcome == WindowState.EXPIRED
    assert "not found" in result.message


def test_rollout_in_progress_when_migrated_is_the_one_followed() -> None:
    """kubectl apply of both at once: the Deployment's current rollout counts as new."""
    win = window(stuck(generation=1, progressing=("True", "ReplicaSetUpdated")))
    assert win.baseline == 0
    assert verdict(win, deployment(generation=1), after=10) == "Succeeded"


def test_rollout_completed_while_migrating_is_this_releases_success() -> None:
    """kubectl apply of both at once, pods ready before the Job ended: success at once."""
    body = deployment(generation=1, since=T0 - timedelta(seconds=2))
    win = open_window(
        deployment_name="web",
        deployment=deployment_status(body),
        job="shop-g1-abcdef",
        generation=1,
        previous="base",
        window_seconds=600,
        now=T0,
        migration_started=T0 - timedelta(seconds=10),
    )
    assert win.baseline == 0
    assert verdict(win, body, after=1) == "Succeeded"


def test_deadline_exceeded_before_the_migration_gets_a_fresh_deadline() -> None:
    """Pods that only waited for the schema get progressDeadlineSeconds from the window's start."""
    before = T0 - timedelta(seconds=30)
    body = stuck(
        generation=1, progressing=("False", "ProgressDeadlineExceeded"), since=before, deadline=60
    )
    win = window(body)
    assert verdict(win, body, after=30) == "Watching"
    assert verdict(win, deployment(generation=1), after=40) == "Succeeded"
    assert verdict(win, body, after=60) == "Failed"


def test_window_round_trips_through_status() -> None:
    """What status.rollout stores is what the next reconcile reads back."""
    win = window(deployment(generation=2))
    again = Window.from_status(win.to_status())
    assert again == win


@pytest.mark.parametrize("raw", [None, {}, {"deployment": "web"}, {"since": "x", "until": "y"}])
def test_garbled_or_missing_window_reads_as_none(raw: dict[str, Any] | None) -> None:
    """A status edited by hand never crashes the operator."""
    assert Window.from_status(raw) is None


def test_zero_replicas_is_complete_without_a_progressing_reason() -> None:
    """A Deployment scaled to zero has nothing to roll out."""
    status = DeploymentStatus(
        name="web", generation=2, observed_generation=2, replicas=0, updated=0, available=0, total=0
    )
    assert status.complete
