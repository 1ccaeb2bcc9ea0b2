"""Schema drift, as the operator checks it: when a check is due, its Job, what it found.

With ``spec.drift`` set, the operator runs the engine's ``revisor drift``
(read-only, under the migration lock) in a Job of its own, as bounded and
unprivileged as a migration's (:func:`.jobs.engine_pod_spec`), and keeps
the answer in ``status.drift`` and the ``Drifted`` condition. A check is due
(:func:`due`):

* after every run that succeeded in changing (or confirming) the database:
  the check whose ``afterRun`` is not the last recorded run;
* every ``spec.drift.interval`` after the last check finished;
* when the annotation ``revisor.dev/drift-check`` takes a value no check
  has answered yet (``kubectl annotate dbm/NAME revisor.dev/drift-check=$(date +%s)``).

With ``policy: Block`` every apply is also preceded by a check
(:func:`gate`): the desired run starts only once a check made for it found
no drift, drift accepted by ``spec.drift.acceptedHash`` (passed as
``--accept``), or nothing to compare with. A run started over drift would
record the drifted schema as its revision's, and the drift would be gone
from sight; so while it has drifted, the apply is refused (reason
``Drifted``) until a later check finds it gone (the next interval, or the
annotation) or the spec accepts its hash.

A check's identity is what it examines: the desired run, the last
recorded run, the request it answers, the check before it and the
patterns and hash it is given. Its Job's name is derived from them
(:func:`check_job_name`), so an operator restarted mid-check adopts the
check rather than starting another; and the check to record next is the
one made after the check ``status.drift`` holds (:func:`to_record`), so an
older check's Job, kept until its TTL, is never recorded twice. One Job
runs at a time per resource: a check waits for a running migration and the
other way round.

``NoSnapshot`` is not drift: nothing was recorded for the database's
revision (migrated by plain Alembic, or stamped), so there is nothing to
compare with; the condition is then ``Unknown`` and says how to record one.
Pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from revisor.contract import DriftDetails, ExitCode, Reason, RunRequest, heads_text

from .. import API_VERSION, KIND
from .bodies import Condition, Job, JsonDict, ObjectMeta
from .conditions import DRIFTED, Desired, find, merge
from .jobs import (
    DESIRED_RUN_ANNOTATION,
    DRIFT_AFTER_ANNOTATION,
    DRIFT_PREVIOUS_ANNOTATION,
    DRIFT_REQUEST_ANNOTATION,
    GENERATION_ANNOTATION,
    MANAGED_BY,
    MANAGER,
    MIGRATION_LABEL,
    PURPOSE_ANNOTATION,
    JobDefaults,
    Owner,
    engine_pod_spec,
    engine_request,
    label_value,
    pod_failure_policy,
)
from .naming import MAX_NAME
from .observe import DRIFT_PURPOSE, Run
from .reasons import OperatorReason, Phase
from .redaction import redact, shorten
from .rollout import format_time, parse_time
from .spec import Drift, MigrationSpec
from .status import Event, Verdict

#: On a DatabaseMigration: a new value asks for a drift check now.
DRIFT_CHECK_ANNOTATION = "revisor.dev/drift-check"
#: A finished check's Job goes after this long (or the operator's Job TTL, if shorter):
#: its answer is in status.drift, and checks every hour would otherwise pile up pods.
CHECK_JOB_TTL_SECONDS = 3600
#: Differences the condition's message shows (status.drift.differences has up to 20).
SHOWN_DIFFERENCES = 3
MESSAGE_LIMIT = 1024
_HASH_CHARS = 6

Gate = Literal["check", "go", "blocked"]


@dataclass(frozen=True)
class Recorded:
    """``status.drift``: the last finished check, as the decisions need it."""

    job: str
    result: str
    drifted: bool | None
    desired_run: str = ""
    after_run: str = ""
    request: str = ""
    checked_at: datetime | None = None
    hash: str | None = None
    message: str = ""

    @classmethod
    def from_status(cls, raw: Any) -> Recorded | None:
        if not isinstance(raw, Mapping) or not raw.get("job"):
            return None
        drifted = raw.get("drifted")
        return cls(
            job=str(raw["job"]),
            result=str(raw.get("result") or ""),
            drifted=drifted if isinstance(drifted, bool) else None,
            desired_run=str(raw.get("desiredRun") or ""),
            after_run=str(raw.get("afterRun") or ""),
            request=str(raw.get("request") or ""),
            checked_at=parse_time(raw.get("checkedAt")),
            hash=raw.get("hash") if isinstance(raw.get("hash"), str) else None,
            message=str(raw.get("message") or ""),
        )


# -- when -----------------------------------------------------------------------------


def due(
    drift: Drift | None,
    *,
    status: Mapping[str, Any],
    request: str,
    now: datetime,
) -> str | None:
    """Why a check is due now (None: none is). ``request``: the annotation's value.

    Nothing is checked before a run was recorded: until then there is no
    revision whose recorded schema the live one could be compared with.
    """
    last = status.get("lastRun") or {}
    if drift is None or not last.get("job"):
        return None
    recorded = Recorded.from_status(status.get("drift"))
    if request and (recorded is None or recorded.request != request):
        return f"asked for by the annotation {DRIFT_CHECK_ANNOTATION}={request}"
    if _confirmed_database(last) and (recorded is None or recorded.after_run != last["job"]):
        return f"after run {last['job']}"
    return _scheduled(drift.interval_seconds, recorded, now=now)


def _scheduled(interval: float | None, recorded: Recorded | None, *, now: datetime) -> str | None:
    if interval is None:
        return None
    every = f"every {_duration(interval)}"
    if recorded is None or recorded.checked_at is None:
        return every
    if now < recorded.checked_at + timedelta(seconds=interval):
        return None
    return f"{every}: the last check finished {format_time(recorded.checked_at)}"


def gate(spec: MigrationSpec, *, status: Mapping[str, Any], desired: str) -> Gate:
    """May the apply of ``desired`` start? ``check`` first, ``go``, or ``blocked`` (Block only).

    Only an apply is gated: a plan or a dry run changes nothing, and records no schema.
    """
    drift = spec.drift
    if drift is None or not drift.blocks or spec.mode != "Apply" or spec.plans_only:
        return "go"
    recorded = Recorded.from_status(status.get("drift"))
    if recorded is None or recorded.desired_run != desired:
        return "check"
    return "blocked" if recorded.drifted is True else "go"


def to_record(checks: Sequence[Run], *, status: Mapping[str, Any]) -> Run | None:
    """The finished check made right after the one ``status.drift`` holds, if any."""
    recorded = str((status.get("drift") or {}).get("job") or "")
    after = [c for c in checks if c.finished and c.drift_previous == recorded and c.job != recorded]
    return max(after, key=lambda c: (c.created_at, c.job)) if after else None


def _confirmed_database(last: Mapping[str, Any]) -> bool:
    """A run that left the database where it should be (and its schema recorded)."""
    return last.get("exitCode") == 0 and last.get("command") != "plan" and not last.get("dryRun")


# -- the Job ----------------------------------------------------------------------------


def check_request(spec: MigrationSpec) -> RunRequest:
    """``revisor drift`` with the spec's scripts, database, version table and lock timeout."""
    drift = spec.drift or Drift()
    base = engine_request(spec)
    return replace(
        base,
        command="drift",
        target=None,
        baseline=None,
        drift_ignore=drift.ignore,
        drift_accept=drift.accepted_hash,
    )


def check_job_name(
    owner: str,
    *,
    spec: MigrationSpec,
    desired: str,
    after: str,
    request: str,
    previous: str,
) -> str:
    """``<resource>-drift-<hash>``: the same check in the same situation, the same name."""
    drift = spec.drift or Drift()
    key = "\0".join((desired, after, request, previous, drift.accepted_hash or "", *drift.ignore))
    digest = hashlib.sha256(key.encode()).hexdigest()[:_HASH_CHARS]
    suffix = f"-drift-{digest}"
    return f"{owner[: MAX_NAME - len(suffix)].rstrip('-.')}{suffix}"


def build_check_job(
    *,
    owner: Owner,
    spec: MigrationSpec,
    name: str,
    defaults: JobDefaults,
    desired: str,
    after: str,
    request: str,
    previous: str,
) -> Job:
    """The Job that runs ``revisor drift`` once: a migration's pod, another command."""
    labels = {MANAGED_BY: MANAGER, MIGRATION_LABEL: label_value(owner.name)}
    metadata: ObjectMeta = {
        "name": name,
        "namespace": owner.namespace,
        "labels": dict(labels),
        "annotations": {
            PURPOSE_ANNOTATION: DRIFT_PURPOSE,
            GENERATION_ANNOTATION: str(owner.generation),
            DESIRED_RUN_ANNOTATION: desired,
            DRIFT_AFTER_ANNOTATION: after,
            DRIFT_REQUEST_ANNOTATION: request,
            DRIFT_PREVIOUS_ANNOTATION: previous,
        },
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": owner.name,
                "uid": owner.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    request_ = check_request(spec)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": spec.runner.backoff_limit,
            "activeDeadlineSeconds": spec.job_deadline_seconds,
            "ttlSecondsAfterFinished": min(
                defaults.ttl_seconds_after_finished, CHECK_JOB_TTL_SECONDS
            ),
            "podFailurePolicy": pod_failure_policy(),
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": engine_pod_spec(
                    spec=spec, request=request_, defaults=defaults, namespace=owner.namespace
                ),
            },
        },
    }


# -- what it found ------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """A finished check: ``status.drift``, the Drifted condition, and an Event if it is news."""

    drift: JsonDict
    condition: Desired
    event: Event | None


def finding(run: Run, *, migration: str, status: Mapping[str, Any], now: datetime) -> Finding:
    """What the finished check ``run`` says, and whether that is news (an Event)."""
    result = run.result
    details = DriftDetails.from_details(result.details) if result is not None else None
    at = heads_text(result.to_revisions) if result is not None else "an unknown revision"
    reason = result.reason if result is not None else OperatorReason.JOB_FAILED
    condition: Desired
    if result is not None and details is not None and reason in _COMPARED:
        condition = _compared(details, reason=reason, at=at)
    elif reason == Reason.NO_SNAPSHOT:
        fresh = result is not None and not result.to_revisions
        condition = Desired(DRIFTED, None, reason, _clean(_no_snapshot(at, migration, fresh=fresh)))
    else:
        error = (result.error if result is not None else None) or _without_result(run)
        condition = Desired(
            DRIFTED,
            None,
            str(reason),
            _clean(f"The drift check (Job {run.job}) could not tell: {error}"),
        )
    drift: JsonDict = {
        "job": run.job,
        "checkedAt": (result.finished_at if result else None)
        or run.completed_at
        or format_time(now),
        "result": str(reason),
        "drifted": condition.status,
        "revision": at if result is not None else None,
        "desiredRun": run.desired or None,
        "afterRun": run.drift_after or None,
        "request": run.drift_request or None,
        "message": condition.message,
    }
    if details is not None:
        drift.update(
            {
                "hash": details.hash,
                "recordedHash": details.recorded_hash,
                "recordedAt": details.recorded_at,
                "recordedBy": details.recorded_by,
                "differences": [_clean(d) for d in details.differences],
                "differencesTotal": details.total,
                "accepted": details.accepted,
            }
        )
    drift = {k: v for k, v in drift.items() if v is not None}
    # A database at base has nothing to compare with, and nothing is wrong: no warning.
    quiet = reason == Reason.NO_SNAPSHOT and result is not None and not result.to_revisions
    return Finding(
        drift=drift, condition=condition, event=_news(status, condition, drift, quiet=quiet)
    )


def finding_patch(
    found: Finding, *, status: Mapping[str, Any], generation: int, now: datetime
) -> JsonDict:
    """The status fields a recorded check writes: ``drift`` and the conditions."""
    existing: list[Condition] = list(status.get("conditions") or [])
    return {
        "drift": found.drift,
        "conditions": merge(
            existing, [found.condition], generation=generation, now=format_time(now)
        ),
    }


def blocked_verdict(status: Mapping[str, Any], *, target: str) -> Verdict:
    """Block: the apply waits while the schema has drifted (reason ``Drifted``).

    The message names the first differences and both ways out; the whole story
    is in ``status.drift`` and the Drifted condition.
    """
    drift: Mapping[str, Any] = status.get("drift") or {}
    differences = [str(d) for d in drift.get("differences") or []][:SHOWN_DIFFERENCES]
    total = drift.get("differencesTotal")
    more = total - len(differences) if isinstance(total, int) else 0
    listed = "; ".join(differences) + (f" (and {more} more)" if more > 0 else "")
    at = drift.get("revision") or "its revision"
    return Verdict(
        phase=Phase.PENDING,
        reason=Reason.DRIFTED,
        failed=True,
        message=_clean(
            f"Not migrating to {target}: the schema at {at} has drifted (spec.drift.policy "
            f"Block): {listed or 'see status.drift'}. Accept it: set spec.drift.acceptedHash "
            f"to {drift.get('hash') or 'status.drift.hash'}; or fix the schema, then ask for "
            f"a check (annotation {DRIFT_CHECK_ANNOTATION}) or wait for the next one"
        ),
    )


def checking_verdict(job: str, *, target: str) -> Verdict:
    return Verdict(
        phase=Phase.RUNNING,
        reason=OperatorReason.RUNNING,
        progressing=True,
        message=f"Created Job {job} to check for schema drift before migrating to {target} "
        "(spec.drift.policy Block)",
    )


_COMPARED = frozenset({Reason.NO_DRIFT, Reason.DRIFTED, Reason.DRIFT_ACCEPTED})


def _compared(details: DriftDetails, *, reason: str, at: str) -> Desired:
    when = details.recorded_at or "(unknown)"
    recorded = f"recorded {when} by {details.recorded_by or 'a run'}"
    if not details.drifted:
        return Desired(
            DRIFTED, False, Reason.NO_DRIFT, f"No drift at {at}: the schema is the one {recorded}"
        )
    shown = "; ".join(details.differences[:SHOWN_DIFFERENCES])
    more = details.total - min(len(details.differences), SHOWN_DIFFERENCES)
    listed = f"{shown} (and {more} more in status.drift)" if more > 0 else shown
    count = f"{details.total} difference(s) from the schema {recorded}: {listed}"
    if details.accepted:
        return Desired(
            DRIFTED,
            False,
            Reason.DRIFT_ACCEPTED,
            _clean(f"Drift at {at} accepted by spec.drift.acceptedHash: {count}"),
        )
    return Desired(
        DRIFTED,
        True,
        Reason.DRIFTED,
        _clean(
            f"Schema drift at {at}: {count}. Fix the schema or write a revision for it, or "
            f"accept it: set spec.drift.acceptedHash to {details.hash}"
        ),
    )


def _no_snapshot(at: str, migration: str, *, fresh: bool) -> str:
    if fresh:
        return (
            "Nothing to compare with yet: the database has no revision (base), so no schema "
            "was recorded for it; the first run records one"
        )
    return (
        f"Not drift: no schema snapshot is recorded for {at} (the database was moved without "
        "Revisor, by plain Alembic or a stamp, or before Revisor recorded snapshots), so there "
        "is nothing to compare with. Once the schema is as it should be, record it: any run "
        f"records one (kubectl annotate dbm/{migration} revisor.dev/retry=$(date +%s) runs the "
        "spec again), or run revisor drift --record against the database"
    )


def _without_result(run: Run) -> str:
    state = run.container
    if run.failure_reason:
        return f"the Job failed ({run.failure_reason}: {run.failure_message or 'no message'})"
    if state is not None and state.exit_code is not None:
        code = ExitCode.from_code(state.exit_code)
        return f"the engine exited {state.exit_code}" + (f" ({code.reason})" if code else "")
    return "the Job left no result"


def _news(
    status: Mapping[str, Any], condition: Desired, drift: Mapping[str, Any], *, quiet: bool
) -> Event | None:
    """An Event when the answer changed: drifted (or drifted otherwise), gone, accepted, unknown."""
    before = find(status.get("conditions") or [], DRIFTED)
    previous = Recorded.from_status(status.get("drift"))
    state = "Unknown" if condition.status is None else str(condition.status)
    same = (
        before is not None
        and before.get("status") == state
        and before.get("reason") == condition.reason
        and (previous.hash if previous else None) == drift.get("hash")
    )
    if same:
        return None
    kind: Literal["Normal", "Warning"] = (
        "Normal" if condition.status is False or quiet else "Warning"
    )
    return Event(kind, condition.reason, condition.message)


def _duration(seconds: float) -> str:
    whole = int(seconds)
    if whole % 3600 == 0:
        return f"{whole // 3600}h"
    if whole % 60 == 0:
        return f"{whole // 60}m"
    return f"{seconds:g}s"


def _clean(message: str) -> str:
    return shorten(redact(message), limit=MESSAGE_LIMIT)
