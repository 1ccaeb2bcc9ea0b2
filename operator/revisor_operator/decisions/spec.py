"""Parse and validate a ``DatabaseMigration``'s spec into frozen dataclasses.

The CRD's schema and CEL rules reject most mistakes at ``kubectl apply``
time, but the operator cannot trust that: the CRD installed may be older than
the operator, and status must say *what* is wrong, *where*, and *how to fix
it* in words, not as a Python traceback. So every field is checked again
here, all problems are collected (not just the first), and each one is a
:class:`Problem` carrying its field path, its message, its fix and the
condition reason it maps to.

Pure: no I/O. Defaults mirror the CRD's, for resources stored before a
default existed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from revisor.contract import DURATION_PATTERN, OnFailure, Reason, VersionTable, parse_duration

from .reasons import OperatorReason

Mode = Literal["Apply", "Plan", "DryRun"]
PullPolicy = Literal["Always", "IfNotPresent", "Never"]
DriftPolicy = Literal["Report", "Block"]

MODES: tuple[Mode, ...] = ("Apply", "Plan", "DryRun")
ON_FAILURE: dict[str, OnFailure] = {"Rollback": "rollback", "Stop": "stop"}
PULL_POLICIES: tuple[PullPolicy, ...] = ("Always", "IfNotPresent", "Never")
DRIFT_POLICIES: tuple[DriftPolicy, ...] = ("Report", "Block")

DEFAULT_TARGET = "head"
DEFAULT_LOCK_TIMEOUT_SECONDS = 60
DEFAULT_JOB_TIMEOUT_SECONDS = 30 * 60
DEFAULT_ROLLBACK_WINDOW_SECONDS = 10 * 60
#: Retries of a run whose pod failed for a reason a retry can fix (the
#: database unreachable, the lock held, the pod evicted); bounded, as is a
#: Job's deadline, so that no resource can hold a Job for ever.
DEFAULT_BACKOFF_LIMIT = 3
MAX_BACKOFF_LIMIT = 10
MAX_JOB_SECONDS = 24 * 3600
MAX_DDL_LOCK_RETRIES = 100
#: PostgreSQL's NAMEDATALEN - 1: the longest identifier, in bytes.
MAX_SCHEMA_BYTES = 63
#: The shortest spec.drift.interval: each check is a Job (a pod, a lock, a read of the schema).
MIN_DRIFT_INTERVAL_SECONDS = 60
#: spec.drift.ignore: at most this many patterns, each at most this long.
MAX_DRIFT_IGNORE = 50
MAX_DRIFT_PATTERN = 253
#: A schema snapshot's hash, as ``revisor drift`` prints it (sha256, lower-case hex).
SCHEMA_HASH_PATTERN = r"^[0-9a-f]{64}$"
#: spec.baseline: a revision id or prefix, head, heads or branch@head (not base, not relative).
BASELINE_PATTERN = r"^[A-Za-z0-9_]+(@heads?)?$"

#: Alembic's target syntax. A revision id may be a full id or a unique
#: prefix; Alembic allows custom ids (``--rev-id``), so ids are word
#: characters, not only hex. The CRD's CEL rule uses this same expression
#: (RE2-compatible); a unit test keeps the two identical.
_REV = r"[A-Za-z0-9_]+"
TARGET_PATTERN = rf"^(heads?|base|[+-][0-9]+|{_REV}([+-][0-9]+)?|{_REV}@(head|base|[+-][0-9]+))$"
_TARGET = re.compile(TARGET_PATTERN)
TARGET_HELP = (
    "Use head, heads, base, a revision id or a unique prefix of one (ae1027a6), "
    "+N or -N (relative to the current revision), branch@head, branch@+N or rev@+N"
)


# RFC 1123 subdomain (ConfigMap, Secret, ServiceAccount, Deployment names).
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
# Secret and ConfigMap keys.
_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
_HEX = re.compile(r"^[0-9a-f]{8,128}$")
_SQL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_SCHEMA_HASH = re.compile(SCHEMA_HASH_PATTERN)
_BASELINE = re.compile(BASELINE_PATTERN)
#: ``module.path:attribute.path``, as ``revisor --metadata`` takes it. The CRD uses it too.
METADATA_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$"
_METADATA = re.compile(METADATA_PATTERN)
#: A target relative to where the database is: -1, +2, rev+1, branch@+1, rev@-1.
_RELATIVE = re.compile(r"(^[+-][0-9]+$)|([A-Za-z0-9_]([+-][0-9]+)$)|(@[+-][0-9]+$)")


class InvalidSpec(Exception):
    """The spec cannot be acted on; :attr:`problems` says why, one entry per problem."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(p.text for p in self.problems))

    @property
    def reason(self) -> str:
        """``InvalidTarget`` when the target is the only problem, else ``InvalidSpec``."""
        reasons = {p.reason for p in self.problems}
        return reasons.pop() if len(reasons) == 1 else OperatorReason.INVALID_SPEC


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the spec: where, what, how to fix it."""

    field: str
    message: str
    fix: str
    reason: str = OperatorReason.INVALID_SPEC

    @property
    def text(self) -> str:
        return f"{self.field}: {self.message}. {self.fix}."


@dataclass(frozen=True)
class SecretKey:
    """One key of one Secret, wired into the Job with ``secretKeyRef``."""

    secret: str
    key: str


@dataclass(frozen=True)
class UrlDatabase:
    """The whole SQLAlchemy URL is one key of a Secret."""

    url: SecretKey


@dataclass(frozen=True)
class PartsDatabase:
    """Host, port, database, user and password are keys of one Secret."""

    secret: str
    #: Connection part (a key of ``revisor.contract.ENV_DATABASE_PARTS``) -> Secret key.
    keys: Mapping[str, str]
    #: SQLAlchemy driver name, e.g. ``postgresql+psycopg`` (not a secret).
    driver: str | None = None

    @property
    def optional_parts(self) -> frozenset[str]:
        return frozenset({"port"})


Database = UrlDatabase | PartsDatabase


@dataclass(frozen=True)
class ConfigMapSource:
    """Revision files are the keys of a ConfigMap, mounted as a flat directory."""

    name: str


@dataclass(frozen=True)
class ImageSource:
    """Revision files live in a container image at ``path``; an init container copies them."""

    image: str
    path: str
    pull_policy: PullPolicy | None = None


Source = ConfigMapSource | ImageSource


@dataclass(frozen=True)
class Approval:
    required: bool = False
    plan_hash: str | None = None


@dataclass(frozen=True)
class Timeouts:
    statement_seconds: float | None = None
    ddl_lock_seconds: float | None = None
    #: Times a revision that hit ``ddl_lock_seconds`` is re-run (``--ddl-lock-retries``).
    ddl_lock_retries: int = 0
    job_seconds: float | None = None


@dataclass(frozen=True)
class Runner:
    image: str | None = None
    pull_policy: PullPolicy | None = None
    service_account: str | None = None
    resources: Mapping[str, Any] = field(default_factory=dict)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    backoff_limit: int = DEFAULT_BACKOFF_LIMIT
    active_deadline_seconds: int | None = None


@dataclass(frozen=True)
class Rollback:
    """Follow ``deployment``'s rollout for ``window_seconds`` after an upgrade; undo it if it fails.

    See :mod:`.rollout` for how a rollout is judged.
    """

    deployment: str | None = None
    window_seconds: float = DEFAULT_ROLLBACK_WINDOW_SECONDS
    #: A failed rollout may send the database back to base (no revision at
    #: all: every table dropped). Off by default: after a first install there
    #: is no previous application to serve, so no window opens.
    allow_base: bool = False


@dataclass(frozen=True)
class Drift:
    """``spec.drift``: compare the live schema with the one recorded for its revision.

    A check runs after every successful run, every ``interval_seconds`` if
    set, and on request (the annotation ``revisor.dev/drift-check``); see
    :mod:`.drift`. ``Block`` also checks before each apply and refuses it
    while the schema has drifted, unless the live schema's hash is
    ``accepted_hash``.
    """

    interval_seconds: float | None = None
    policy: DriftPolicy = "Report"
    accepted_hash: str | None = None
    #: fnmatch patterns left out of the comparison (``revisor drift --ignore``).
    ignore: tuple[str, ...] = ()

    @property
    def blocks(self) -> bool:
        return self.policy == "Block"


@dataclass(frozen=True)
class MigrationSpec:
    database: Database
    source: Source
    target: str = DEFAULT_TARGET
    mode: Mode = "Apply"
    approval: Approval = field(default_factory=Approval)
    on_failure: OnFailure = "rollback"
    lock_timeout_seconds: int = DEFAULT_LOCK_TIMEOUT_SECONDS
    timeouts: Timeouts = field(default_factory=Timeouts)
    runner: Runner = field(default_factory=Runner)
    version_table: VersionTable = field(default_factory=VersionTable)
    rollback: Rollback = field(default_factory=Rollback)
    #: Refuse revisions whose downgrade() is missing, raises or is only pass.
    require_reversible: bool = False
    #: Run the scripts' own env.py (``--env-py``) instead of a hermetic run.
    env_py: bool = False
    #: ``MODULE:ATTR`` of the project's MetaData, for hermetic runs (``--metadata``).
    metadata: str | None = None
    #: The PostgreSQL schema this migration is confined to (``--schema``): the search_path,
    #: the version table's and revisor_history's schema, part of the lock's key.
    schema: str | None = None
    #: Schema drift checks (None: none run).
    drift: Drift | None = None
    #: A database without a version table is stamped at this revision first (``--baseline``).
    baseline: str | None = None

    @property
    def relative_target(self) -> bool:
        """A target relative to where the database is (-1, +2, rev+1): an action, not a state."""
        return bool(_RELATIVE.search(self.target))

    @property
    def plans_only(self) -> bool:
        """True when this spec asks for a plan rather than a change to the database."""
        return self.mode == "Plan" or (
            self.mode == "Apply" and self.approval.required and not self.approval.plan_hash
        )

    @property
    def job_deadline_seconds(self) -> int:
        """``runner.activeDeadlineSeconds`` wins over ``timeouts.job``; default 30 minutes."""
        if self.runner.active_deadline_seconds is not None:
            return self.runner.active_deadline_seconds
        if self.timeouts.job_seconds is not None:
            return min(max(int(self.timeouts.job_seconds), 1), MAX_JOB_SECONDS)
        return DEFAULT_JOB_TIMEOUT_SECONDS


__all__ = [
    "DURATION_PATTERN",
    "METADATA_PATTERN",
    "TARGET_PATTERN",
    "InvalidSpec",
    "MigrationSpec",
    "parse_spec",
]


def is_valid_target(target: str) -> bool:
    """Whether ``target`` is well-formed Alembic target syntax (not whether it exists)."""
    return bool(_TARGET.match(target))


def parse_spec(raw: Mapping[str, Any]) -> MigrationSpec:
    """The spec as data, or :class:`InvalidSpec` listing every problem found."""
    reader = _Reader()
    spec = reader.spec(raw)
    if reader.problems or spec is None:
        raise InvalidSpec(reader.problems)
    return spec


class _Reader:
    """Collects problems while reading, so that one apply shows all of them.

    :mod:`.fleet.spec` reads a DatabaseMigrationSet with it too (as :data:`FieldReader`).
    """

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def problem(
        self, where: str, message: str, fix: str, reason: str = OperatorReason.INVALID_SPEC
    ) -> None:
        self.problems.append(Problem(field=where, message=message, fix=fix, reason=reason))

    # -- primitives ------------------------------------------------------------------

    def mapping(self, raw: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.problem(
                where, f"must be an object, not {type(value).__name__}", "See kubectl explain"
            )
            return None
        return value

    def string(
        self, raw: Mapping[str, Any], key: str, where: str, *, required: bool = False
    ) -> str | None:
        value = raw.get(key)
        if value is None or value == "":
            if required:
                self.problem(where, "is required", f"Set {where}")
            return None
        if not isinstance(value, str):
            self.problem(where, f"must be a string, not {value!r}", f"Quote the value of {where}")
            return None
        return value

    def name(self, raw: Mapping[str, Any], key: str, where: str, *, what: str) -> str | None:
        value = self.string(raw, key, where, required=True)
        if value is not None and not _NAME.match(value):
            self.problem(
                where,
                f"{value!r} is not a valid {what} name",
                "Use lower-case letters, digits, '-' and '.', starting and ending alphanumeric",
            )
            return None
        return value

    def key(self, raw: Mapping[str, Any], key: str, where: str, *, default: str) -> str:
        value = self.string(raw, key, where) or default
        if not _KEY.match(value):
            self.problem(
                where, f"{value!r} is not a valid Secret key", "Use letters, digits, '-', '_', '.'"
            )
        return value

    def integer(
        self,
        raw: Mapping[str, Any],
        key: str,
        where: str,
        *,
        default: int | None,
        minimum: int,
        maximum: int | None = None,
    ) -> int | None:
        value = raw.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(where, f"must be a whole number, not {value!r}", f"Write {where}: 60")
            return default
        if value < minimum:
            self.problem(where, f"must be at least {minimum}, not {value}", f"Raise {where}")
            return default
        if maximum is not None and value > maximum:
            self.problem(where, f"must be at most {maximum}, not {value}", f"Lower {where}")
            return default
        return value

    def boolean(self, raw: Mapping[str, Any], key: str, where: str) -> bool:
        value = raw.get(key, False)
        if not isinstance(value, bool):
            self.problem(where, f"must be true or false, not {value!r}", f"Write {where}: true")
            return False
        return value

    def duration(self, raw: Mapping[str, Any], key: str, where: str) -> float | None:
        value = self.string(raw, key, where)
        if value is None:
            return None
        try:
            return parse_duration(value)
        except ValueError:
            self.problem(
                where,
                f"{value!r} is not a duration",
                "Write a number with a unit: 500ms, 30s, 10m, 1h30m",
            )
            return None

    def choice(self, raw: Mapping[str, Any], key: str, where: str, choices: Sequence[str]) -> str:
        value = raw.get(key)
        if value is None:
            return choices[0]
        if value not in choices:
            self.problem(
                where, f"{value!r} is not one of {', '.join(choices)}", "Pick one of those"
            )
            return choices[0]
        return str(value)

    # -- sections --------------------------------------------------------------------

    def spec(self, raw: Mapping[str, Any]) -> MigrationSpec | None:
        database = self.database(self.mapping(raw, "database", "spec.database"))
        source = self.source(self.mapping(raw, "source", "spec.source"))
        target = self.target(raw)
        mode = self.choice(raw, "mode", "spec.mode", MODES)
        on_failure = self.choice(raw, "onFailure", "spec.onFailure", tuple(ON_FAILURE))
        lock = self.mapping(raw, "lock", "spec.lock") or {}
        lock_timeout = self.integer(
            lock,
            "timeoutSeconds",
            "spec.lock.timeoutSeconds",
            default=DEFAULT_LOCK_TIMEOUT_SECONDS,
            minimum=0,
        )
        approval = self.approval(self.mapping(raw, "approval", "spec.approval") or {})
        timeouts = self.timeouts(self.mapping(raw, "timeouts", "spec.timeouts") or {})
        runner = self.runner(self.mapping(raw, "runner", "spec.runner") or {})
        table = self.version_table(self.mapping(raw, "versionTable", "spec.versionTable") or {})
        schema = self.schema(raw, table)
        rollback = self.rollback(self.mapping(raw, "rollback", "spec.rollback") or {})
        strict = self.boolean(raw, "requireReversible", "spec.requireReversible")
        env_py = self.boolean(
            self.mapping(raw, "source", "spec.source") or {}, "envPy", "spec.source.envPy"
        )
        drift = self.drift(self.mapping(raw, "drift", "spec.drift"))
        baseline = self.baseline(raw)
        metadata = self.string(raw, "metadata", "spec.metadata")
        if metadata is not None and not _METADATA.match(metadata):
            self.problem(
                "spec.metadata",
                f"{metadata!r} is not MODULE:ATTRIBUTE",
                "Write the import path of the project's MetaData, e.g. app.models:Base.metadata",
            )
            metadata = None
        if database is None or source is None:
            return None
        return MigrationSpec(
            database=database,
            source=source,
            target=target,
            mode=mode,  # type: ignore[arg-type]  # checked by choice()
            approval=approval,
            on_failure=ON_FAILURE[on_failure],
            lock_timeout_seconds=lock_timeout or 0,
            timeouts=timeouts,
            runner=runner,
            version_table=table,
            rollback=rollback,
            require_reversible=strict,
            env_py=env_py,
            metadata=metadata,
            schema=schema,
            drift=drift,
            baseline=baseline,
        )

    def target(self, raw: Mapping[str, Any]) -> str:
        value = raw.get("target", DEFAULT_TARGET)
        if not isinstance(value, str) or not is_valid_target(value):
            self.problem(
                "spec.target",
                f"{value!r} is not an Alembic target",
                TARGET_HELP,
                reason=Reason.INVALID_TARGET,
            )
            return DEFAULT_TARGET
        return value

    def database(self, raw: Mapping[str, Any] | None) -> Database | None:
        fix = "Set exactly one of spec.database.urlSecretRef {name, key} or spec.database.secretRef"
        if raw is None:
            self.problem("spec.database", "is required", fix)
            return None
        url = self.mapping(raw, "urlSecretRef", "spec.database.urlSecretRef")
        parts = self.mapping(raw, "secretRef", "spec.database.secretRef")
        if (url is None) == (parts is None):
            self.problem("spec.database", "needs exactly one of urlSecretRef or secretRef", fix)
            return None
        if url is not None:
            where = "spec.database.urlSecretRef"
            name = self.name(url, "name", f"{where}.name", what="Secret")
            key = self.key(url, "key", f"{where}.key", default="url")
            return UrlDatabase(url=SecretKey(secret=name, key=key)) if name else None
        assert parts is not None
        where = "spec.database.secretRef"
        name = self.name(parts, "name", f"{where}.name", what="Secret")
        keys = {
            part: self.key(parts, f"{field_}Key", f"{where}.{field_}Key", default=field_)
            for part, field_ in _PART_FIELDS.items()
        }
        driver = self.string(raw, "driver", "spec.database.driver")
        return PartsDatabase(secret=name, keys=keys, driver=driver) if name else None

    def source(self, raw: Mapping[str, Any] | None) -> Source | None:
        fix = "Set exactly one of spec.source.configMap {name} or spec.source.image {image, path}"
        if raw is None:
            self.problem("spec.source", "is required", fix)
            return None
        config_map = self.mapping(raw, "configMap", "spec.source.configMap")
        image = self.mapping(raw, "image", "spec.source.image")
        if (config_map is None) == (image is None):
            self.problem("spec.source", "needs exactly one of configMap or image", fix)
            return None
        if config_map is not None:
            name = self.name(config_map, "name", "spec.source.configMap.name", what="ConfigMap")
            return ConfigMapSource(name=name) if name else None
        assert image is not None
        ref = self.string(image, "image", "spec.source.image.image", required=True)
        path = self.string(image, "path", "spec.source.image.path") or "/migrations"
        if not path.startswith("/"):
            self.problem(
                "spec.source.image.path",
                f"{path!r} is not an absolute path",
                "Write the directory inside the image, e.g. /app/migrations",
            )
        policy = self.choice(
            image,
            "imagePullPolicy",
            "spec.source.image.imagePullPolicy",
            ("IfNotPresent", "Always", "Never"),
        )
        if ref is None:
            return None
        return ImageSource(image=ref, path=path, pull_policy=policy)  # type: ignore[arg-type]

    def approval(self, raw: Mapping[str, Any]) -> Approval:
        required = raw.get("required", False)
        if not isinstance(required, bool):
            self.problem(
                "spec.approval.required",
                f"must be true or false, not {required!r}",
                "Write required: true",
            )
            required = False
        plan_hash = self.string(raw, "planHash", "spec.approval.planHash")
        if plan_hash is not None and not _HEX.match(plan_hash):
            self.problem(
                "spec.approval.planHash",
                f"{plan_hash!r} is not a plan hash",
                "Copy status.plan.hash exactly (lower-case hex)",
            )
            plan_hash = None
        return Approval(required=required, plan_hash=plan_hash)

    def timeouts(self, raw: Mapping[str, Any]) -> Timeouts:
        retries = self.integer(
            raw,
            "ddlLockRetries",
            "spec.timeouts.ddlLockRetries",
            default=0,
            minimum=0,
            maximum=MAX_DDL_LOCK_RETRIES,
        )
        job = self.duration(raw, "job", "spec.timeouts.job")
        if job is not None and job > MAX_JOB_SECONDS:
            self.problem(
                "spec.timeouts.job",
                f"must be at most 24h, not {raw.get('job')}",
                "Lower spec.timeouts.job",
            )
        return Timeouts(
            statement_seconds=self.duration(raw, "statement", "spec.timeouts.statement"),
            ddl_lock_seconds=self.duration(raw, "ddlLock", "spec.timeouts.ddlLock"),
            ddl_lock_retries=retries or 0,
            job_seconds=job,
        )

    def runner(self, raw: Mapping[str, Any]) -> Runner:
        image = self.string(raw, "image", "spec.runner.image")
        policy = raw.get("imagePullPolicy")
        if policy is not None and policy not in PULL_POLICIES:
            self.problem(
                "spec.runner.imagePullPolicy",
                f"{policy!r} is not one of {', '.join(PULL_POLICIES)}",
                "Pick one of those",
            )
            policy = None
        account = None
        if raw.get("serviceAccountName"):
            account = self.name(
                raw, "serviceAccountName", "spec.runner.serviceAccountName", what="ServiceAccount"
            )
        resources = self.mapping(raw, "resources", "spec.runner.resources") or {}
        selector = self.mapping(raw, "nodeSelector", "spec.runner.nodeSelector") or {}
        if any(not isinstance(v, str) for v in selector.values()):
            self.problem(
                "spec.runner.nodeSelector", "values must be strings", 'Quote values such as "true"'
            )
        tolerations = raw.get("tolerations") or []
        if not isinstance(tolerations, list) or not all(
            isinstance(t, Mapping) for t in tolerations
        ):
            self.problem(
                "spec.runner.tolerations",
                "must be a list of tolerations",
                "See kubectl explain pod.spec.tolerations",
            )
            tolerations = []
        backoff = self.integer(
            raw,
            "backoffLimit",
            "spec.runner.backoffLimit",
            default=DEFAULT_BACKOFF_LIMIT,
            minimum=0,
            maximum=MAX_BACKOFF_LIMIT,
        )
        deadline = self.integer(
            raw,
            "activeDeadlineSeconds",
            "spec.runner.activeDeadlineSeconds",
            default=None,
            minimum=1,
            maximum=MAX_JOB_SECONDS,
        )
        return Runner(
            image=image,
            pull_policy=policy,
            service_account=account,
            resources=dict(resources),
            node_selector={str(k): str(v) for k, v in selector.items()},
            tolerations=tuple(dict(t) for t in tolerations),
            backoff_limit=DEFAULT_BACKOFF_LIMIT if backoff is None else backoff,
            active_deadline_seconds=deadline,
        )

    def schema(self, raw: Mapping[str, Any], table: VersionTable) -> str | None:
        value = self.string(raw, "schema", "spec.schema")
        if value is None:
            return None
        if len(value.encode()) > MAX_SCHEMA_BYTES or "\0" in value:
            self.problem(
                "spec.schema",
                f"{value[:80]!r} is not a PostgreSQL schema name",
                f"Use at most {MAX_SCHEMA_BYTES} bytes, without NUL characters",
            )
            return None
        if table.schema is not None and table.schema != value:
            self.problem(
                "spec.versionTable.schema",
                f"{table.schema!r} differs from spec.schema {value!r}",
                "Remove spec.versionTable.schema: with spec.schema the version table is in it",
            )
        return value

    def drift(self, raw: Mapping[str, Any] | None) -> Drift | None:
        if raw is None:
            return None
        interval = self.duration(raw, "interval", "spec.drift.interval")
        if interval is not None and interval < MIN_DRIFT_INTERVAL_SECONDS:
            self.problem(
                "spec.drift.interval",
                f"must be at least 1m, not {raw.get('interval')}",
                "Each check is a Job: check every few minutes or hours (1h), or leave "
                "interval out to check after each run only",
            )
            interval = None
        policy = self.choice(raw, "policy", "spec.drift.policy", DRIFT_POLICIES)
        accepted = self.string(raw, "acceptedHash", "spec.drift.acceptedHash")
        if accepted is not None and not _SCHEMA_HASH.match(accepted):
            self.problem(
                "spec.drift.acceptedHash",
                f"{accepted[:80]!r} is not a schema hash",
                "Copy status.drift.hash exactly (64 lower-case hex digits)",
            )
            accepted = None
        return Drift(
            interval_seconds=interval,
            policy=policy,  # type: ignore[arg-type]  # checked by choice()
            accepted_hash=accepted,
            ignore=self.patterns(raw.get("ignore"), "spec.drift.ignore"),
        )

    def patterns(self, raw: Any, where: str) -> tuple[str, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list) or len(raw) > MAX_DRIFT_IGNORE:
            self.problem(
                where,
                f"must be a list of at most {MAX_DRIFT_IGNORE} patterns",
                "Write patterns such as tmp_*, orders.legacy_* or ix_*",
            )
            return ()
        bad = [p for p in raw if not isinstance(p, str) or not p or len(p) > MAX_DRIFT_PATTERN]
        if bad:
            self.problem(
                where,
                f"{bad[0]!r} is not a pattern",
                f"Each pattern is a non-empty string of at most {MAX_DRIFT_PATTERN} characters",
            )
            return ()
        return tuple(raw)

    def baseline(self, raw: Mapping[str, Any]) -> str | None:
        value = self.string(raw, "baseline", "spec.baseline")
        if value is None:
            return None
        revision = value.split("@", 1)[0]
        if not _BASELINE.match(value) or revision == "base":
            self.problem(
                "spec.baseline",
                f"{value[:80]!r} is not a revision to adopt a database at",
                "Name the revision the existing schema matches: an id or a unique prefix of "
                "one, head, heads or branch@head (head for a database create_all() built from "
                "the current models)",
                reason=Reason.INVALID_TARGET,
            )
            return None
        return value

    def version_table(self, raw: Mapping[str, Any]) -> VersionTable:
        out: dict[str, str | None] = {}
        for key in ("name", "schema"):
            value = self.string(raw, key, f"spec.versionTable.{key}")
            if value is not None and not _SQL_NAME.match(value):
                self.problem(
                    f"spec.versionTable.{key}",
                    f"{value!r} is not a plain SQL identifier",
                    "Use letters, digits and '_' (at most 63), starting with a letter or '_'",
                )
                value = None
            out[key] = value
        return VersionTable(name=out["name"], schema=out["schema"])

    def rollback(self, raw: Mapping[str, Any]) -> Rollback:
        deployment = None
        ref = self.mapping(raw, "deploymentRef", "spec.rollback.deploymentRef")
        if ref is not None:
            deployment = self.name(
                ref, "name", "spec.rollback.deploymentRef.name", what="Deployment"
            )
        window = self.duration(raw, "window", "spec.rollback.window")
        return Rollback(
            deployment=deployment,
            window_seconds=window if window is not None else DEFAULT_ROLLBACK_WINDOW_SECONDS,
            allow_base=self.boolean(raw, "allowBase", "spec.rollback.allowBase"),
        )


# Connection part (ENV_DATABASE_PARTS key) -> the CRD field prefix naming its Secret key.
_PART_FIELDS = {
    "host": "host",
    "port": "port",
    "name": "database",
    "user": "user",
    "password": "password",
}


#: The reader of fields, for the other specs the operator parses (:mod:`.fleet.spec`).
FieldReader = _Reader
