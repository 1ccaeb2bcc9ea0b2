"""The progress lines a Job's log carries are the contract's: the operator parses what the engine writes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from revisor.contract import ProgressLine, parse_progress_line
from revisor.contract.progress import (
    PLAN,
    STEP_APPLIED,
    STEP_FAILED,
    STEP_STARTED,
    ProgressEvent,
)

from tests.support.projects import Rev, chain, make_project


def test_every_step_of_a_json_run_is_a_progress_line(
    revisor: Callable[..., Any], tmp_path: Path
) -> None:
    """plan, then started/applied for each step, in order, with the run's revisions and times."""
    revs = chain(3)
    project = make_project(tmp_path, revs)
    run = revisor(
        *project.args(),
        "--database-url",
        f"sqlite:///{tmp_path / 'x.db'}",
        "--log-format",
        "json",
        "upgrade",
    )
    assert run.code == 0
    lines = [parse_progress_line(line) for line in run.err.splitlines()]
    found = [line for line in lines if line is not None]
    assert [(f.event, f.index, f.total) for f in found] == [
        (PLAN, 0, 3),
        (STEP_STARTED, 1, 3),
        (STEP_APPLIED, 1, 3),
        (STEP_STARTED, 2, 3),
        (STEP_APPLIED, 2, 3),
        (STEP_STARTED, 3, 3),
        (STEP_APPLIED, 3, 3),
    ]
    assert [f.revision for f in found if f.event == STEP_STARTED] == [r.id for r in revs]
    assert all(f.at and f.at.endswith("Z") for f in found)
    assert all(f.seconds is not None for f in found if f.event == STEP_APPLIED)


def test_a_failed_step_is_a_progress_line_with_its_error(
    revisor: Callable[..., Any], tmp_path: Path
) -> None:
    revs = chain(2)
    broken = Rev(
        id=revs[1].id, down=revs[1].down, message="breaks", upgrade="raise RuntimeError('boom')"
    )
    project = make_project(tmp_path, [revs[0], broken])
    run = revisor(
        *project.args(),
        "--database-url",
        f"sqlite:///{tmp_path / 'x.db'}",
        "--log-format",
        "json",
        "upgrade",
    )
    assert run.code == 4
    failed = [
        f
        for f in (parse_progress_line(line) for line in run.err.splitlines())
        if f is not None and f.event == STEP_FAILED
    ]
    assert [(f.index, f.total, f.revision) for f in failed] == [(2, 2, revs[1].id)]
    assert failed[0].error is not None and "boom" in failed[0].error


def test_console_lines_and_other_output_are_not_progress() -> None:
    for line in (
        "[1/3] 1a2b3c4d5e6f create customers … 0.01s",
        "upgrading 3 step(s)",
        '{"event": "waiting for the migration lock", "level": "info"}',
        '{"event": "step.started", "index": 0, "total": 3, "revision": "a"}',
        '{"event": "step.started", "index": 4, "total": 3, "revision": "a"}',
        '{"event": "step.started", "index": true, "total": 3, "revision": "a"}',
        '{"event": "step.started", "index": 1, "total": 3, "revision": ""}',
        '{"event": "step.started", "index": 1, "total": 3, "revision": 5}',
        '{"event": "plan", "steps": -1}',
        '["step.started"]',
        '{"event": "step.started", "index": 1, "total": 3, "revision": "a"',  # cut by a byte limit
        "",
    ):
        assert parse_progress_line(line) is None, line


@st.composite
def step_lines(draw: st.DrawFn) -> tuple[dict[str, Any], ProgressLine]:
    total = draw(st.integers(min_value=1, max_value=10_000))
    index = draw(st.integers(min_value=1, max_value=total))
    events: list[ProgressEvent] = [STEP_STARTED, STEP_APPLIED, STEP_FAILED]
    event = draw(st.sampled_from(events))
    revision = draw(st.text(min_size=1, max_size=40))
    description = draw(st.text(max_size=200))
    fields: dict[str, Any] = {
        "index": index,
        "total": total,
        "revision": revision,
        "direction": "upgrade",
        "description": description,
        "event": event,
        "level": "info",
        "timestamp": "2026-12-06T23:24:11.651299Z",
    }
    return fields, ProgressLine(
        event=event,
        index=index,
        total=total,
        revision=revision,
        description=description,
        at="2026-12-06T23:24:11.651299Z",
    )


@given(step_lines(), st.sampled_from(["", " ", "\r", "\t "]))
def test_any_well_formed_step_line_is_read_back(
    line: tuple[dict[str, Any], ProgressLine], padding: str
) -> None:
    fields, expected = line
    assert parse_progress_line(padding + json.dumps(fields) + padding) == expected


@given(st.text(max_size=500))
def test_no_text_breaks_the_parser(text: str) -> None:
    found = parse_progress_line(text)
    assert found is None or 0 <= found.index <= found.total
