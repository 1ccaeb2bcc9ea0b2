"""What a run tells people and machines, and where.

stderr carries progress: human lines (``[3/12] 3c9a1f0b2e44 add orders.status
… 0.41s``) or JSON lines with ``--log-format json`` (structlog). stdout is
left for the command's answer (text, or the result document with
``--output json``). Every line passes through :func:`revisor.redaction.scrub`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

from revisor import contract
from revisor.contract import progress
from revisor.errors import BadInput
from revisor.redaction import scrub


class Reporter(Protocol):
    def planned(self, steps: Sequence[contract.Step], *, dry_run: bool) -> None: ...
    def step_started(self, index: int, total: int, step: contract.Step) -> None: ...
    def step_finished(self, index: int, total: int, step: contract.Step) -> None: ...
    def step_failed(self, index: int, total: int, step: contract.Step, error: str) -> None: ...
    def info(self, message: str) -> None: ...


def _label(step: contract.Step) -> str:
    arrow = "" if step.direction == "upgrade" else "(down) "
    return (
        f"{arrow}{step.revision}"
        + (f" {step.description}" if step.description else "")
        + (" (no-op)" if step.noop else "")
    )


class ConsoleReporter:
    """Human lines on stderr; on a terminal a long step shows while it runs."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self._open = False

    def _write(self, text: str) -> None:
        self.stream.write(scrub(text))
        self.stream.flush()

    def _close_line(self) -> None:
        if self._open:
            self._write("\n")
            self._open = False

    def planned(self, steps: Sequence[contract.Step], *, dry_run: bool) -> None:
        verb = "downgrading" if steps and steps[0].direction == "downgrade" else "upgrading"
        what = f"dry run: {verb}" if dry_run else verb
        self._write(f"{what} {len(steps)} step(s)\n")

    def step_started(self, index: int, total: int, step: contract.Step) -> None:
        if self.live:
            self._write(f"[{index}/{total}] {_label(step)} …")
            self._open = True

    def step_finished(self, index: int, total: int, step: contract.Step) -> None:
        seconds = f"{step.seconds:.2f}s" if step.seconds is not None else ""
        if self._open:
            self._write(f" {seconds}\n")
            self._open = False
        else:
            self._write(f"[{index}/{total}] {_label(step)} … {seconds}\n")

    def step_failed(self, index: int, total: int, step: contract.Step, error: str) -> None:
        # The message itself is the run's closing "error:" line (the CLI
        # writes it, with what a rollback did after): said once, not twice.
        if self._open:
            self._write(" FAILED\n")
            self._open = False
        else:
            self._write(f"[{index}/{total}] {_label(step)} … FAILED\n")

    def info(self, message: str) -> None:
        self._close_line()
        self._write(f"{message}\n")


class JsonReporter:
    """One JSON object per event on stderr, through structlog.

    The lines about a run's steps are the Job contract's
    (:mod:`revisor.contract.progress`): the operator reads them from the pod's log.
    """

    def __init__(self) -> None:
        import structlog

        self.log = structlog.get_logger("revisor")

    def planned(self, steps: Sequence[contract.Step], *, dry_run: bool) -> None:
        revisions = [s.revision for s in steps]
        self.log.info(
            progress.PLAN, **progress.plan_fields(len(steps), dry_run=dry_run, revisions=revisions)
        )

    def step_started(self, index: int, total: int, step: contract.Step) -> None:
        self.log.info(progress.STEP_STARTED, **progress.step_fields(index, total, step))

    def step_finished(self, index: int, total: int, step: contract.Step) -> None:
        self.log.info(progress.STEP_APPLIED, **progress.step_fields(index, total, step))

    def step_failed(self, index: int, total: int, step: contract.Step, error: str) -> None:
        self.log.error(
            progress.STEP_FAILED, error=error, **progress.step_fields(index, total, step)
        )

    def info(self, message: str) -> None:
        self.log.info(message)


def _scrub_event(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if isinstance(value, str):
            event[key] = scrub(value)
    return event


def configure_logging(log_format: str, *, stream: TextIO | None = None) -> Reporter:
    """Pick the reporter; JSON lines go through structlog (imported only then)."""
    out = stream or sys.stderr
    level = logging.INFO
    if log_format == "json":
        import structlog

        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True, key=progress.TIMESTAMP),
                _scrub_event,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.PrintLoggerFactory(out),
            wrapper_class=structlog.make_filtering_bound_logger(level),
            cache_logger_on_first_use=False,
        )
        return JsonReporter()
    return ConsoleReporter(out)


def check_result_file(path: str | None) -> None:
    """Fail early (before touching the database) if the result cannot be written."""
    if path is None:
        return
    target = Path(path)
    try:
        with target.open("a"):
            pass
    except OSError as exc:
        raise BadInput(
            f"--result-file {path}: cannot write it ({exc.strerror})",
            hint="choose a writable path, or mount a writable volume there",
        ) from None


def result_document(result: contract.Result, *, limit: int = contract.MAX_RESULT_BYTES) -> str:
    """The result document as :func:`write_result` writes it: scrubbed, cut to ``limit`` bytes.

    A command that fills the document up to the limit (``revisor schemas``)
    measures it with this, uncut, rather than guessing what scrubbing and
    JSON escaping add.
    """
    return result.with_text(scrub).to_json(limit=limit)


def write_result(result: contract.Result, *, path: str | None, stdout: bool) -> None:
    text = result_document(result)
    if path is not None:
        Path(path).write_text(text)
    if stdout:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


class _ScrubbedLines(io.TextIOBase):
    """A text stream that passes whole lines to ``target`` through :func:`scrub`.

    Lines, not writes: ``print(url)`` is two writes, and a secret split over
    two writes would escape a per-write scrub.
    """

    def __init__(self, target: TextIO) -> None:
        self.target = target
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            lines, _, self._pending = self._pending.rpartition("\n")
            self.target.write(scrub(lines + "\n"))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self.target.write(scrub(self._pending))
            self._pending = ""
        self.target.flush()


@contextlib.contextmanager
def revision_output() -> Iterator[None]:
    """While migrations run, what revisions and env.py print goes to stderr, scrubbed.

    stdout is the result document's (``--output json``); a revision that
    prints there would break it, and one that prints its connection string
    would leak it into the Job's log.
    """
    stream = _ScrubbedLines(sys.stderr)
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield
    finally:
        stream.flush()
