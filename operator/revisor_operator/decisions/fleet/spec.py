"""Parse and check a ``DatabaseMigrationSet``'s spec, every problem at once.

As for :mod:`..spec` (whose reader this uses), the CRD refuses most mistakes
at ``kubectl apply``, and the operator checks everything again so that
status says which field is wrong and how to fix it. The template is checked
as the children will be: it is parsed as a ``DatabaseMigration`` spec with a
stand-in database, and its problems are reported under ``spec.template``.

Pure: no I/O.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeVar

from ..spec import (
    MAX_SCHEMA_BYTES,
    Database,
    FieldReader,
    InvalidSpec,
    MigrationSpec,
    PartsDatabase,
    Problem,
    SecretKey,
    UrlDatabase,
    parse_spec,
)

FailurePolicy = Literal["Halt", "Continue"]
FAILURE_POLICIES: tuple[FailurePolicy, ...] = ("Halt", "Continue")

DEFAULT_MAX_PARALLEL = 1
#: The most Jobs one wave of one set may run at once.
MAX_PARALLEL = 200
MAX_WAVES = 20
MAX_DATABASES = 10_000
MAX_SCHEMA_NAMES = 10_000
DEFAULT_SUCCESSFUL_JOBS_KEPT = 10
DEFAULT_FAILED_JOBS_KEPT = 20
MAX_JOBS_KEPT = 100
DEFAULT_QUERY_INTERVAL_SECONDS = 10 * 60.0
MIN_QUERY_INTERVAL_SECONDS = 30.0
MAX_QUERY_BYTES = 4096
MAX_TARGET_NAME = 253

#: Label keys: an optional DNS-subdomain prefix and a name of at most 63 characters.
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_LABEL_NAME})?$")
_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

#: The database the template is parsed with: the children each get their own.
_STAND_IN: Mapping[str, Any] = {"urlSecretRef": {"name": "stand-in", "key": "url"}}


@dataclass(frozen=True)
class Requirement:
    """One ``matchExpressions`` entry of a label selector."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def query(self) -> str:
        if self.operator == "Exists":
            return self.key
        if self.operator == "DoesNotExist":
            return f"!{self.key}"
        verb = "in" if self.operator == "In" else "notin"
        return f"{self.key} {verb} ({','.join(self.values)})"


@dataclass(frozen=True)
class Selector:
    """A Kubernetes label selector, as the API's ``labelSelector`` query takes it."""

    match_labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[Requirement, ...] = ()

    def query(self) -> str:
        """The ``labelSelector`` parameter: ``a=b,c in (d,e),!f``."""
        parts = [f"{k}={v}" for k, v in self.match_labels]
        parts += [r.query() for r in self.expressions]
        return ",".join(parts)


@dataclass(frozen=True)
class SecretSelectorTargets:
    """Every Secret of the namespace that ``selector`` matches is one database."""

    selector: Selector
    #: The key of the URL (as ``database.urlSecretRef.key``), when the Secrets hold URLs.
    url_key: str | None = "url"
    #: Connection part -> Secret key (as ``database.secretRef``), when they hold parts.
    parts: Mapping[str, str] | None = None
    driver: str | None = None

    def database(self, secret: str) -> Database:
        """The database of the Secret named ``secret``."""
        if self.parts is not None:
            return PartsDatabase(secret=secret, keys=dict(self.parts), driver=self.driver)
        return UrlDatabase(url=SecretKey(secret=secret, key=self.url_key or "url"))


@dataclass(frozen=True)
class ListedDatabase:
    name: str
    database: Database

    @property
    def secret(self) -> str:
        database = self.database
        return database.url.secret if isinstance(database, UrlDatabase) else database.secret


@dataclass(frozen=True)
class DatabaseListTargets:
    """Databases named one by one."""

    databases: tuple[ListedDatabase, ...]


@dataclass(frozen=True)
class SchemaTargets:
    """PostgreSQL schemas of one database: listed, or the answer of a read-only query."""

    database: Database
    names: tuple[str, ...] | None = None
    query: str | None = None
    query_interval_seconds: float = DEFAULT_QUERY_INTERVAL_SECONDS


Targets = SecretSelectorTargets | DatabaseListTargets | SchemaTargets


@dataclass(frozen=True)
class Wave:
    """One wave: the targets it chooses (by name, by their Secret's labels, or the rest)."""

    name: str
    #: Target names or fnmatch patterns (``tenant-a*``); None: not chosen by name.
    names: tuple[str, ...] | None = None
    selector: Selector | None = None
    max_parallel: int = DEFAULT_MAX_PARALLEL

    @property
    def is_rest(self) -> bool:
        """A wave that chooses nothing takes every target no other wave chooses."""
        return self.names is None and self.selector is None

    def chooses_name(self, target: str) -> bool:
        return self.names is not None and any(
            target == pattern or fnmatch.fnmatchcase(target, pattern) for pattern in self.names
        )


@dataclass(frozen=True)
class SetSpec:
    #: The template as stored: what each child's spec is made of.
    template: Mapping[str, Any]
    #: The template parsed as a child's spec (with a stand-in database).
    migration: MigrationSpec
    targets: Targets
    #: In order; the last may be an implicit "rest" wave (see :func:`parse_set_spec`).
    waves: tuple[Wave, ...]
    max_parallel: int = DEFAULT_MAX_PARALLEL
    failure_policy: FailurePolicy = "Halt"
    max_failures: int | None = None
    paused: bool = False
    successful_jobs_kept: int = DEFAULT_SUCCESSFUL_JOBS_KEPT
    failed_jobs_kept: int = DEFAULT_FAILED_JOBS_KEPT

    @property
    def selector_waves(self) -> dict[int, Selector]:
        """Waves that choose by label selector, by index: their Secrets are listed."""
        return {i: w.selector for i, w in enumerate(self.waves) if w.selector is not None}


def parse_set_spec(raw: Mapping[str, Any]) -> SetSpec:
    """The set's spec as data, or :class:`InvalidSpec` listing every problem.

    Targets that no wave chooses go to a last wave, ``rest`` (with
    ``spec.maxParallel``), unless a wave already takes the rest.
    """
    reader = _SetReader()
    spec = reader.set_spec(raw)
    if reader.problems or spec is None:
        raise InvalidSpec(reader.problems)
    return spec


_T = TypeVar("_T")


class _SetReader(FieldReader):
    def set_spec(self, raw: Mapping[str, Any]) -> SetSpec | None:
        targets = self.targets(self.mapping(raw, "targets", "spec.targets"))
        template_raw = self.mapping(raw, "template", "spec.template")
        migration = self.template(template_raw, targets)
        max_parallel = self.integer(
            raw,
            "maxParallel",
            "spec.maxParallel",
            default=DEFAULT_MAX_PARALLEL,
            minimum=1,
            maximum=MAX_PARALLEL,
        )
        default_parallel = max_parallel or DEFAULT_MAX_PARALLEL
        waves = self.waves(raw.get("waves"), default_parallel, targets)
        policy = self.choice(raw, "failurePolicy", "spec.failurePolicy", FAILURE_POLICIES)
        max_failures = self.integer(raw, "maxFailures", "spec.maxFailures", default=None, minimum=0)
        if max_failures is not None and policy != "Continue":
            self.problem(
                "spec.maxFailures",
                "applies only with failurePolicy Continue (Halt stops at the first failure)",
                "Set spec.failurePolicy: Continue, or remove spec.maxFailures",
            )
        kept = {
            key: self.integer(
                raw, key, f"spec.{key}", default=default, minimum=0, maximum=MAX_JOBS_KEPT
            )
            for key, default in (
                ("successfulJobsHistoryLimit", DEFAULT_SUCCESSFUL_JOBS_KEPT),
                ("failedJobsHistoryLimit", DEFAULT_FAILED_JOBS_KEPT),
            )
        }
        paused = self.boolean(raw, "paused", "spec.paused")
        if targets is None or migration is None or template_raw is None:
            return None
        return SetSpec(
            template=dict(template_raw),
            migration=migration,
            targets=targets,
            waves=waves,
            max_parallel=default_parallel,
            failure_policy=policy,  # type: ignore[arg-type]  # checked by choice()
            max_failures=max_failures,
            paused=paused,
            successful_jobs_kept=_or(kept["successfulJobsHistoryLimit"], 0),
            failed_jobs_kept=_or(kept["failedJobsHistoryLimit"], 0),
        )

    # -- the template ------------------------------------------------------------------

    def template(
        self, raw: Mapping[str, Any] | None, targets: Targets | None
    ) -> MigrationSpec | None:
        if raw is None:
            self.problem(
                "spec.template",
                "is required",
                "Write the DatabaseMigration spec every target gets, without database",
            )
            return None
        if "database" in raw:
            self.problem(
                "spec.template.database",
                "is not allowed: the targets name each database",
                "Remove spec.template.database; spec.targets says where each child migrates",
            )
        if "schema" in raw:
            self.problem(
                "spec.template.schema",
                "is not allowed: the set gives each child its schema",
                "Remove spec.template.schema; list schemas in spec.targets.schemas",
            )
        if isinstance(targets, SchemaTargets) and (raw.get("versionTable") or {}).get("schema"):
            self.problem(
                "spec.template.versionTable.schema",
                "is not allowed with spec.targets.schemas: each tenant keeps its version "
                "table in its own schema",
                "Remove spec.template.versionTable.schema",
            )
        try:
            return parse_spec({**raw, "database": _STAND_IN})
        except InvalidSpec as invalid:
            for problem in invalid.problems:
                self.problems.append(_moved(problem, "spec.", "spec.template."))
            return None

    # -- targets -------------------------------------------------------------------------

    def targets(self, raw: Mapping[str, Any] | None) -> Targets | None:
        fix = (
            "Set exactly one of spec.targets.secretSelector, spec.targets.databases or "
            "spec.targets.schemas"
        )
        if raw is None:
            self.problem("spec.targets", "is required", fix)
            return None
        chosen = [key for key in ("secretSelector", "databases", "schemas") if key in raw]
        if len(chosen) != 1:
            self.problem("spec.targets", "needs exactly one kind of target", fix)
            return None
        if chosen[0] == "secretSelector":
            return self.secret_selector(
                self.mapping(raw, "secretSelector", "spec.targets.secretSelector")
            )
        if chosen[0] == "databases":
            return self.database_list(raw.get("databases"))
        return self.schemas(self.mapping(raw, "schemas", "spec.targets.schemas"))

    def secret_selector(self, raw: Mapping[str, Any] | None) -> SecretSelectorTargets | None:
        where = "spec.targets.secretSelector"
        raw = raw or {}
        selector = self.selector(raw, where)
        if selector is not None and not selector.match_labels and not selector.expressions:
            self.problem(
                where,
                "selects every Secret of the namespace",
                f"Set {where}.matchLabels, e.g. {{revisor.dev/tenant: 'true'}}",
            )
        parts_raw = self.mapping(raw, "secretRef", f"{where}.secretRef")
        if parts_raw is not None and "urlKey" in raw:
            self.problem(
                where,
                "has both urlKey and secretRef",
                "The Secrets hold a URL (urlKey) or its parts (secretRef): keep one",
            )
        driver = self.string(raw, "driver", f"{where}.driver")
        if parts_raw is not None:
            parts = {
                part: self.key(
                    parts_raw, f"{field}Key", f"{where}.secretRef.{field}Key", default=field
                )
                for part, field in _PART_FIELDS.items()
            }
            return (
                SecretSelectorTargets(selector=selector, url_key=None, parts=parts, driver=driver)
                if selector
                else None
            )
        url_key = self.key(raw, "urlKey", f"{where}.urlKey", default="url")
        return SecretSelectorTargets(selector=selector, url_key=url_key) if selector else None

    def database_list(self, raw: Any) -> DatabaseListTargets | None:
        where = "spec.targets.databases"
        if not isinstance(raw, list) or not raw:
            self.problem(
                where, "must be a list of databases", "List at least one {name, urlSecretRef}"
            )
            return None
        if len(raw) > MAX_DATABASES:
            self.problem(
                where,
                f"lists {len(raw)} databases, more than {MAX_DATABASES}",
                "Select them by label with spec.targets.secretSelector",
            )
            return None
        out: list[ListedDatabase] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(raw):
            at = f"{where}[{i}]"
            if not isinstance(item, Mapping):
                self.problem(at, "must be an object", "Write {name, urlSecretRef: {name, key}}")
                continue
            database = self._relocated("spec.database", at, partial(self.database, item))
            if database is None:
                continue
            secret = database.url.secret if isinstance(database, UrlDatabase) else database.secret
            name = self.string(item, "name", f"{at}.name") or secret
            if not self.target_name(name, f"{at}.name"):
                continue
            if name in seen:
                self.problem(
                    f"{at}.name",
                    f"{name!r} is also {where}[{seen[name]}]",
                    "Give each database its own name",
                )
                continue
            seen[name] = i
            out.append(ListedDatabase(name=name, database=database))
        return DatabaseListTargets(databases=tuple(out))

    def schemas(self, raw: Mapping[str, Any] | None) -> SchemaTargets | None:
        where = "spec.targets.schemas"
        raw = raw or {}
        database_raw = self.mapping(raw, "database", f"{where}.database")
        database = self._relocated(
            "spec.database", f"{where}.database", partial(self.database, database_raw)
        )
        has_names, has_query = "names" in raw, "query" in raw
        if has_names == has_query:
            self.problem(
                where,
                "needs exactly one of names or query",
                "List the schemas in names, or give a query that returns them",
            )
            return None
        interval = self.duration(raw, "queryInterval", f"{where}.queryInterval")
        if interval is not None and interval < MIN_QUERY_INTERVAL_SECONDS:
            self.problem(
                f"{where}.queryInterval",
                f"must be at least {MIN_QUERY_INTERVAL_SECONDS:g}s",
                "Raise it: each run of the query is a Job",
            )
            interval = None
        names: tuple[str, ...] | None = None
        query: str | None = None
        if has_names:
            names = self.schema_names(raw.get("names"), f"{where}.names")
        else:
            query = self.string(raw, "query", f"{where}.query", required=True)
            if query is not None and len(query.encode()) > MAX_QUERY_BYTES:
                self.problem(
                    f"{where}.query",
                    f"is longer than {MAX_QUERY_BYTES} bytes",
                    "Shorten it, e.g. with a view that returns the schema names",
                )
                query = None
            if query is None:
                return None
        if database is None or (names is None and query is None):
            return None
        return SchemaTargets(
            database=database,
            names=names,
            query=query,
            query_interval_seconds=interval or DEFAULT_QUERY_INTERVAL_SECONDS,
        )

    def schema_names(self, raw: Any, where: str) -> tuple[str, ...] | None:
        if not isinstance(raw, list) or not raw:
            self.problem(where, "must be a list of schema names", "List at least one schema")
            return None
        if len(raw) > MAX_SCHEMA_NAMES:
            self.problem(
                where,
                f"lists {len(raw)} schemas, more than {MAX_SCHEMA_NAMES}",
                "Use spec.targets.schemas.query instead",
            )
            return None
        out: list[str] = []
        for i, name in enumerate(raw):
            problem = schema_name_problem(name) if isinstance(name, str) else "is not a string"
            if problem is not None or not isinstance(name, str):
                self.problem(
                    f"{where}[{i}]",
                    f"{str(name)[:80]!r} {problem}",
                    f"Use at most {MAX_SCHEMA_BYTES} bytes, without NUL characters",
                )
                continue
            if name in out:
                self.problem(f"{where}[{i}]", f"{name!r} is listed twice", "List each schema once")
                continue
            out.append(name)
        return tuple(out)

    def target_name(self, name: str, where: str) -> bool:
        if len(name) > MAX_TARGET_NAME or "\0" in name:
            self.problem(
                where,
                f"{name[:80]!r} is not a target name",
                f"Use at most {MAX_TARGET_NAME} characters",
            )
            return False
        return True

    # -- waves ---------------------------------------------------------------------------

    def waves(self, raw: Any, default_parallel: int, targets: Targets | None) -> tuple[Wave, ...]:
        where = "spec.waves"
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            self.problem(where, "must be a list of waves", "Write - {name: canary, targets: [a]}")
            return (Wave(name="rest", max_parallel=default_parallel),)
        if len(raw) > MAX_WAVES:
            self.problem(
                where,
                f"has {len(raw)} waves, more than {MAX_WAVES}",
                "Merge waves, or choose them by label",
            )
        out: list[Wave] = []
        for i, item in enumerate(raw[:MAX_WAVES]):
            wave = self.wave(item, f"{where}[{i}]", i, default_parallel, targets)
            if wave is None:
                continue
            if any(w.name == wave.name for w in out):
                self.problem(
                    f"{where}[{i}].name", f"{wave.name!r} names two waves", "Name each wave once"
                )
            out.append(wave)
        rests = [w.name for w in out if w.is_rest]
        if len(rests) > 1:
            self.problem(
                where,
                f"waves {', '.join(rests)} both take the rest",
                "Give all but one of them targets or a selector",
            )
        if not rests:
            taken = {w.name for w in out}
            name = next(
                n for n in ("rest", *(f"rest-{k}" for k in range(2, 100))) if n not in taken
            )
            out.append(Wave(name=name, max_parallel=default_parallel))
        return tuple(out)

    def wave(
        self, item: Any, at: str, index: int, default_parallel: int, targets: Targets | None
    ) -> Wave | None:
        if not isinstance(item, Mapping):
            self.problem(at, "must be an object", "Write {name, targets, maxParallel}")
            return None
        name = self.string(item, "name", f"{at}.name") or f"wave-{index + 1}"
        if len(name) > 63:
            self.problem(f"{at}.name", "is longer than 63 characters", "Shorten it")
        names: tuple[str, ...] | None = None
        if "targets" in item:
            names = self.wave_names(item.get("targets"), f"{at}.targets")
        selector = None
        if "selector" in item:
            selector = self.selector(
                self.mapping(item, "selector", f"{at}.selector") or {}, f"{at}.selector"
            )
            if isinstance(targets, SchemaTargets):
                self.problem(
                    f"{at}.selector",
                    "cannot choose schemas: they have no Secret of their own",
                    f"Choose them by name in {at}.targets",
                )
        if names is not None and selector is not None:
            self.problem(
                at, "has both targets and selector", "Choose by name or by label, not both"
            )
        parallel = self.integer(
            item,
            "maxParallel",
            f"{at}.maxParallel",
            default=default_parallel,
            minimum=1,
            maximum=MAX_PARALLEL,
        )
        return Wave(
            name=name, names=names, selector=selector, max_parallel=parallel or default_parallel
        )

    def wave_names(self, raw: Any, where: str) -> tuple[str, ...] | None:
        if not isinstance(raw, list) or not raw or not all(isinstance(n, str) and n for n in raw):
            self.problem(
                where,
                "must be a list of target names",
                "List target names or patterns such as tenant-a*",
            )
            return None
        return tuple(raw)

    # -- label selectors -----------------------------------------------------------------

    def selector(self, raw: Mapping[str, Any], where: str) -> Selector | None:
        labels = self.mapping(raw, "matchLabels", f"{where}.matchLabels") or {}
        pairs: list[tuple[str, str]] = []
        for key, value in sorted(labels.items()):
            if not self.label(
                key, str(value) if isinstance(value, str) else None, f"{where}.matchLabels.{key}"
            ):
                continue
            pairs.append((key, value))
        expressions: list[Requirement] = []
        raw_expressions = raw.get("matchExpressions") or []
        if not isinstance(raw_expressions, list):
            self.problem(
                f"{where}.matchExpressions",
                "must be a list",
                "Write - {key: tier, operator: In, values: [early]}",
            )
            raw_expressions = []
        for i, item in enumerate(raw_expressions):
            at = f"{where}.matchExpressions[{i}]"
            if not isinstance(item, Mapping):
                self.problem(at, "must be an object", "Write {key, operator, values}")
                continue
            key = self.string(item, "key", f"{at}.key", required=True) or ""
            operator = self.choice(item, "operator", f"{at}.operator", _OPERATORS)
            values = item.get("values") or []
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                self.problem(f"{at}.values", "must be a list of strings", "Quote each value")
                continue
            if operator in ("In", "NotIn") and not values:
                self.problem(f"{at}.values", f"must not be empty with {operator}", "List values")
            if operator in ("Exists", "DoesNotExist") and values:
                self.problem(f"{at}.values", f"must be empty with {operator}", "Remove values")
            if not all(self.label(key, v, at) for v in values or [""]):
                continue
            expressions.append(Requirement(key=key, operator=operator, values=tuple(values)))
        return Selector(match_labels=tuple(pairs), expressions=tuple(expressions))

    def label(self, key: str, value: str | None, where: str) -> bool:
        if not _LABEL_KEY.match(key):
            self.problem(
                where,
                f"{key!r} is not a label key",
                "Use [prefix/]name, the name at most 63 letters, digits, '-', '_', '.'",
            )
            return False
        if value is None or not _LABEL_VALUE.match(value):
            self.problem(
                where,
                f"{value!r} is not a label value",
                "Use at most 63 letters, digits, '-', '_', '.', starting and ending alphanumeric",
            )
            return False
        return True

    def _relocated(self, old: str, new: str, read: Callable[[], _T]) -> _T:
        """``read()``, its problems reported under ``new`` instead of ``old``."""
        before = len(self.problems)
        value = read()
        self.problems[before:] = [_moved(p, old, new) for p in self.problems[before:]]
        return value


def schema_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a PostgreSQL schema (None: it can)."""
    if not name:
        return "is empty"
    if "\0" in name:
        return "contains a NUL character"
    if len(name.encode()) > MAX_SCHEMA_BYTES:
        return f"is longer than {MAX_SCHEMA_BYTES} bytes"
    return None


def _moved(problem: Problem, old: str, new: str) -> Problem:
    """``problem`` with the field path prefix ``old`` (in its words too) replaced by ``new``."""
    return Problem(
        field=new + problem.field.removeprefix(old)
        if problem.field.startswith(old)
        else problem.field,
        message=problem.message.replace(old, new),
        fix=problem.fix.replace(old, new),
        reason=problem.reason,
    )


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


# Connection part -> the CRD field prefix naming its Secret key (as in ..spec).
_PART_FIELDS = {
    "host": "host",
    "port": "port",
    "name": "database",
    "user": "user",
    "password": "password",
}
