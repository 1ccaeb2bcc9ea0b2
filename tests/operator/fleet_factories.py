"""Builders for DatabaseMigrationSets, their children (as the set sees them) and passes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from revisor_operator.decisions.fleet.children import Child, child_spec
from revisor_operator.decisions.fleet.naming import child_name, rollout_hash, spec_key
from revisor_operator.decisions.fleet.query import QueryStep
from revisor_operator.decisions.fleet.rollout import (
    MARKS,
    JobInfo,
    SetDecision,
    SetInputs,
    decide_set,
)
from revisor_operator.decisions.fleet.spec import SetSpec, parse_set_spec
from revisor_operator.decisions.fleet.targets import Resolved, Target, resolve
from revisor_operator.decisions.policy import Policy
from revisor_operator.decisions.rollout import parse_time
from revisor_operator.decisions.spec import InvalidSpec

from .factories import DEFAULTS, NOW

NAMESPACE = "shop"
SET = "tenants"
SET_UID = "5e7-0000-1111"
SCRIPTS = "configmap\0" + "f" * 64
TEMPLATE: dict[str, Any] = {"source": {"configMap": {"name": "shop-migrations"}}, "target": "head"}


def raw_set_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "template": dict(TEMPLATE),
        "targets": {"secretSelector": {"matchLabels": {"tier": "tenant"}}},
    }
    spec.update(overrides)
    return spec


def set_body(
    spec: dict[str, Any] | None = None,
    *,
    status: dict[str, Any] | None = None,
    generation: int = 1,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": SET,
        "namespace": NAMESPACE,
        "uid": SET_UID,
        "generation": generation,
        "resourceVersion": "7",
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    body: dict[str, Any] = {
        "apiVersion": "revisor.dev/v1alpha1",
        "kind": "DatabaseMigrationSet",
        "metadata": meta,
        "spec": spec if spec is not None else raw_set_spec(),
    }
    if status is not None:
        body["status"] = status
    return body


def parsed(body: Mapping[str, Any]) -> SetSpec:
    return parse_set_spec(body["spec"])


def rollout_of(body: Mapping[str, Any], scripts: str = SCRIPTS) -> str:
    annotations = body["metadata"].get("annotations") or {}
    marks = {k: v for k, v in annotations.items() if k in MARKS}
    return rollout_hash(template=body["spec"]["template"], scripts=scripts, annotations=marks)


def target_of(body: Mapping[str, Any], name: str) -> Target:
    targets = resolve(parsed(body), secrets=[name], schemas=[name]).targets
    return next(t for t in targets if t.name == name)


def child(
    body: Mapping[str, Any],
    target: str,
    *,
    outcome: str = "Waiting",
    running: bool = False,
    blocked: bool = False,
    rollout: str | None = None,
    message: str = "",
    reason: str = "",
    revision: str | None = None,
    recorded: Sequence[str] = (),
) -> Child:
    """The summary of ``target``'s child, admitted to the current rollout unless ``rollout``."""
    spec = parsed(body)
    return Child(
        name=child_name(set_name=SET, target=target),
        set_uid=SET_UID,
        target=target,
        rollout=rollout if rollout is not None else rollout_of(body),
        spec_key=spec_key(child_spec(spec.template, target_of(body, target))),
        outcome=outcome,  # type: ignore[arg-type]
        running=running,
        blocked=blocked,
        phase="Running" if running else "Pending",
        reason=reason,
        message=message,
        revision=revision,
        recorded_jobs=frozenset(recorded),
    )


def ready(body: Mapping[str, Any], target: str, revision: str = "3c9a1f0b2e44") -> Child:
    return replace(child(body, target, outcome="Ready", revision=revision), phase="Succeeded")


def failed(body: Mapping[str, Any], target: str, message: str = "boom") -> Child:
    return replace(
        child(body, target, outcome="Failed", reason="MigrationFailed", message=message),
        phase="Failed",
    )


def decide(
    body: Mapping[str, Any],
    *,
    secrets: Sequence[str] = (),
    children: Sequence[Child] = (),
    scripts: str | None = SCRIPTS,
    selected: Mapping[int, frozenset[str]] | None = None,
    jobs: Sequence[JobInfo] = (),
    resolved: Resolved | None = None,
    query: QueryStep | None = None,
    policy: Policy | None = None,
    now: str = NOW,
) -> SetDecision:
    """:func:`decide_set` as a pass calls it, the spec parsed once from ``body``."""
    spec: SetSpec | InvalidSpec
    try:
        spec = parse_set_spec(body["spec"])
    except InvalidSpec as invalid:
        spec = invalid
    if resolved is None:
        resolved = resolve(spec, secrets=secrets) if isinstance(spec, SetSpec) else Resolved(())
    moment = parse_time(now)
    assert isinstance(moment, datetime)
    return decide_set(
        SetInputs(
            body=body,
            spec=spec,
            scripts=scripts,
            scripts_problem="ConfigMap shop/shop-migrations not found: create it",
            resolved=resolved,
            selected=selected or {},
            children=list(children),
            jobs=list(jobs),
            query=query,
            now=moment,
            defaults=DEFAULTS,
            policy=policy or Policy(),
        )
    )


def after(body: dict[str, Any], decision: SetDecision) -> dict[str, Any]:
    """``body`` with ``decision``'s status written (as a merge patch, lists replaced)."""
    status = dict(body.get("status") or {})
    for key, value in (decision.status or {}).items():
        if value is None:
            status.pop(key, None)
        else:
            status[key] = value
    return {**body, "status": status}


def admitted(decision: SetDecision) -> list[str]:
    """The targets whose child ``decision`` writes (created or admitted)."""
    return [c["metadata"]["annotations"]["fleet.revisor.dev/target"] for c in decision.apply]
