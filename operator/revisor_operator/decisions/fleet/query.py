"""What a set's schemas query step is: the interface between :mod:`.schemas` and the rollout.

Kept apart from :mod:`.schemas` (which speaks the engine's contract) so that
the rollout depends only on the step's shape. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..bodies import Job, JsonDict
from ..status import Event

#: On a query Job: the round of the query and the page it fetches.
ROUND_ANNOTATION = "revisor.dev/query-round"
PAGE_ANNOTATION = "revisor.dev/query-page"


@dataclass(frozen=True)
class QueryStep:
    """What to do about a set's schemas query now."""

    #: Fields to merge into the set's status (``schemas``, ``schemaQuery``; None deletes).
    status: JsonDict = field(default_factory=dict)
    #: A page Job to create.
    job: Job | None = None
    #: The last complete list (None: none yet).
    names: tuple[str, ...] | None = None
    #: The last round failed, with this message (``names`` are from before it, if any).
    problem: str | None = None
    event: Event | None = None
