"""The small grammar the engine and the operator share: durations, revision lists, times.

One definition each, so that ``--lock-timeout 5m`` on the command line and
``timeouts.job: 5m`` in a ``DatabaseMigration`` mean the same thing, and a
database at no revision reads ``base`` in the CLI, the result document and
the resource's status alike.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

#: Go-style durations as Kubernetes users write them: 90s, 10m, 1h30m, 500ms.
#: The CRD's schema uses this same expression for its duration fields.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION = re.compile(DURATION_PATTERN)
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_BARE_SECONDS = re.compile(r"^[0-9]+(\.[0-9]+)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, *, bare_seconds: bool = False) -> float:
    """Seconds in ``1h30m``, ``90s``, ``250ms`` (and ``30`` with ``bare_seconds``).

    Raises :class:`ValueError` naming the text for anything else, negative
    values included.
    """
    raw = text.strip()
    if bare_seconds and _BARE_SECONDS.match(raw):
        return float(raw)
    if not _DURATION.match(raw):
        example = "30, 30s, 5m, 1h30m, 500ms" if bare_seconds else "30s, 5m, 1h30m, 500ms"
        raise ValueError(f"{text!r} is not a duration (e.g. {example})")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(raw))


def heads_text(revisions: Sequence[str]) -> str:
    """Revisions as one value: ``a1,b2`` for several heads, ``base`` for none."""
    return ",".join(revisions) if revisions else "base"


def timestamp(moment: dt.datetime | None = None) -> str:
    """``moment`` (default now) as the result document writes times: ``2026-12-01T10:00:00Z``."""
    when = moment if moment is not None else dt.datetime.now(dt.UTC)
    return when.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
