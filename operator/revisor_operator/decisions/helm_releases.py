"""Which database revision each Helm release reached, kept on the resource for ``helm rollback``.

``revisor-operator wait --record-release N`` records, once a release's
migration is Ready, the revision the database is at; a pre-rollback hook
(``--rollback-to-release N``) reads it back and points ``spec.target`` there.
The record is an annotation holding a small JSON object, newest releases
kept. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from .bodies import Migration

#: The annotation where ``wait --record-release`` keeps, per Helm release
#: revision, the database revision that release reached.
RELEASES_ANNOTATION = "revisor.dev/helm-release-revisions"
RELEASES_KEPT = 20


def recorded_releases(migration: Migration) -> dict[str, str]:
    """Helm release revision -> database revision, as recorded on the resource."""
    raw = (migration.get("metadata", {}).get("annotations") or {}).get(RELEASES_ANNOTATION)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items() if isinstance(v, str)}


def with_release(records: Mapping[str, str], release: int, revision: str) -> dict[str, str]:
    """``records`` plus ``release -> revision``, keeping the newest :data:`RELEASES_KEPT`."""
    merged = {**records, str(release): revision}
    newest = sorted(merged, key=lambda k: int(k) if k.isdigit() else -1)[-RELEASES_KEPT:]
    return {k: merged[k] for k in newest}
