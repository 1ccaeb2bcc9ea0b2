"""The Job contract: what the operator passes to the engine and what it gets back.

This package is the only part of the engine the operator may import (an
import-linter contract enforces it), so the two sides cannot drift apart:

* :mod:`.requests` — the engine invocation a Job runs (:class:`RunRequest`)
  and the environment variables that carry the database;
* :mod:`.results` — exit codes, reasons and the result document the engine
  writes to its termination message;
* :mod:`.details` — the parts of a result's ``details`` the operator reads
  (drift, baseline, a partially applied revision, the recorded schema's hash);
* :mod:`.schemas` — a page of the tenant schemas a ``revisor schemas`` query
  returned (:class:`SchemaPage`), and the compact form of a list of names;
* :mod:`.progress` — the progress lines a Job's log carries (``--log-format
  json``), which the operator tails to show how far a run is;
* :mod:`.redaction` — the one function that masks passwords in text, used by
  the engine before anything leaves the process and by the operator before
  anything reaches status, Events or logs;
* :mod:`.words` — the grammar both sides share: durations, revision lists.

Pure data and pure functions only: no Alembic, SQLAlchemy, kopf or kubernetes.
"""

from revisor.contract.details import (
    BASELINE,
    EXISTING_OBJECTS,
    MAX_DIFFERENCES,
    PARTIALLY_APPLIED,
    SCHEMA_HASH,
    BaselineDetails,
    BaselineOutcome,
    DriftDetails,
    ExistingObjects,
    PartiallyApplied,
    schema_hash,
)
from revisor.contract.progress import ProgressLine, parse_progress_line
from revisor.contract.redaction import MASK, redact
from revisor.contract.requests import (
    DEFAULT_VERSION_TABLE,
    ENV_DATABASE_PARTS,
    ENV_DATABASE_SOURCE,
    ENV_DATABASE_URL,
    ENV_RUNNER,
    Command,
    OnFailure,
    RunRequest,
    VersionTable,
)
from revisor.contract.results import (
    MAX_RESULT_BYTES,
    RESULT_SCHEMA,
    Direction,
    ExitCode,
    Reason,
    Result,
    Step,
)
from revisor.contract.schemas import SCHEMA_PAGE, SchemaPage, decode_names, encode_names
from revisor.contract.words import DURATION_PATTERN, heads_text, parse_duration, timestamp

__all__ = [
    "BASELINE",
    "DEFAULT_VERSION_TABLE",
    "DURATION_PATTERN",
    "ENV_DATABASE_PARTS",
    "ENV_DATABASE_SOURCE",
    "ENV_DATABASE_URL",
    "ENV_RUNNER",
    "EXISTING_OBJECTS",
    "MASK",
    "MAX_DIFFERENCES",
    "MAX_RESULT_BYTES",
    "PARTIALLY_APPLIED",
    "RESULT_SCHEMA",
    "SCHEMA_HASH",
    "SCHEMA_PAGE",
    "BaselineDetails",
    "BaselineOutcome",
    "Command",
    "Direction",
    "DriftDetails",
    "ExistingObjects",
    "ExitCode",
    "OnFailure",
    "PartiallyApplied",
    "ProgressLine",
    "Reason",
    "Result",
    "RunRequest",
    "SchemaPage",
    "Step",
    "VersionTable",
    "decode_names",
    "encode_names",
    "heads_text",
    "parse_duration",
    "parse_progress_line",
    "redact",
    "schema_hash",
    "timestamp",
]
