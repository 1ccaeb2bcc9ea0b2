"""A schemas query, run by the engine in a Job, page by page, its answer kept in status.

The operator never connects to a database, so ``spec.targets.schemas.query``
runs where every other database access runs: in a Job, as ``revisor
schemas --query SQL`` (read-only), with the database's Secret wired in by
``secretKeyRef``. Its answer comes back the one way a Job can answer: the
engine's result document in the pod's termination message, which the
kubelet cuts at 4 KiB. A thousand tenants' names do not fit, so:

* the engine sorts the names and returns a *page*: as many names after
  ``--after NAME`` as fit (compressed), how many remain, and the sha256 of
  the *whole* sorted list (:class:`revisor.contract.SchemaPage`);
* the operator runs the pages as Jobs one after the other, each starting
  after the last name of the page before (keyset paging: a name added
  meanwhile cannot shift a page, as an offset would), keeping what it has
  collected in ``status.schemaQuery``, so a restarted operator goes on with
  the page it was at;
* every page must report the list hash of the first one, and the collected
  names must hash to it: a list that changed between two pages is not
  mixed, the round starts over (at most :data:`MAX_RESTARTS` times);
* the complete list becomes ``status.schemas`` (compressed), the targets the
  set rolls out until the next round, ``queryInterval`` later.

Reading pod logs instead would need more RBAC (``pods/log``), and logs are
not kept reliably; one Job per page costs an engine start each (about a
second), and pages hold thousands of typical tenant names. Pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from revisor.contract import RunRequest, SchemaPage, decode_names, encode_names

from ..bodies import Job, JsonDict
from ..jobs import (
    MANAGED_BY,
    MANAGER,
    TERMINATION_LOG,
    JobDefaults,
    engine_pod_spec,
    pod_failure_policy,
)
from ..observe import Run
from ..redaction import redact, shorten
from ..rollout import format_time, parse_time
from ..status import Event
from .children import SetRef
from .naming import label_safe, query_job_name
from .query import PAGE_ANNOTATION, ROUND_ANNOTATION, QueryStep
from .spec import SchemaTargets, SetSpec
from .words import PURPOSE_LABEL, SCHEMAS_PURPOSE, SET_LABEL, SetReason

#: A list that changes between two pages of every round this many times in a row fails.
MAX_RESTARTS = 3
#: The query Job's bounds: a statement, its retries, the whole Job.
QUERY_STATEMENT_SECONDS = 60.0
QUERY_BACKOFF_LIMIT = 2
QUERY_DEADLINE_SECONDS = 600


def query_hash(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()[:16]


def step_query(
    *,
    owner: SetRef,
    spec: SetSpec,
    status: Mapping[str, Any],
    runs: Mapping[str, Run],
    now: datetime,
    defaults: JobDefaults,
) -> QueryStep:
    """The next step of ``spec``'s schemas query; ``runs`` are the set's query Jobs by name."""
    targets = spec.targets
    assert isinstance(targets, SchemaTargets) and targets.query is not None
    listed: Mapping[str, Any] = status.get("schemas") or {}
    names = tuple(decode_names(listed["names"])) if listed.get("names") is not None else None
    problem = listed.get("error")
    wanted = query_hash(targets.query)
    progress: Mapping[str, Any] = status.get("schemaQuery") or {}
    if not progress or progress.get("queryHash") != wanted:
        if progress or _due(listed, wanted, targets.query_interval_seconds, now):
            last = max(int(listed.get("round") or 0), int(progress.get("round") or 0))
            return _start(
                owner=owner,
                spec=spec,
                round_=last + 1,
                wanted=wanted,
                now=now,
                defaults=defaults,
                names=names,
            )
        return QueryStep(names=names, problem=problem)
    round_, page = int(progress.get("round") or 1), int(progress.get("page") or 1)
    after = str(progress.get("after") or "")
    name = query_job_name(set_name=owner.name, round_=round_, page=page)
    run = runs.get(name)
    if run is None:
        # Created once already (its status says so) or not yet: create; 409 adopts it.
        job = build_query_job(
            owner=owner, spec=spec, round_=round_, page=page, after=after, defaults=defaults
        )
        return QueryStep(job=job, names=names, problem=problem)
    if run.active:
        return QueryStep(names=names, problem=problem)
    return _finished(
        owner=owner,
        spec=spec,
        progress=progress,
        run=run,
        listed=listed,
        names=names,
        now=now,
        defaults=defaults,
    )


def _due(listed: Mapping[str, Any], wanted: str, interval: float, now: datetime) -> bool:
    if not listed or listed.get("queryHash") != wanted:
        return True
    last = parse_time(listed.get("failedAt") or listed.get("queriedAt"))
    return last is None or (now - last).total_seconds() >= interval


def _start(
    *,
    owner: SetRef,
    spec: SetSpec,
    round_: int,
    wanted: str,
    now: datetime,
    defaults: JobDefaults,
    names: tuple[str, ...] | None,
    restarts: int = 0,
) -> QueryStep:
    progress: JsonDict = {
        "round": round_,
        "page": 1,
        "after": "",
        "collected": encode_names([]),
        "count": 0,
        "startedAt": format_time(now),
        "queryHash": wanted,
        "restarts": restarts,
    }
    job = build_query_job(
        owner=owner, spec=spec, round_=round_, page=1, after="", defaults=defaults
    )
    return QueryStep(status={"schemaQuery": progress}, job=job, names=names)


def _finished(
    *,
    owner: SetRef,
    spec: SetSpec,
    progress: Mapping[str, Any],
    run: Run,
    listed: Mapping[str, Any],
    names: tuple[str, ...] | None,
    now: datetime,
    defaults: JobDefaults,
) -> QueryStep:
    round_, page_number = int(progress.get("round") or 1), int(progress.get("page") or 1)
    after = str(progress.get("after") or "")
    result = run.result
    page = SchemaPage.from_details(result.details) if result is not None else None
    if result is None or result.exit_code != 0 or page is None:
        message = _failure(run)
        failed = {
            **listed,
            "round": round_,
            "error": message,
            "failedAt": format_time(now),
        }
        return QueryStep(
            status={"schemas": failed, "schemaQuery": None},
            names=names,
            problem=message,
            event=Event("Warning", SetReason.SCHEMAS_QUERY_FAILED, message),
        )
    collected = [*decode_names(str(progress.get("collected") or "")), *page.names]
    expected = progress.get("listHash") or page.list_hash
    ordered = all(n > after for n in page.names) and list(page.names) == sorted(page.names)
    complete = page.remaining == 0
    consistent = page.list_hash == expected and ordered
    if complete:
        consistent = consistent and SchemaPage.hash_of(collected) == expected
    if not consistent:
        restarts = int(progress.get("restarts") or 0) + 1
        wanted = str(progress.get("queryHash") or "")
        if restarts > MAX_RESTARTS:
            message = (
                f"The schemas query's answer changed while its pages were read, in "
                f"{restarts} rounds in a row; the last complete list is kept"
            )
            failed = {**listed, "round": round_, "error": message, "failedAt": format_time(now)}
            return QueryStep(
                status={"schemas": failed, "schemaQuery": None},
                names=names,
                problem=message,
                event=Event("Warning", SetReason.SCHEMAS_QUERY_FAILED, message),
            )
        return _start(
            owner=owner,
            spec=spec,
            round_=round_ + 1,
            wanted=wanted,
            now=now,
            defaults=defaults,
            names=names,
            restarts=restarts,
        )
    if complete:
        done: JsonDict = {
            "names": encode_names(collected),
            "count": len(collected),
            "hash": expected,
            "queriedAt": format_time(now),
            "round": round_,
            "queryHash": progress.get("queryHash"),
            "job": run.job,
        }
        changed = listed.get("hash") != expected
        event = (
            Event(
                "Normal",
                SetReason.PROGRESSING,
                f"The schemas query returned {len(collected)} schema(s) "
                f"({page_number} page(s), round {round_})",
            )
            if changed
            else None
        )
        return QueryStep(
            status={"schemas": done, "schemaQuery": None}, names=tuple(collected), event=event
        )
    last = page.names[-1] if page.names else after
    moved: JsonDict = {
        **progress,
        "page": page_number + 1,
        "after": last,
        "listHash": expected,
        "collected": encode_names(collected),
        "count": len(collected),
    }
    job = build_query_job(
        owner=owner, spec=spec, round_=round_, page=page_number + 1, after=last, defaults=defaults
    )
    return QueryStep(status={"schemaQuery": moved}, job=job, names=names)


def _failure(run: Run) -> str:
    result = run.result
    if result is not None and result.exit_code != 0:
        what = f"{result.reason}: {result.error or 'no error message'}"
    elif result is not None:
        what = "the engine's result holds no page of schema names (an older engine?)"
    elif run.container is not None and run.container.exit_code is not None:
        what = f"the engine exited {run.container.exit_code} without a result"
        if run.container.message:
            what += f"; last output: {run.container.message.strip()}"
    else:
        what = f"Job {run.job} failed: {run.failure_reason or 'no pod left a result'}"
    text = f"The schemas query failed ({run.job}): {what}"
    return shorten(redact(text), limit=800)


def build_query_job(
    *,
    owner: SetRef,
    spec: SetSpec,
    round_: int,
    page: int,
    after: str,
    defaults: JobDefaults,
) -> Job:
    """The Job that runs page ``page`` of the query, after ``after``.

    Its pod is an engine pod like a migration's (runner, policy, limits from
    the template), owned by the set, and labelled so the set finds it.
    """
    targets = spec.targets
    assert isinstance(targets, SchemaTargets) and targets.query is not None
    run_spec = replace(spec.migration, database=targets.database, schema=None)
    request = RunRequest(
        command="schemas",
        schemas_query=targets.query,
        schemas_after=after or None,
        statement_timeout=QUERY_STATEMENT_SECONDS,
        output="json",
        log_format="json",
        result_file=TERMINATION_LOG,
    )
    labels = {
        MANAGED_BY: MANAGER,
        SET_LABEL: label_safe(owner.name),
        PURPOSE_LABEL: SCHEMAS_PURPOSE,
    }
    name = query_job_name(set_name=owner.name, round_=round_, page=page)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": dict(labels),
            "annotations": {ROUND_ANNOTATION: str(round_), PAGE_ANNOTATION: str(page)},
            "ownerReferences": [
                {
                    "apiVersion": "revisor.dev/v1alpha1",
                    "kind": "DatabaseMigrationSet",
                    "name": owner.name,
                    "uid": owner.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "backoffLimit": QUERY_BACKOFF_LIMIT,
            "activeDeadlineSeconds": QUERY_DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": defaults.ttl_seconds_after_finished,
            "podFailurePolicy": pod_failure_policy(),
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": engine_pod_spec(
                    spec=run_spec, request=request, defaults=defaults, namespace=owner.namespace
                ),
            },
        },
    }
