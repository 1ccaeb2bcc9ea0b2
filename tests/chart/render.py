"""Render charts/revisor with the pinned Helm, for tests with and without a cluster.

Helm comes from ``scripts/helm.sh`` (built once into the cache, then found
there in milliseconds); ``make test`` builds it through ``make check``.
"""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "revisor"
RELEASE = "revisor"
NAMESPACE = "revisor-system"


@functools.cache
def helm() -> str:
    """The path of the pinned Helm binary."""
    done = subprocess.run(
        [str(REPO / "scripts" / "helm.sh")], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def run_helm(
    *args: str, values: Mapping[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    """``helm ARGS`` with ``values`` (as JSON, which is YAML) on stdin; never raises."""
    extra: list[str] = ["--values", "-"] if values is not None else []
    return subprocess.run(
        [helm(), *args, *extra],
        input=json.dumps(values) if values is not None else None,
        capture_output=True,
        text=True,
        check=False,
    )


def template(
    values: Mapping[str, Any] | None = None,
    *,
    namespace: str = NAMESPACE,
    release: str = RELEASE,
    extra: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The chart's objects for ``values``, as dicts (fails the test if Helm refuses)."""
    done = run_helm(
        "template", release, str(CHART), "--namespace", namespace, *extra, values=values
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def only(
    objects: Sequence[Mapping[str, Any]], kind: str, name: str | None = None
) -> dict[str, Any]:
    """The one object of ``kind`` (and ``name``) among ``objects``."""
    found = [
        dict(o)
        for o in objects
        if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, [(o["kind"], o["metadata"]["name"]) for o in objects]
    return found[0]


def of_kind(objects: Sequence[Mapping[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Every object of ``kind``; at least one, or the test that loops over them proves nothing."""
    found = all_of_kind(objects, kind)
    assert found, f"no {kind} rendered: " + ", ".join(o["kind"] for o in objects)
    return found


def all_of_kind(objects: Sequence[Mapping[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Every object of ``kind``, possibly none (for tests that expect none)."""
    return [dict(o) for o in objects if o["kind"] == kind]


def rule_set(rules: Sequence[Mapping[str, Any]]) -> set[tuple[str, str, str]]:
    """RBAC rules flattened to (apiGroup, resource, verb) triples, easy to compare."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }
