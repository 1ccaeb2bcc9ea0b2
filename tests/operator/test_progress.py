"""A running Job's progress and a failed Job's last words, read from its pod's log."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest
from hypothesis import given
from hypothesis import strategies as st
from revisor.contract import ExitCode
from revisor_operator import handlers
from revisor_operator.decisions.observe import Run, observe_run
from revisor_operator.decisions.progress import (
    PROGRESS_LIMIT_BYTES,
    PROGRESS_TAIL_LINES,
    TAIL_LIMIT_BYTES,
    TAIL_LINE_CHARS,
    TAIL_LINES,
    Progress,
    elapsed,
    latest_progress,
    log_tail,
)
from revisor_operator.handlers import reconcile

from .factories import NOW, decide_on, job_for, migration, pod, result
from .fake_kube import FakeKube, runtime
from .test_reconcile import OK_REFS

JOB = "shop-g1-abcdef"
CANARY = "Canary-Pa55word-7f3e"


def line(event: str, index: int, total: int, revision: str, **extra: Any) -> str:
    fields = {
        "index": index,
        "total": total,
        "revision": revision,
        "direction": "upgrade",
        "description": f"add {revision}",
        "event": event,
        "level": "info",
        "timestamp": "2025-01-02T03:04:05.123456Z",
        **extra,
    }
    return json.dumps(fields)


def at(seconds: float) -> datetime:
    return datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC) + timedelta(seconds=seconds)


# -- reading a log --------------------------------------------------------------------------


def test_the_newest_step_line_is_the_progress_and_reads_as_the_message_column() -> None:
    log = "\n".join(
        [
            json.dumps({"event": "plan", "steps": 120, "level": "info"}),
            line("step.started", 36, 120, "0a0a0a0a0a0a"),
            line("step.applied", 36, 120, "0a0a0a0a0a0a", seconds=0.4),
            "a revision printed this",
            line("step.started", 37, 120, "5e4f924ff96c", description="Add PAUSED state"),
        ]
    )
    found = latest_progress(log, job=JOB)
    assert found is not None
    assert (found.step, found.steps, found.state, found.revision) == (
        37,
        120,
        "running",
        "5e4f924ff96c",
    )
    assert found.since == "2025-01-02T03:04:05Z"
    assert found.message(at(12.7)) == "[37/120] 5e4f924ff96c Add PAUSED state … 12s"
    assert found.to_status() == {
        "job": JOB,
        "step": 37,
        "steps": 120,
        "state": "running",
        "revision": "5e4f924ff96c",
        "description": "Add PAUSED state",
        "direction": "upgrade",
        "since": "2025-01-02T03:04:05Z",
    }


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([json.dumps({"event": "plan", "steps": 3})], "[0/3] planned 3 step(s)"),
        ([line("step.applied", 2, 3, "bbb", seconds=0.25)], "[2/3] bbb add bbb … 0.25s done"),
        ([line("step.failed", 2, 3, "bbb", error="boom")], "[2/3] bbb add bbb … FAILED"),
        (
            [line("step.started", 1, 2, "ccc", direction="downgrade")],
            "[1/2] (down) ccc add ccc … 1m05s",
        ),
    ],
)
def test_each_kind_of_step_line_has_its_message(lines: list[str], message: str) -> None:
    found = latest_progress("\n".join(lines), job=JOB)
    assert found is not None
    assert found.message(at(65)) == message


def test_a_log_without_progress_lines_says_nothing() -> None:
    assert latest_progress("", job=JOB) is None
    assert latest_progress("Traceback (most recent call last):\n  boom\n", job=JOB) is None


def test_progress_survives_status_for_the_same_job_only() -> None:
    found = latest_progress(line("step.started", 2, 3, "bbb"), job=JOB)
    assert found is not None
    assert Progress.from_status(found.to_status(), job=JOB) == found
    assert Progress.from_status(found.to_status(), job="shop-g2-other") is None
    assert Progress.from_status({"job": JOB, "step": "2"}, job=JOB) is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-3, "0s"), (0, "0s"), (59.9, "59s"), (60, "1m00s"), (3599, "59m59s"), (7620, "2h07m")],
)
def test_elapsed_time_reads_to_the_second(seconds: float, text: str) -> None:
    assert elapsed(seconds) == text


@given(st.lists(st.text(max_size=300), max_size=30))
def test_any_log_gives_progress_or_none_and_a_bounded_tail(lines: list[str]) -> None:
    log = "\n".join(lines)
    found = latest_progress(log, job=JOB)
    assert found is None or 0 <= found.step <= found.steps
    tail = log_tail(log)
    assert len(tail) <= TAIL_LINES
    assert all(0 < len(kept) <= TAIL_LINE_CHARS for kept in tail)


@given(
    st.lists(st.text(max_size=40), max_size=5),
    st.sampled_from(
        [
            "postgresql://app:{}@db:5432/shop",
            "password={}",
            "PGPASSWORD={} psql",
            '{{"password": "{}"}}',
            "ALTER ROLE app PASSWORD '{}'",
        ]
    ),
)
def test_a_password_in_any_shape_never_reaches_the_tail(noise: list[str], shape: str) -> None:
    log = "\n".join([*noise, "connecting with " + shape.format(CANARY), *noise])
    assert CANARY not in "\n".join(log_tail(log))


def test_the_tail_renders_engine_lines_and_keeps_other_output() -> None:
    log = "\n".join(
        [
            *[f"noise {i}" for i in range(30)],
            line("step.failed", 2, 3, "bbb", level="error", error='relation "t" exists'),
            "\x1b[31mred\x1b[0m text from a revision",
            '{"schema":"revisor.dev/result/v1","command":"apply","exitCode":4}',
            json.dumps({"event": "waiting for the lock", "level": "info", "holder": 42}),
            "",
        ]
    )
    tail = log_tail(log)
    assert len(tail) == TAIL_LINES
    assert tail[-3:] == [
        '03:04:05 [2/3] bbb add bbb … FAILED: relation "t" exists',
        "red text from a revision",
        "info waiting for the lock holder=42",
    ]
    assert tail[0] == "noise 13", "the result document is left out"


# -- the decision ------------------------------------------------------------------------------


def running(*, waiting: bool = False) -> Run:
    job = job_for(state="active", name=JOB)
    state = pod(job=JOB, waiting=("ContainerCreating", "")) if waiting else pod(job=JOB)
    return observe_run(job=job, pods=[state])


def test_a_running_job_shows_its_progress_in_status_and_message() -> None:
    progress = latest_progress(line("step.started", 2, 3, "bbb"), job=JOB)
    plain = decide_on(migration(), runs=[running()], references=OK_REFS)
    assert plain.status is not None and plain.status.get("progress") is None
    shown = decide_on(
        migration(),
        runs=[running()],
        references=OK_REFS,
        now="2025-01-02T03:04:17Z",
        progress=progress,
    )
    assert shown.status is not None
    assert shown.status["progress"]["step"] == 2
    [ready] = [c for c in shown.status["conditions"] if c["type"] == "Ready"]
    assert ready["message"].startswith("[2/3] bbb add bbb … 12s; Job shop-g1-abcdef is migrating")


def test_without_a_fresh_read_the_recorded_progress_is_shown_with_its_time_moved_on() -> None:
    progress = latest_progress(line("step.started", 2, 3, "bbb"), job=JOB)
    assert progress is not None
    body = migration(status={"phase": "Running", "progress": progress.to_status()})
    decision = decide_on(body, runs=[running()], references=OK_REFS, now="2025-01-02T03:05:05Z")
    assert decision.status is not None
    [ready] = [c for c in decision.status["conditions"] if c["type"] == "Ready"]
    assert ready["message"].startswith("[2/3] bbb add bbb … 1m00s;")


def test_recording_the_run_removes_the_progress() -> None:
    progress = latest_progress(line("step.started", 3, 3, "ccc"), job=JOB)
    assert progress is not None
    job = job_for(state="complete", name=JOB)
    done = observe_run(job=job, pods=[pod(job=JOB, exit_code=0, message=result())])
    body = migration(status={"phase": "Running", "progress": progress.to_status()})
    decision = decide_on(body, runs=[done], references=OK_REFS)
    assert decision.action == "record"
    assert decision.status is not None and decision.status["progress"] is None


# -- the handlers: what is read, and how much ---------------------------------------------------


@pytest.fixture(autouse=True)
def _no_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kopf, "event", lambda *_, **__: None)
    # Each test's reads start afresh: the throttle is per process, as in the operator.
    monkeypatch.setattr(handlers, "_progress_reads", handlers._Throttle())


def fake_with_running_job(log: str) -> FakeKube:
    job = job_for(state="active", name=JOB, created=NOW)
    job["metadata"]["uid"] = ""  # as the tests' Jobs: every pod given is its own
    fake = FakeKube(migration(), jobs=[job], pods={JOB: [pod(job=JOB)]})
    fake.logs[f"{JOB}-x7k2p"] = log
    return fake


def test_a_pass_reads_a_bounded_tail_and_writes_progress() -> None:
    fake = fake_with_running_job(line("step.started", 1, 2, "aaa") + "\n")
    settings_runtime = runtime(fake)
    decision = reconcile(settings_runtime, namespace="shop", name="shop")
    assert decision is not None and decision.action == "wait"
    assert fake.log_reads == [(f"{JOB}-x7k2p", PROGRESS_TAIL_LINES, PROGRESS_LIMIT_BYTES)]
    stored = fake.migrations["shop", "shop"]["status"]
    assert stored["progress"]["revision"] == "aaa"


def test_reads_of_one_job_are_at_most_one_per_interval() -> None:
    """Bursts of events (the timer, Job events, a resync) read the log once per interval."""
    fake = fake_with_running_job(line("step.started", 1, 2, "aaa"))
    fake.jobs[JOB]["metadata"]["name"] = JOB
    for _ in range(3):
        reconcile(runtime(fake), namespace="shop", name="shop")
    assert len(fake.log_reads) == 1


def test_an_unreadable_log_never_stops_the_reconcile() -> None:
    from revisor_operator.adapters.kube import Forbidden

    fake = fake_with_running_job("")
    fake.jobs["shop-g1-unreadable"] = fake.jobs.pop(JOB)
    fake.jobs["shop-g1-unreadable"]["metadata"]["name"] = "shop-g1-unreadable"
    fake.pods = {"shop-g1-unreadable": [pod(job="shop-g1-unreadable")]}
    fake.failures["read_pod_log"] = Forbidden("pods/log is forbidden", status=403)
    decision = reconcile(runtime(fake), namespace="shop", name="shop")
    assert decision is not None and decision.action == "wait"
    assert "progress" not in fake.migrations["shop", "shop"]["status"]


def test_a_container_not_started_is_not_read() -> None:
    fake = fake_with_running_job("")
    fake.jobs["shop-g1-waiting"] = fake.jobs.pop(JOB)
    fake.jobs["shop-g1-waiting"]["metadata"]["name"] = "shop-g1-waiting"
    fake.pods = {"shop-g1-waiting": [pod(job="shop-g1-waiting", waiting=("ContainerCreating", ""))]}
    reconcile(runtime(fake), namespace="shop", name="shop")
    assert fake.log_reads == []


def test_a_failed_run_keeps_its_last_log_lines_masked() -> None:
    name = "shop-g1-failed"
    job = job_for(state="failed", name=name)
    job["metadata"]["uid"] = ""
    message = result(ExitCode.MIGRATION_FAILED, error="boom", applied=())
    fake = FakeKube(
        migration(), jobs=[job], pods={name: [pod(job=name, exit_code=4, message=message)]}
    )
    fake.logs[f"{name}-x7k2p"] = "\n".join(
        [
            *[f"line {i}" for i in range(40)],
            f"connecting to postgresql://app:{CANARY}@db/shop",
            line("step.failed", 1, 1, "aaa", error="boom"),
        ]
    )
    reconcile(runtime(fake), namespace="shop", name="shop")
    assert fake.log_reads == [(f"{name}-x7k2p", TAIL_LINES, TAIL_LIMIT_BYTES)]
    last = fake.migrations["shop", "shop"]["status"]["lastRun"]
    assert len(last["logTail"]) == TAIL_LINES
    assert last["logTail"][-2] == "connecting to postgresql://app:***@db/shop"
    assert last["logTail"][-1] == "03:04:05 [1/1] aaa add aaa … FAILED: boom"
    assert CANARY not in json.dumps(fake.migrations["shop", "shop"]["status"])


def test_a_succeeded_run_reads_no_log() -> None:
    name = "shop-g1-fine"
    job = job_for(state="complete", name=name)
    job["metadata"]["uid"] = ""
    fake = FakeKube(
        migration(), jobs=[job], pods={name: [pod(job=name, exit_code=0, message=result())]}
    )
    reconcile(runtime(fake), namespace="shop", name="shop")
    assert fake.log_reads == []
    assert "logTail" not in fake.migrations["shop", "shop"]["status"]["lastRun"]
