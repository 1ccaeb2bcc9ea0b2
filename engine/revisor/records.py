"""What Revisor writes down in a database, by name: its tables, run statuses, keys, plan hash.

The SQLAlchemy tables (:mod:`revisor.history`, :mod:`revisor.snapshot_table`)
and the plain reads of a run with nothing to do (:mod:`revisor.at_target`,
which runs without SQLAlchemy) must mean the same rows; both take the names
from here. Stdlib only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

#: One row per run and one per step of it.
HISTORY_TABLE = "revisor_history"
#: The schema each revision left (drift checks).
SNAPSHOT_TABLE = "revisor_schema"
#: A history row's status while its run goes on; left behind by a runner that died.
RUNNING = "running"


def revision_key(heads: Sequence[str]) -> str:
    """A snapshot row's key for ``heads``: sorted, comma-separated, ``base`` for none."""
    return ",".join(sorted(heads)) or "base"


def plan_hash(target: str, from_heads: Sequence[str], steps: Sequence[tuple[str, str, str]]) -> str:
    """Changes when the start, the target, the steps or any step's file changes.

    ``steps``: ``(direction, revision, checksum of its file)`` in order.
    """
    body = {"target": target, "from": sorted(from_heads), "steps": [list(s) for s in steps]}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
