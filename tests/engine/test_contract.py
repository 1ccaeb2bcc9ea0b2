"""The Job contract: the operator's arguments parse, and results fit a termination message."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from revisor.cli import build_parser
from revisor.contract import (
    MAX_DIFFERENCES,
    MAX_RESULT_BYTES,
    PARTIALLY_APPLIED,
    RESULT_SCHEMA,
    SCHEMA_HASH,
    BaselineDetails,
    DriftDetails,
    ExistingObjects,
    ExitCode,
    PartiallyApplied,
    Reason,
    Result,
    RunRequest,
    Step,
    VersionTable,
    schema_hash,
)


def test_every_exit_code_has_a_reason() -> None:
    assert {code.reason for code in ExitCode} >= {
        "Migrated",
        "LockTimeout",
        "MigrationFailed",
        "RollbackFailed",
    }
    assert ExitCode.from_code(3) is ExitCode.LOCK_TIMEOUT
    assert ExitCode.from_code(137) is None


def test_a_partially_applied_run_is_exit_8_with_its_own_reason() -> None:
    """MySQL/MariaDB: a revision failed after some of its DDL committed; a person must act."""
    assert ExitCode.from_code(8) is ExitCode.PARTIALLY_APPLIED
    assert ExitCode.PARTIALLY_APPLIED.reason == "PartiallyApplied"
    result = Result(
        command="upgrade",
        exit_code=ExitCode.PARTIALLY_APPLIED,
        error="0003 is partially applied",
        details={"partiallyApplied": {"revision": "0003", "statementsCommitted": 2}},
    )
    again = Result.from_json(result.to_json())
    assert again.exit_code is ExitCode.PARTIALLY_APPLIED and again.reason == "PartiallyApplied"
    assert again.details["partiallyApplied"]["statementsCommitted"] == 2
    # An older engine's details (no statement, cause or stamp) still read back.
    assert PartiallyApplied.from_details(again.details) == PartiallyApplied("0003", committed=2)


def test_a_partially_applied_revision_round_trips_bounded() -> None:
    partial = PartiallyApplied(
        revision="0003",
        committed=9,
        statements=("CREATE TABLE a (id INT)", "… 7 more …", "CREATE TABLE b (id INT)"),
        direction="downgrade",
        failed_statement="ALTER TABLE c ADD x " + "y" * 400,
        cause="(1146, \"Table 'c' doesn't exist\")",
        stamp=("0002",),
    )
    details = partial.to_details()
    assert set(details) == {PARTIALLY_APPLIED}
    shown = details[PARTIALLY_APPLIED]["failedStatement"]
    assert len(shown) == 300 and shown.endswith("…")
    again = PartiallyApplied.from_details(json.loads(json.dumps(details)))
    assert again is not None and again.failed_statement == shown
    assert again.statements == partial.statements and again.stamp == ("0002",)
    assert (again.direction, again.committed, again.cause) == ("downgrade", 9, partial.cause)
    assert PartiallyApplied.from_details({}) is None
    assert PartiallyApplied.from_details({PARTIALLY_APPLIED: {"statements": []}}) is None


def test_rolled_back_failure_has_its_own_reason() -> None:
    result = Result(command="apply", exit_code=ExitCode.MIGRATION_FAILED, rolled_back=True)
    assert result.reason == "RolledBack"


@pytest.mark.parametrize(
    "request_",
    [
        RunRequest(
            command="apply",
            target="head",
            scripts="/migrations",
            lock_timeout=60,
            on_failure="rollback",
            statement_timeout=600,
            ddl_lock_timeout=5,
            ddl_lock_retries=4,
            env_py=True,
            metadata="app.models:Base.metadata",
            output="json",
            log_format="json",
            result_file="/dev/termination-log",
            version_table=VersionTable(name="v", schema="ops"),
        ),
        RunRequest(
            command="apply",
            target="-1",
            dry_run=True,
            expect_plan_hash="ab" * 32,
            require_reversible=True,
        ),
        RunRequest(command="plan", target="branch@+2", scripts="/s"),
        RunRequest(command="downgrade", target="base", single_transaction=True),
        RunRequest(command="stamp", target="head", lock_timeout=1.5),
        RunRequest(command="apply", target="head", baseline="head", output="json"),
        RunRequest(command="upgrade", baseline="ab12", dry_run=True),
        RunRequest(command="plan", target="head", baseline="branch@head"),
        RunRequest(
            command="drift",
            lock_timeout=30,
            drift_ignore=("tmp_*", "orders.legacy_*", "-odd"),
            drift_accept="ab" * 32,
            output="json",
        ),
        RunRequest(command="drift", drift_record=True),
        RunRequest(command="wait-for", wait_timeout=120, scripts="/app/migrations"),
        RunRequest(command="wait-for", target="3c9a1f0b2e44", wait_timeout=0.5),
        RunRequest(command="apply", target="head", schema="Tenant-B", lock_timeout=0),
        RunRequest(command="drift", schema="-odd", drift_record=True),
        RunRequest(command="wait-for", schema="tenant_a"),
        RunRequest(
            command="schemas",
            schemas_query="-- active tenants\nSELECT name FROM tenants WHERE active",
            schemas_after="tenant_0042",
            statement_timeout=60,
            output="json",
            result_file="/dev/termination-log",
        ),
        RunRequest(command="schemas", schemas_query="SELECT nspname FROM pg_namespace"),
    ],
)
def test_run_request_argv_is_accepted_by_the_engine_cli(request_: RunRequest) -> None:
    """The operator builds argv with RunRequest; the CLI must parse exactly that."""
    argv = request_.to_argv()
    assert argv[0] == "revisor"
    args = build_parser().parse_args(argv[1:])
    assert args.command == request_.command
    if request_.command == "wait-for":
        assert args.revision == request_.target
        assert args.timeout == (request_.wait_timeout if request_.wait_timeout else 300)
    elif request_.command == "drift":
        assert args.ignore == list(request_.drift_ignore)
        assert args.accept == request_.drift_accept
        assert args.record is request_.drift_record
    elif request_.command == "schemas":
        assert args.query == request_.schemas_query
        assert args.after == request_.schemas_after
        assert args.statement_timeout == request_.statement_timeout
    else:
        assert args.target == (request_.target or "head")
    if request_.command in ("plan", "apply", "upgrade"):
        assert args.baseline == request_.baseline
    if request_.scripts:
        assert args.scripts == request_.scripts
    if request_.lock_timeout is not None:
        assert args.lock_timeout == request_.lock_timeout
    if request_.command == "apply":
        assert args.dry_run is request_.dry_run
        assert args.expect_plan_hash == request_.expect_plan_hash
        assert args.require_reversible is request_.require_reversible
        assert args.ddl_lock_retries == request_.ddl_lock_retries
    assert args.env_py is request_.env_py
    assert args.metadata == request_.metadata
    assert args.schema == request_.schema


#: Text a query, a name or a schema may hold: leading dashes, "=", quotes, spaces, newlines.
_ARGUMENT_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\0"), max_size=40
)


@settings(max_examples=200, deadline=None)
@given(schema=_ARGUMENT_TEXT, query=_ARGUMENT_TEXT, after=st.none() | _ARGUMENT_TEXT)
def test_any_schema_query_and_after_parse_back_as_given(
    schema: str, query: str, after: str | None
) -> None:
    """``--schema``, ``--query`` and ``--after`` carry any text, even one that reads as an option."""
    for command in ("schemas", "apply"):
        request_ = RunRequest(
            command=command,
            schema=schema,
            schemas_query=query if command == "schemas" else None,
            schemas_after=after if command == "schemas" else None,
        )
        args = build_parser().parse_args(request_.to_argv()[1:])
        assert args.schema == schema
        if command == "schemas":
            assert (args.query, args.after) == (query, after)


def test_drift_wait_for_and_baseline_have_their_reasons() -> None:
    assert ExitCode.from_code(9) is ExitCode.WAIT_TIMEOUT
    assert ExitCode.WAIT_TIMEOUT.reason == "WaitTimeout"
    assert ExitCode.MISMATCH.reason == "Mismatch", "drift is a mismatch with a finer reason"
    assert {Reason.DRIFTED, Reason.NO_DRIFT, Reason.DRIFT_ACCEPTED, Reason.NO_SNAPSHOT,
            Reason.SNAPSHOT_RECORDED, Reason.NEEDS_BASELINE, Reason.AT_REVISION} == {
        "Drifted", "NoDrift", "DriftAccepted", "NoSnapshot", "SnapshotRecorded",
        "NeedsBaseline", "AtRevision"}  # fmt: skip


def test_the_operator_reads_drift_and_baseline_details_back() -> None:
    drift = DriftDetails.bounded(
        differences=[f"+ index ix_{i} on t(c{i})" + "x" * 200 for i in range(30)],
        drifted=True,
        hash="a" * 64,
        recorded_hash="b" * 64,
        recorded_at="2026-12-01T10:00:00Z",
        recorded_by="upgrade",
    )
    assert len(drift.differences) == MAX_DIFFERENCES and drift.total == 30
    assert all(len(d) <= 120 and d.endswith("…") for d in drift.differences)
    details = {**drift.to_details(), **BaselineDetails(("r1",), "stamped").to_details()}
    details |= ExistingObjects("r0", tables=("orders",)).to_details() | {SCHEMA_HASH: "c" * 64}
    result = Result(
        command="drift", exit_code=ExitCode.MISMATCH, detail_reason=Reason.DRIFTED, details=details
    )
    text = result.to_json()
    assert len(text.encode()) <= MAX_RESULT_BYTES
    again = Result.from_json(text)
    assert again.reason == "Drifted"
    assert DriftDetails.from_details(again.details) == drift
    assert BaselineDetails.from_details(again.details) == BaselineDetails(("r1",), "stamped")
    assert ExistingObjects.from_details(again.details) == ExistingObjects("r0", ("orders",))
    assert schema_hash(again.details) == "c" * 64
    assert DriftDetails.from_details({"drifted": "yes"}) is None
    assert BaselineDetails.from_details({"baseline": {"outcome": "maybe"}}) is None
    assert ExistingObjects.from_details({}) is None and schema_hash({}) is None


def test_long_lists_in_details_shrink_before_details_are_dropped() -> None:
    """The hashes must reach the operator even when the differences do not fit."""
    result = Result(
        command="drift",
        exit_code=ExitCode.MISMATCH,
        details={"drifted": True, "hash": "a" * 64, "differences": ["d" * 100] * 60},
    )
    data = json.loads(result.to_json())
    assert data["details"]["hash"] == "a" * 64
    assert data["details"]["differencesTotal"] == 60
    assert 0 < len(data["details"]["differences"]) < 60


def test_result_round_trips_through_json() -> None:
    result = Result(
        command="apply", exit_code=ExitCode.OK, direction="upgrade", target="head",
        from_revisions=("a",), to_revisions=("b",),
        applied=(Step(revision="b", direction="upgrade", description="add b", seconds=0.4123),),
        plan_hash="h", started_at="2026-01-01T00:00:00Z", runner="pod-1",
    )  # fmt: skip
    parsed = Result.from_json(result.to_json())
    assert parsed.applied[0].seconds == 0.412
    assert parsed.to_revisions == ("b",) and parsed.runner == "pod-1"
    assert json.loads(result.to_json())["schema"] == RESULT_SCHEMA


def test_long_results_are_truncated_with_counts_to_fit_a_termination_message() -> None:
    steps = tuple(
        Step(revision=f"{i:012x}", direction="upgrade", description="x" * 60, seconds=0.1)
        for i in range(1000)
    )
    result = Result(
        command="apply",
        exit_code=ExitCode.MIGRATION_FAILED,
        applied=steps,
        plan=steps,
        error="e" * 10000,
    )
    text = result.to_json()
    assert len(text.encode()) <= MAX_RESULT_BYTES
    data = json.loads(text)
    assert data["appliedTotal"] == 1000 and data["planTotal"] == 1000
    assert data["applied"][0]["revision"] == f"{0:012x}"
    assert data["error"].startswith("eee") and data["error"].endswith("…")


def test_from_json_rejects_other_documents() -> None:
    with pytest.raises(ValueError, match=r"not a revisor\.dev/result/v1 document"):
        Result.from_json('{"schema": "other"}')
    with pytest.raises(ValueError, match="not a JSON result document"):
        Result.from_json("Traceback (most recent call last):")
